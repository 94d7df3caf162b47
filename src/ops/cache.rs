//! `goldset cache`: what the embedding cache holds, and pruning it.
//!
//! The cache keeps every vector a model computed during a restore or reembed, keyed by model id
//! and the SHA-256 of the text, so that restoring the same text again costs a lookup. Texts that
//! were edited or deleted, and models no longer used, leave entries behind that nothing will
//! read again; pruning removes exactly those: the entries whose (model, text) pair no chunk in
//! the database has. What is left is what restoring the database's own backup would look up.

use super::OpError;
use crate::store::{CacheUsage, Compaction, Store};
use std::time::{Duration, Instant};

/// What the embedding cache holds, and what a prune removed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheSummary {
    /// Per model and dimension, after any prune.
    pub models: Vec<CacheUsage>,
    /// Entries and bytes removed (`None` when nothing was asked to be removed).
    pub removed: Option<Removed>,
    /// The database file compacted after removing entries (SQLite only).
    pub compacted: Option<Compaction>,
    /// Time taken.
    #[serde(serialize_with = "crate::ops::serialize_seconds")]
    pub elapsed: Duration,
}

/// Entries removed from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    /// Entries.
    pub entries: u64,
    /// Bytes of vectors.
    pub bytes: u64,
}

impl CacheSummary {
    /// Entries left.
    pub fn entries(&self) -> u64 {
        self.models.iter().map(|m| m.entries).sum()
    }

    /// Bytes of vectors left.
    pub fn bytes(&self) -> u64 {
        self.models.iter().map(|m| m.bytes).sum()
    }

    /// Entries left that no chunk uses.
    pub fn unused(&self) -> u64 {
        self.models.iter().map(|m| m.unused).sum()
    }
}

/// What to do with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheAction {
    /// Only report.
    Report,
    /// Remove the entries no chunk uses.
    Prune,
    /// Remove every entry.
    Clear,
}

/// Reports on the embedding cache of `store`, first pruning or clearing it (in one transaction,
/// under the restore lock) if asked; after removing entries, gives their space back to the file
/// system where the store would keep it ([`Store::reclaim_space`]).
pub fn cache(store: &mut dyn Store, action: CacheAction) -> Result<CacheSummary, OpError> {
    let started = Instant::now();
    let (removed, compacted) = match action {
        CacheAction::Report => (None, None),
        CacheAction::Prune | CacheAction::Clear => {
            let mut tx = store.begin()?;
            let (entries, bytes) = tx.prune_embedding_cache(action == CacheAction::Clear)?;
            tx.commit()?;
            let compacted = if entries > 0 {
                store.reclaim_space().map_err(|e| {
                    OpError::Refused(format!(
                        "removed {entries} cache entries, but compacting {} failed: {e}",
                        store.location()
                    ))
                })?
            } else {
                None
            };
            (Some(Removed { entries, bytes }), compacted)
        }
    };
    let models = store.snapshot()?.embedding_cache()?;
    Ok(CacheSummary {
        models,
        removed,
        compacted,
        elapsed: started.elapsed(),
    })
}
