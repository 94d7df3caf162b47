//! The stages of a restore: the reader (parse and validate into batches), the embedder, and the
//! writer (conflicts, cache lookups, inserts, or the difference) that owns the transaction.

use crate::embed::Embedder;
use crate::format::reader::Header;
use crate::format::reader::{read_backup, Item, ReadError};
use crate::format::validate::Validator;
use crate::model::{Analysis, Counts};
use crate::ops::apply::{self, DifferenceTally};
use crate::ops::embedding::{self, Lookup};
use crate::ops::{OpError, Progress, Unit};
use crate::store::{Batch, ChunkEmbeddings, Existing, RecordKind, StoreError, WriteTransaction};
use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use uuid::Uuid;

use super::{OnConflict, RestoreOptions, BATCHES_IN_FLIGHT, CONFLICT_EXAMPLES};

/// The writer hung up: the reader stops.
#[derive(Debug, thiserror::Error)]
#[error("the writer stopped")]
pub(super) struct Hangup;

/// Reader stage: parses and validates the file, sending valid analyses in batches until the
/// first error (after which it only validates, so that the report lists every problem).
pub(super) fn read_batches<'o>(
    file: File,
    options: &'o RestoreOptions,
    batches: SyncSender<Vec<Analysis>>,
    progress: &dyn Progress,
    counting_chunks: &AtomicBool,
) -> (Validator<'o>, Result<Header, ReadError<Hangup>>) {
    let mut validator = Validator::new(options.file.display().to_string(), &options.url_policy)
        .metadata_file_advisory();
    let mut batch = Vec::new();
    let mut batch_chunks = 0;
    let limit = options.batch_chunks.max(1);
    let read = read_backup(BufReader::with_capacity(1 << 16, file), |item| {
        match &item {
            // The file says how many chunks come: count those (the writer reports them).
            Item::Metadata(counts) if counts.total_chunks > 0 => {
                progress.start("restore", counts.total_chunks, Unit::Chunks);
                counting_chunks.store(true, Ordering::Relaxed);
            }
            Item::Analysis(_, at) if !counting_chunks.load(Ordering::Relaxed) => {
                progress.set(at.offset)
            }
            _ => {}
        }
        let valid = validator.item(item);
        if validator.has_errors() {
            // Nothing more will be written: the transaction is going to be rolled back.
            batch.clear();
            return Ok(());
        }
        if let Some(a) = valid {
            batch_chunks += a.chunks.len();
            batch.push(a);
            if batch_chunks >= limit {
                batch_chunks = 0;
                batches
                    .send(std::mem::take(&mut batch))
                    .map_err(|_| Hangup)?;
            }
        }
        Ok(())
    });
    if read.is_ok() && !validator.has_errors() && !batch.is_empty() {
        // A send error means the writer already failed and reports why.
        let _ = batches.send(batch);
    }
    (validator, read)
}

/// A batch on its way to the embedding stage, with what the cache knows of its chunks.
pub(super) struct ToEmbed {
    pub(super) analyses: Vec<Analysis>,
    pub(super) lookup: Lookup,
}

/// A batch with one vector per chunk, in order (none in a dry run).
pub(super) struct Embedded {
    pub(super) analyses: Vec<Analysis>,
    pub(super) lookup: Lookup,
    pub(super) vectors: Vec<Vec<f32>>,
    /// Positions of the vectors that the model computed (the rest came from the cache).
    pub(super) fresh: Vec<usize>,
}

pub(super) fn chunk_count(analyses: &[Analysis]) -> usize {
    analyses.iter().map(|a| a.chunks.len()).sum()
}

pub(super) fn chunk_texts(analyses: &[Analysis]) -> Vec<&str> {
    analyses
        .iter()
        .flat_map(|a| a.chunks.iter().map(|c| c.content.as_str()))
        .collect()
}

/// Embedding stage: runs the model on every chunk the cache did not have.
pub(super) fn embed_batch(
    embedder: &dyn Embedder,
    mut batch: ToEmbed,
    dry_run: bool,
) -> Result<Embedded, OpError> {
    if dry_run {
        return Ok(Embedded {
            analyses: batch.analyses,
            lookup: Lookup::default(),
            vectors: Vec::new(),
            fresh: Vec::new(),
        });
    }
    let cached = std::mem::take(&mut batch.lookup.cached);
    let (vectors, fresh) = embedding::complete(embedder, &chunk_texts(&batch.analyses), cached)?;
    Ok(Embedded {
        analyses: batch.analyses,
        lookup: batch.lookup,
        vectors,
        fresh,
    })
}

