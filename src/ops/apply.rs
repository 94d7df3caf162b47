//! `restore --replace` by difference, for stores that must not churn (an application's tables):
//! each batch of the file is compared with the stored analyses of the same ids; equal ones are
//! left alone (same rows, same embeddings, no index work), changed ones are patched — only the
//! chunks that changed are rewritten, and only those whose text changed are embedded again —,
//! new ones go through the ordinary insert path, and at the end the stored analyses the file no
//! longer has are deleted. The work is in proportion to the change, not to the dataset.

use super::embedding;
use super::OpError;
use crate::embed::Embedder;
use crate::model::{Analysis, Chunk, Counts, Finding};
use crate::store::{Patch, RecordKind, WriteTransaction};
use std::collections::HashMap;
use uuid::Uuid;

/// What applying the difference did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DifferenceTally {
    /// Analyses already stored exactly as in the file: untouched.
    pub unchanged: u64,
    /// Analyses patched in place.
    pub changed: u64,
    /// Chunks rewritten within changed analyses.
    pub chunks_rewritten: u64,
    /// Rewritten chunks that kept their stored embedding (same text: moved, or another field
    /// changed).
    pub vectors_kept: u64,
    /// Rewritten chunks the model embedded.
    pub embedded: u64,
    /// Rewritten chunks whose vector came from the embedding cache.
    pub from_cache: u64,
    /// What was deleted because the file no longer has it.
    pub deleted: Counts,
}

/// Whether two lists of findings are the same, an empty metadata object and none counting
/// alike.
fn same_findings(a: &[Finding], b: &[Finding]) -> bool {
    let plain = |f: &Finding| {
        let mut f = f.clone();
        f.metadata = f.metadata.filter(|m| !m.is_empty());
        f
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| plain(x) == plain(y))
}

/// How `new` differs from `old` (same id), as a patch; `None` when they are equal.
fn patch<'a>(old: &Analysis, new: &'a Analysis) -> Option<Patch<'a>> {
    if old == new {
        return None;
    }
    // A findings table keeps no difference between `{}` and no metadata (README): compared
    // alike, so such a finding is not rewritten on every restore.
    let findings = !same_findings(&old.findings, &new.findings);
    let row = findings
        || old.url != new.url
        || old.content_type != new.content_type
        || old.status != new.status
        || old.created_at != new.created_at;
    let stored: HashMap<Uuid, &Chunk> = old.chunks.iter().map(|c| (c.id, c)).collect();
    let mut remove_chunks = Vec::new();
    let mut add_chunks = Vec::new();
    let mut update_chunks = Vec::new();
    let mut moved_chunks = Vec::new();
    for (i, chunk) in new.chunks.iter().enumerate() {
        match stored.get(&chunk.id) {
            Some(&before) if before == chunk => {}
            Some(&before) => {
                if before.chunk_index != chunk.chunk_index {
                    moved_chunks.push(i);
                }
                update_chunks.push(i);
            }
            None => add_chunks.push(i),
        }
    }
    let kept: std::collections::HashSet<Uuid> = new.chunks.iter().map(|c| c.id).collect();
    remove_chunks.extend(
        old.chunks
            .iter()
            .map(|c| c.id)
            .filter(|id| !kept.contains(id)),
    );
    let artifact = old.artifact != new.artifact;
    if !row
        && !artifact
        && remove_chunks.is_empty()
        && add_chunks.is_empty()
        && update_chunks.is_empty()
    {
        // Equal but for `{}` metadata of findings: nothing to write.
        return None;
    }
    Some(Patch {
        analysis: new,
        row,
        findings,
        remove_chunks,
        add_chunks,
        update_chunks,
        moved_chunks,
        artifact,
    })
}

/// How a replace by difference treats stored rows goldset cannot read back (a time outside
/// 0001–9999, JSON of the wrong shape, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Refuse, naming the row (an application's tables: its rows are its own to repair).
    Refuse,
    /// Delete the batch's stored analyses and insert the file's whole (goldset's own tables,
    /// where `--replace` is how a damaged row is repaired, as a bulk load would).
    Rewrite,
}

