//! Where stored embeddings came from: the SHA-256 recorded for each embedding (goldset's own
//! column, or its record beside an application's chunks) against the chunk's current text.

use super::super::layout::quote_name as q;
use super::super::{Provenance, Result};
use super::read::Reading;
use postgres::GenericClient;
use uuid::Uuid;

impl Reading<'_> {
    /// The SHA-256 recorded for chunk `c`'s embedding (of the text it was made from), and the
    /// join that provides it: goldset's own column, or its record beside an application's
    /// chunks (whatever text the record was made for).
    fn recorded_digest(&self) -> (String, String) {
        let c = &self.layout.chunks;
        if self.layout.owned {
            return ("c.embedding_sha256".into(), String::new());
        }
        if self.model_table {
            return (
                "p.content_sha256".into(),
                format!(
                    "LEFT JOIN {} p ON p.chunk_id = c.{}::text",
                    self.names.embeddings,
                    q(&c.id)
                ),
            );
        }
        ("NULL::bytea".into(), String::new())
    }
}

/// Stale chunks and chunks of unknown provenance (see [`ReadSnapshot::embedding_provenance`]).
pub(super) fn embedding_provenance(
    client: &mut impl GenericClient,
    r: &Reading<'_>,
    limit: Option<usize>,
) -> Result<Provenance> {
    let (digest, join) = r.recorded_digest();
    let c = &r.layout.chunks;
    let from = format!(
        "FROM {table} c {join}
          WHERE c.{emb} IS NOT NULL AND {digest} IS DISTINCT FROM sha256(convert_to(c.{content}, 'UTF8'))",
        table = q(&c.table),
        emb = q(&c.embedding),
        content = q(&c.content),
    );
    let counts = client.query_one(
        &format!(
            "SELECT count(*) FILTER (WHERE {digest} IS NOT NULL), count(*) FILTER (WHERE {digest} IS NULL) {from}"
        ),
        &[],
    )?;
    let mut query = |condition: &str, n: Option<i64>| -> Result<Vec<String>> {
        Ok(client
            .query(
                &format!(
                    "SELECT c.{}::text {from} AND {digest} IS {condition} ORDER BY c.{} LIMIT $1",
                    q(&c.id),
                    q(&c.id)
                ),
                &[&n],
            )?
            .iter()
            .map(|row| chunk_id(row.get(0)))
            .collect())
    };
    let stale = counts.get::<_, i64>(0) as u64;
    let unknown = counts.get::<_, i64>(1) as u64;
    Ok(Provenance {
        stale,
        stale_ids: if stale > 0 {
            query("NOT NULL", limit.map(|n| n as i64))?
        } else {
            Vec::new()
        },
        unknown,
        unknown_ids: if unknown > 0 {
            query("NULL", Some(crate::report::EXAMPLES_PER_CHECK as i64))?
        } else {
            Vec::new()
        },
    })
}

/// A chunk id as goldset writes it (hyphenated), whatever form the column keeps it in; as
/// stored when it is no UUID.
pub(super) fn chunk_id(stored: String) -> String {
    match Uuid::try_parse(stored.trim()) {
        Ok(id) => id.to_string(),
        Err(_) => stored,
    }
}
