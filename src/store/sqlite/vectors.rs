//! Streaming the stored embeddings for `eval`'s exact search: one statement built from the
//! [`Layout`](super::super::layout::Layout) (goldset's tables or an application's), decoded a
//! block at a time into one reused buffer.

use super::super::layout::{quote_name as q, EmbeddingEncoding};
use super::super::{EmbeddingVisitor, Result, EMBEDDING_BLOCK};
use super::decode::RowReader;
use super::read::Reading;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection};

/// Calls `visit` with blocks of (chunk ids, vectors) of the embeddings `model` made with
/// `dimension` values.
pub(super) fn for_each_embedding(
    conn: &Connection,
    r: Reading<'_>,
    model: &str,
    dimension: usize,
    visit: &mut EmbeddingVisitor<'_>,
) -> Result<()> {
    let c = &r.layout.chunks;
    let (found, join) = r.model();
    let mut stmt = conn.prepare(&format!(
        "SELECT c.{id}, c.{e} FROM {table} c {join}
          WHERE c.{e} IS NOT NULL AND {found} = ?1 AND {dims} = ?2",
        id = q(&c.id),
        e = q(&c.embedding),
        table = q(&c.table),
        dims = r.dimension(),
    ))?;
    let mut rows = stmt.query(params![model, dimension as i64])?;
    let mut ids = Vec::with_capacity(EMBEDDING_BLOCK);
    let mut values: Vec<f32> = Vec::with_capacity(EMBEDDING_BLOCK * dimension);
    while let Some(row) = rows.next()? {
        let reader = RowReader::new(row, &c.table, r.layout);
        let id = reader.uuid(0)?;
        let before = values.len();
        match (row.get_ref(1)?, r.layout.embedding) {
            (ValueRef::Blob(bytes), EmbeddingEncoding::F32Le) if bytes.len() == dimension * 4 => {
                values.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
            (ValueRef::Text(text), EmbeddingEncoding::Json) => {
                let v: Vec<f32> = serde_json::from_slice(text).map_err(|e| {
                    reader.bad_column(1, format!("not a JSON array of numbers: {e}"))
                })?;
                values.extend(v);
            }
            (other, _) => {
                return Err(reader.bad_column(
                    1,
                    format!(
                        "an embedding of {dimension} values was expected, found {:?}",
                        other.data_type()
                    ),
                ))
            }
        }
        if values.len() - before != dimension {
            return Err(reader.bad_column(
                1,
                format!("{} values, expected {dimension}", values.len() - before),
            ));
        }
        ids.push(id);
        if ids.len() == EMBEDDING_BLOCK {
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