/// Applies the batch's differences; returns the analyses that are not stored yet (to insert
/// whole). With `dry_run`, nothing is embedded (the transaction is rolled back anyway).
pub(crate) fn apply_batch(
    tx: &mut dyn WriteTransaction,
    embedder: &dyn Embedder,
    batch: Vec<Analysis>,
    (use_cache, dry_run, unreadable): (bool, bool, Unreadable),
    tally: &mut DifferenceTally,
) -> Result<Vec<Analysis>, OpError> {
    let Some(mut stored) = stored_analyses(tx, &batch, unreadable)? else {
        return Ok(batch);
    };
    // Chunks the batch adds to an analysis (rare in a mostly unchanged dataset) may be stored
    // under another one: those are taken out first, and the stored analyses read again.
    let adding: Vec<Analysis> = batch
        .iter()
        .filter(|a| match stored.get(&a.id) {
            None => !a.chunks.is_empty(),
            Some(old) => {
                let stored: std::collections::HashSet<Uuid> =
                    old.chunks.iter().map(|o| o.id).collect();
                a.chunks.iter().any(|c| !stored.contains(&c.id))
            }
        })
        .cloned()
        .collect();
    if !adding.is_empty() && take_out_moved_chunks(tx, &adding, embedder.model_id(), unreadable)? {
        let Some(again) = stored_analyses(tx, &batch, unreadable)? else {
            return Ok(batch);
        };
        stored = again;
    }
    let mut new = Vec::new();
    for analysis in &batch {
        let Some(old) = stored.get(&analysis.id) else {
            continue;
        };
        let Some(patch) = patch(old, analysis) else {
            tally.unchanged += 1;
            continue;
        };
        tally.changed += 1;
        tally.chunks_rewritten += (patch.add_chunks.len() + patch.update_chunks.len()) as u64;
        let vectors = if dry_run {
            HashMap::new()
        } else {
            vectors_for(tx, embedder, old, &patch, use_cache, tally)?
        };
        tx.apply_patch(&patch, &vectors, embedder.model_id())?;
    }
    for analysis in batch {
        if !stored.contains_key(&analysis.id) {
            new.push(analysis);
        }
    }
    Ok(new)
}

/// The batch's stored analyses by id; `None` when one could not be read and, on goldset's own
/// tables, they were deleted to be inserted whole from the file.
fn stored_analyses(
    tx: &mut dyn WriteTransaction,
    batch: &[Analysis],
    unreadable: Unreadable,
) -> Result<Option<HashMap<Uuid, Analysis>>, OpError> {
    let ids: Vec<Uuid> = batch.iter().map(|a| a.id).collect();
    match tx.analyses_by_id(&ids) {
        Err(e @ crate::store::StoreError::BadRow { .. }) if unreadable == Unreadable::Rewrite => {
            tracing::warn!("{e}: the batch's stored analyses are replaced whole");
            let existing: Vec<Uuid> = tx
                .existing(batch)?
                .iter()
                .filter(|e| e.kind == RecordKind::Analysis)
                .map(|e| e.id)
                .collect();
            tx.delete_analyses(&existing)?;
            Ok(None)
        }
        stored => Ok(Some(stored?.into_iter().map(|a| (a.id, a)).collect())),
    }
}

/// Chunks of the batch that the database holds under another analysis (moved from one analysis
/// to another in the file) are taken out of their old analysis first — what that analysis's
/// own patch does, whenever it comes —, so that adding them to their new one cannot collide
/// with the row still there. Returns whether there were any.
fn take_out_moved_chunks(
    tx: &mut dyn WriteTransaction,
    batch: &[Analysis],
    model: &str,
    unreadable: Unreadable,
) -> Result<bool, OpError> {
    let owner_in_file: HashMap<Uuid, Uuid> = batch
        .iter()
        .flat_map(|a| a.chunks.iter().map(move |c| (c.id, a.id)))
        .collect();
    let mut elsewhere: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for e in tx.existing(batch)? {
        if e.kind == RecordKind::Chunk && owner_in_file.get(&e.id).is_some_and(|o| *o != e.owner) {
            elsewhere.entry(e.owner).or_default().push(e.id);
        }
    }
    let moved = !elsewhere.is_empty();
    for (owner, chunks) in elsewhere {
        let stored = match tx.analyses_by_id(&[owner]) {
            Err(e @ crate::store::StoreError::BadRow { .. })
                if unreadable == Unreadable::Rewrite =>
            {
                // Unreadable: the old analysis goes whole; its own batch, if the file still has
                // it, inserts it again.
                tracing::warn!("{e}: the analysis is replaced whole");
                tx.delete_analyses(&[owner])?;
                continue;
            }
            stored => stored?,
        };
        for old in stored {
            tracing::debug!(analysis = %owner, ?chunks, "chunks moved to another analysis");
            let patch = Patch {
                analysis: &old,
                row: false,
                findings: false,
                remove_chunks: chunks.clone(),
                add_chunks: Vec::new(),
                update_chunks: Vec::new(),
                moved_chunks: Vec::new(),
                artifact: false,
            };
            tx.apply_patch(&patch, &HashMap::new(), model)?;
        }
    }
    Ok(moved)
}

