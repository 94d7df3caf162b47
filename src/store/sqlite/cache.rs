//! The embedding cache on SQLite: vectors by (model id, SHA-256 of the text), in goldset's own
//! table — `embedding_cache` beside goldset's tables, `goldset_embedding_cache` beside an
//! application's.

use super::super::{blob_to_vector, vector_to_blob, ContentDigest, Result};
use rusqlite::{params, Connection, OptionalExtension};

/// The cached vectors of `model` for `digests`, in order (`None` where nothing of `dimension`
/// values is cached).
pub(super) fn lookup(
    conn: &Connection,
    table: &str,
    model: &str,
    dimension: usize,
    digests: &[ContentDigest],
) -> Result<Vec<Option<Vec<f32>>>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT embedding FROM {table} WHERE model = ?1 AND content_sha256 = ?2"
    ))?;
    digests
        .iter()
        .map(|d| {
            let blob: Option<Vec<u8>> = stmt
                .query_row(params![model, &d[..]], |r| r.get(0))
                .optional()?;
            Ok(blob
                .filter(|b| b.len() == dimension * 4)
                .map(|b| blob_to_vector(&b)))
        })
        .collect()
}

/// Adds vectors to the cache, replacing entries of the same key.
pub(super) fn store(
    conn: &Connection,
    table: &str,
    model: &str,
    entries: &[(ContentDigest, &[f32])],
) -> Result<()> {
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {table} (model, content_sha256, embedding) VALUES (?1, ?2, ?3)"
    ))?;
    for (digest, vector) in entries {
        stmt.execute(params![model, &digest[..], vector_to_blob(vector)])?;
    }
    Ok(())
}

/// The length of one cached vector of `model`, if the cache holds any.
pub(super) fn dimension(conn: &Connection, table: &str, model: &str) -> Result<Option<usize>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT length(embedding) / 4 FROM {table} WHERE model = ?1 LIMIT 1"
        ))?
        .query_row(params![model], |r| r.get::<_, i64>(0))
        .optional()?
        .map(|d| d as usize))
}