/// Writer stage: resolves conflicts against the database, hands batches to the embedding
/// stage, and inserts what comes back, in file order.
pub(super) struct Writer<'t, 'o> {
    pub(super) tx: &'t mut dyn WriteTransaction,
    pub(super) options: &'o RestoreOptions,
    pub(super) embedder: &'o dyn Embedder,
    pub(super) progress: &'o dyn Progress,
    /// The database held nothing when the restore began: no conflicts are possible.
    pub(super) empty_at_start: bool,
    /// Whether progress counts chunks written (the file announced how many) or bytes read.
    pub(super) counting_chunks: &'o AtomicBool,
    pub(super) tally: Tally,
    pub(super) conflicts: u64,
    pub(super) conflict_examples: Vec<Existing>,
    /// `--replace` by difference: what it did so far.
    pub(super) difference: Option<DifferenceTally>,
    /// `--replace` by difference: every analysis id of the file (what is not here is deleted).
    pub(super) seen: Vec<Uuid>,
    /// `--replace` by difference: the statuses the file holds (only analyses of these statuses
    /// are deleted when the file lacks them).
    pub(super) statuses: std::collections::BTreeSet<String>,
    /// `--replace` by difference: what to do with a stored analysis goldset cannot read.
    pub(super) unreadable: apply::Unreadable,
}

impl Writer<'_, '_> {
    pub(super) fn run(
        &mut self,
        batches: Receiver<Vec<Analysis>>,
        to_embed: Sender<ToEmbed>,
        embedded: Receiver<Result<Embedded, OpError>>,
    ) -> Result<(), OpError> {
        let mut in_flight = 0;
        for batch in batches {
            let batch =
                if let Some(tally) = self.difference.as_mut().filter(|_| !self.empty_at_start) {
                    self.seen.extend(batch.iter().map(|a| a.id));
                    self.statuses.extend(batch.iter().map(|a| a.status.clone()));
                    apply::apply_batch(
                        &mut *self.tx,
                        self.embedder,
                        batch,
                        (
                            self.options.use_cache,
                            self.options.dry_run,
                            self.unreadable,
                        ),
                        tally,
                    )?
                } else if self.options.replace || self.empty_at_start {
                    batch
                } else {
                    self.resolve_conflicts(batch)?
                };
            // Once a conflict makes the restore fail, only keep looking for more conflicts.
            if self.conflicts > 0 || batch.is_empty() {
                continue;
            }
            let lookup = if self.options.dry_run {
                Lookup::default()
            } else {
                embedding::lookup(
                    &mut *self.tx,
                    self.embedder,
                    &chunk_texts(&batch),
                    self.options.use_cache,
                )?
            };
            to_embed
                .send(ToEmbed {
                    analyses: batch,
                    lookup,
                })
                .map_err(|_| embedder_gone())?;
            in_flight += 1;
            while in_flight > BATCHES_IN_FLIGHT {
                self.insert(embedded.recv().map_err(|_| embedder_gone())??)?;
                in_flight -= 1;
            }
        }
        drop(to_embed);
        for done in embedded {
            self.insert(done?)?;
        }
        Ok(())
    }

    pub(super) fn insert(&mut self, batch: Embedded) -> Result<(), OpError> {
        let embeddings = (!self.options.dry_run).then(|| ChunkEmbeddings {
            model: self.embedder.model_id(),
            vectors: &batch.vectors,
        });
        self.tx.insert_batch(&batch.analyses, embeddings)?;
        embedding::remember(
            &mut *self.tx,
            self.embedder,
            &batch.lookup.digests,
            &batch.vectors,
            &batch.fresh,
        )?;
        self.tally.written(&batch);
        self.tally.show(self.progress, self.counting_chunks);
        Ok(())
    }