/// The vectors the patch needs, by chunk id: one for every added chunk and every updated chunk
/// whose text changed, from the cache or the model. An updated chunk with the same text (moved,
/// or another field changed) keeps its stored vector.
fn vectors_for(
    tx: &mut dyn WriteTransaction,
    embedder: &dyn Embedder,
    old: &Analysis,
    patch: &Patch<'_>,
    use_cache: bool,
    tally: &mut DifferenceTally,
) -> Result<HashMap<Uuid, Vec<f32>>, OpError> {
    let chunks = &patch.analysis.chunks;
    let old_text: HashMap<Uuid, &str> = old
        .chunks
        .iter()
        .map(|c| (c.id, c.content.as_str()))
        .collect();
    let (retexted, same_text): (Vec<&Chunk>, Vec<&Chunk>) = patch
        .update_chunks
        .iter()
        .map(|&i| &chunks[i])
        .partition(|c| old_text.get(&c.id) != Some(&c.content.as_str()));
    tally.vectors_kept += same_text.len() as u64;
    let missing: Vec<&Chunk> = patch
        .add_chunks
        .iter()
        .map(|&i| &chunks[i])
        .chain(retexted)
        .collect();
    let texts: Vec<&str> = missing.iter().map(|c| c.content.as_str()).collect();
    let lookup = embedding::lookup(tx, embedder, &texts, use_cache)?;
    let (computed, fresh) = embedding::complete(embedder, &texts, lookup.cached)?;
    embedding::remember(tx, embedder, &lookup.digests, &computed, &fresh)?;
    tally.embedded += fresh.len() as u64;
    tally.from_cache += (texts.len() - fresh.len()) as u64;
    Ok(missing.iter().map(|c| c.id).zip(computed).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Artifact, Finding, Timestamp};

    fn analysis() -> Analysis {
        let chunk = |i: i64| Chunk {
            id: Uuid::from_u128(100 + i as u128),
            content: format!("text {i}"),
            section_title: None,
            section_path: None,
            content_type: "text".into(),
            chunk_index: i,
        };
        Analysis {
            id: Uuid::from_u128(1),
            url: "https://example.com/a".into(),
            content_type: "documentation".into(),
            status: "completed".into(),
            created_at: Timestamp::from_unix_micros(0),
            findings: vec![Finding {
                agent: "a".into(),
                category: "c".into(),
                content: "f".into(),
                confidence: 0.5,
                metadata: None,
            }],
            chunks: (0..3).map(chunk).collect(),
            artifact: Some(Artifact {
                id: Uuid::from_u128(9),
                summary: None,
                key_findings: Vec::new(),
                metadata: Default::default(),
            }),
        }
    }

    #[test]
    fn equal_analyses_need_no_patch() {
        assert!(patch(&analysis(), &analysis()).is_none());
        // `{}` and no metadata are alike (a findings table cannot tell them apart).
        let mut empty = analysis();
        empty.findings[0].metadata = Some(Default::default());
        assert!(patch(&analysis(), &empty).is_none());
    }

    #[test]
    fn only_what_changed_is_rewritten() {
        let old = analysis();
        let mut new = analysis();
        new.chunks[1].content = "edited".into();
        new.chunks.remove(2);
        let p = patch(&old, &new).unwrap();
        assert!(!p.row && !p.findings && !p.artifact);
        assert_eq!(p.update_chunks, vec![1]);
        assert!(p.add_chunks.is_empty());
        assert_eq!(p.remove_chunks, vec![old.chunks[2].id]);
    }

    #[test]
    fn moved_chunks_are_renumbered_in_place() {
        let old = analysis();
        let mut new = analysis();
        new.chunks.swap(0, 1);
        new.chunks[0].chunk_index = 0;
        new.chunks[1].chunk_index = 1;
        let p = patch(&old, &new).unwrap();
        assert!(p.add_chunks.is_empty() && p.remove_chunks.is_empty());
        assert_eq!(p.update_chunks, vec![0, 1]);
        assert_eq!(p.moved_chunks, vec![0, 1]);
    }

    #[test]
    fn row_findings_and_artifact_changes_are_flagged() {
        let old = analysis();
        let mut new = analysis();
        new.status = "failed".into();
        new.findings[0].confidence = 0.6;
        new.artifact = None;
        let p = patch(&old, &new).unwrap();
        assert!(p.row && p.findings && p.artifact);
        assert!(p.add_chunks.is_empty() && p.remove_chunks.is_empty());
    }
}
