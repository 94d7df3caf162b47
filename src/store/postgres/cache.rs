//! The embedding cache on PostgreSQL: vectors by (model id, SHA-256 of the text), in goldset's
//! own table — beside goldset's tables or an application's alike.

use super::super::{blob_to_vector, vector_to_blob, ContentDigest, Result};
use postgres::GenericClient;
use std::collections::{HashMap, HashSet};

/// The cached vectors of `model` for `digests`, in order (`None` where nothing of `dimension`
/// values is cached).
pub(super) fn lookup(
    client: &mut impl GenericClient,
    table: &str,
    model: &str,
    dimension: usize,
    digests: &[ContentDigest],
) -> Result<Vec<Option<Vec<f32>>>> {
    let keys: Vec<&[u8]> = digests.iter().map(|d| &d[..]).collect();
    let rows = client.query(
        &format!(
            "SELECT content_sha256, embedding FROM {table} WHERE model = $1 AND content_sha256 = ANY($2)"
        ),
        &[&model, &keys],
    )?;
    let found: HashMap<Vec<u8>, Vec<u8>> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(digests
        .iter()
        .map(|d| {
            found
                .get(&d[..])
                .filter(|b| b.len() == dimension * 4)
                .map(|b| blob_to_vector(b))
        })
        .collect())
}

/// Adds vectors to the cache, replacing entries of the same key.
pub(super) fn store(
    client: &mut impl GenericClient,
    table: &str,
    model: &str,
    entries: &[(ContentDigest, &[f32])],
) -> Result<()> {
    // ON CONFLICT may touch a row once per statement: one entry per digest.
    let mut seen = HashSet::new();
    let (keys, blobs): (Vec<&[u8]>, Vec<Vec<u8>>) = entries
        .iter()
        .filter(|(d, _)| seen.insert(*d))
        .map(|(d, v)| (&d[..], vector_to_blob(v)))
        .unzip();
    client.execute(
        &format!(
            "INSERT INTO {table} (model, content_sha256, embedding)
             SELECT $1, d, e FROM unnest($2::bytea[], $3::bytea[]) AS u (d, e)
             ON CONFLICT (model, content_sha256) DO UPDATE SET embedding = EXCLUDED.embedding"
        ),
        &[&model, &keys, &blobs],
    )?;
    Ok(())
}

/// The length of one cached vector of `model`, if the cache holds any.
pub(super) fn dimension(
    client: &mut impl GenericClient,
    table: &str,
    model: &str,
) -> Result<Option<usize>> {
    Ok(client
        .query_opt(
            &format!("SELECT octet_length(embedding) / 4 FROM {table} WHERE model = $1 LIMIT 1"),
            &[&model],
        )?
        .map(|r| r.get::<_, i32>(0) as usize))
}