    /// Bulk mode with an embedder that needs no cache: nothing but inserts between the batches,
    /// so the store gets them as one stream ([`WriteTransaction::insert_stream`]).
    pub(super) fn stream(
        &mut self,
        embedded: Receiver<Result<Embedded, OpError>>,
    ) -> Result<(), OpError> {
        let mut failed = None;
        let (tally, progress, counting) = (&mut self.tally, self.progress, self.counting_chunks);
        let dry_run = self.options.dry_run;
        let streamed =
            self.tx
                .insert_stream(self.embedder.model_id(), &mut || match embedded.recv() {
                    // The embedding thread is done: every batch was handed over.
                    Err(_) => Ok(None),
                    Ok(Err(e)) => {
                        failed = Some(e);
                        Err(StoreError::Stopped)
                    }
                    Ok(Ok(batch)) => {
                        tally.written(&batch);
                        tally.show(progress, counting);
                        Ok(Some(Batch {
                            analyses: batch.analyses,
                            vectors: (!dry_run).then_some(batch.vectors),
                        }))
                    }
                });
        match failed {
            Some(e) => Err(e),
            None => Ok(streamed?),
        }
    }

    /// Applies `--on-conflict` to a batch; returns the analyses to insert.
    pub(super) fn resolve_conflicts(
        &mut self,
        batch: Vec<Analysis>,
    ) -> Result<Vec<Analysis>, OpError> {
        let existing = self.tx.existing(&batch)?;
        if existing.is_empty() {
            return Ok(batch);
        }
        let existing_analyses: HashSet<Uuid> = existing
            .iter()
            .filter(|e| e.kind == RecordKind::Analysis)
            .map(|e| e.id)
            .collect();
        let mut keep = Vec::with_capacity(batch.len());
        let mut to_delete = Vec::new();
        for analysis in batch {
            let exists = existing_analyses.contains(&analysis.id);
            let mine: Vec<&Existing> = existing.iter().filter(|e| owned_by(e, &analysis)).collect();
            // A chunk or artifact id held by *another* analysis can't be skipped or updated
            // without touching that analysis: always a conflict.
            let foreign: Vec<&Existing> = mine
                .iter()
                .copied()
                .filter(|e| e.owner != analysis.id)
                .collect();
            let refused: Vec<&Existing> = match self.options.on_conflict {
                OnConflict::Fail => mine,
                OnConflict::Skip | OnConflict::Update => foreign,
            };
            if !refused.is_empty() {
                for e in refused {
                    self.conflicts += 1;
                    if self.conflict_examples.len() < CONFLICT_EXAMPLES {
                        self.conflict_examples.push(e.clone());
                    }
                }
                continue;
            }
            match (exists, self.options.on_conflict) {
                (true, OnConflict::Skip) => self.tally.skipped.add(&analysis),
                (true, OnConflict::Update) => {
                    to_delete.push(analysis.id);
                    self.tally.updated += 1;
                    keep.push(analysis);
                }
                _ => keep.push(analysis),
            }
        }
        if !to_delete.is_empty() {
            self.tx.delete_analyses(&to_delete)?;
        }
        Ok(keep)
    }
}

/// What a restore has done so far.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) restored: Counts,
    pub(super) skipped: Counts,
    pub(super) updated: u64,
    pub(super) embedded: u64,
    pub(super) from_cache: u64,
}

impl Tally {
    /// Counts a batch handed to the store.
    pub(super) fn written(&mut self, batch: &Embedded) {
        batch.analyses.iter().for_each(|a| self.restored.add(a));
        self.embedded += batch.fresh.len() as u64;
        self.from_cache += (batch.vectors.len() - batch.fresh.len()) as u64;
    }

    /// Moves the progress bar, when it counts chunks.
    pub(super) fn show(&self, progress: &dyn Progress, counting_chunks: &AtomicBool) {
        if counting_chunks.load(Ordering::Relaxed) {
            progress.set(self.restored.total_chunks + self.skipped.total_chunks);
        }
    }
}

pub(super) fn embedder_gone() -> OpError {
    OpError::Internal("the embedding thread stopped unexpectedly".into())
}

pub(super) fn owned_by(e: &Existing, analysis: &Analysis) -> bool {
    match e.kind {
        RecordKind::Analysis => e.id == analysis.id,
        RecordKind::Chunk => analysis.chunks.iter().any(|c| c.id == e.id),
        RecordKind::Artifact => analysis.artifact.as_ref().is_some_and(|r| r.id == e.id),
    }
}
