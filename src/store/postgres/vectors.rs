//! Streaming the stored embeddings for `eval`'s exact search (through a portal, a page at a
//! time, decoded into one reused block), and the database's own nearest-neighbour search for
//! `eval --search index`. Statements are built from the
//! [`Layout`](super::super::layout::Layout), so an application's tables are read alike.

use super::super::layout::{quote_name as q, EmbeddingEncoding};
use super::super::{EmbeddingVisitor, Result, StoreError, EMBEDDING_BLOCK};
use super::decode::RowReader;
use super::read::Reading;
use postgres::Transaction;
use uuid::Uuid;

/// Calls `visit` with blocks of (chunk ids, vectors) of the embeddings `model` made with
/// `dimension` values.
pub(super) fn for_each_embedding(
    tx: &mut Transaction<'_>,
    r: &Reading<'_>,
    model: &str,
    dimension: usize,
    visit: &mut EmbeddingVisitor<'_>,
) -> Result<()> {
    let c = &r.layout.chunks;
    let (found, join) = r.model();
    let e = format!("c.{}", q(&c.embedding));
    let value = match r.layout.embedding {
        EmbeddingEncoding::Vector | EmbeddingEncoding::F32Le => e.clone(),
        EmbeddingEncoding::RealArray => format!("{e}::real[]"),
        EmbeddingEncoding::Json => format!("({e})::text"),
    };
    let sql = format!(
        "SELECT c.{id}, {value} FROM {table} c {join}
          WHERE {e} IS NOT NULL AND {found} = $1 AND {dims} = $2",
        id = q(&c.id),
        table = q(&c.table),
        dims = r.dimension(),
    );
    let portal = tx.bind(&sql, &[&model, &(dimension as i32)])?;
    let mut ids = Vec::with_capacity(EMBEDDING_BLOCK);
    let mut values: Vec<f32> = Vec::with_capacity(EMBEDDING_BLOCK * dimension);
    loop {
        let rows = tx.query_portal(&portal, EMBEDDING_BLOCK as i32)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let reader = RowReader::new(row, &c.table, r.layout);
            let id = reader.uuid(0)?;
            let before = values.len();
            match r.layout.embedding {
                EmbeddingEncoding::Vector => {
                    let v: pgvector::Vector = reader.required(1)?;
                    values.extend_from_slice(v.as_slice());
                }
                EmbeddingEncoding::RealArray => {
                    let v: Vec<Option<f32>> = reader.required(1)?;
                    for x in v {
                        values
                            .push(x.ok_or_else(|| reader.bad(1, "a NULL value in the embedding"))?);
                    }
                }
                EmbeddingEncoding::F32Le => {
                    let bytes: &[u8] = reader.required(1)?;
                    values.extend(
                        bytes
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    );
                }
                EmbeddingEncoding::Json => {
                    let text: &str = reader.required(1)?;
                    let v: Vec<f32> = serde_json::from_str(text)
                        .map_err(|e| reader.bad(1, format!("not a JSON array of numbers: {e}")))?;
                    values.extend(v);
                }
            }
            if values.len() - before != dimension {
                return Err(reader.bad(
                    1,
                    format!("{} values, expected {dimension}", values.len() - before),
                ));
            }
            ids.push(id);
        }
        if ids.len() >= EMBEDDING_BLOCK {
            visit(&ids, &values)?;
            ids.clear();
            values.clear();
        }
    }
    if !ids.is_empty() {
        visit(&ids, &values)?;
    }
    Ok(())
}

/// The `depth` chunks nearest to `query` by cosine distance, as the database's planner finds
/// them (an HNSW or IVFFlat index on `vector_cosine_ops` when there is one, else a scan).
pub(super) fn nearest(
    tx: &mut Transaction<'_>,
    r: &Reading<'_>,
    query: &[f32],
    depth: usize,
) -> Result<Vec<(Uuid, f64)>> {
    let c = &r.layout.chunks;
    if r.layout.embedding != EmbeddingEncoding::Vector {
        return Err(StoreError::Refused(format!(
            "{}.{} is not a pgvector `vector` column: there is no vector index to search (use --search exact)",
            c.table, c.embedding
        )));
    }
    let rows = tx.query(
        &format!(
            "SELECT c.{id}, (c.{e} <=> $1)::float8 FROM {table} c
              WHERE c.{e} IS NOT NULL ORDER BY c.{e} <=> $1 LIMIT $2",
            id = q(&c.id),
            e = q(&c.embedding),
            table = q(&c.table),
        ),
        &[&pgvector::Vector::from(query.to_vec()), &(depth as i64)],
    )?;
    let mut hits = Vec::with_capacity(rows.len());
    for row in &rows {
        let reader = RowReader::new(row, &c.table, r.layout);
        let distance: Option<f64> = reader.get(1)?;
        // A zero vector has no cosine distance (NaN or NULL): similarity 0, as exact search.
        let similarity = distance.filter(|d| d.is_finite()).map_or(0.0, |d| 1.0 - d);
        hits.push((reader.uuid(0)?, similarity));
    }
    Ok(hits)
}
