//! `restore`: stream the file into one write transaction, validating as it goes; embed every
//! chunk; commit only when the whole file is valid and nothing conflicts. Any error — or a kill —
//! before the commit leaves the database as it was.

use super::{OpError, Progress, Unit};
use crate::embed::Embedder;
use crate::format::reader::{read_backup, ReadError};
use crate::format::validate::{MetadataFile, UrlPolicy, Validator};
use crate::format::{metadata_path_for, read_metadata_file};
use crate::model::{Analysis, Counts};
use crate::report::Check;
use crate::store::{ChunkEmbeddings, Existing, Inventory, RecordKind, Store, WriteTransaction};
use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What to do with records whose id already exists (additive restore only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Refuse the restore, listing the ids.
    #[default]
    Fail,
    /// Keep the database's analysis (with its chunks and artifact); skip the file's.
    Skip,
    /// Replace the database's analysis (with its chunks and artifact) by the file's.
    Update,
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The backup file.
    pub file: PathBuf,
    /// The metadata file; `None` checks the one beside the backup if it exists.
    pub metadata_file: Option<PathBuf>,
    /// Make the database hold exactly the file's content.
    pub replace: bool,
    /// Policy for existing ids in an additive restore.
    pub on_conflict: OnConflict,
    /// Do everything, then roll back.
    pub dry_run: bool,
    /// URL contract.
    pub url_policy: UrlPolicy,
    /// Chunks handled (embedded, checked, inserted) together.
    pub batch_chunks: usize,
}

/// What a restore did (or, with `dry_run`, would do).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreSummary {
    /// The backup file.
    pub file: PathBuf,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// What the file holds.
    pub in_file: Counts,
    /// Analyses (with children) written.
    pub restored: Counts,
    /// Analyses that existed and were kept (`--on-conflict skip`).
    pub skipped: Counts,
    /// Analyses that existed and were replaced (`--on-conflict update`).
    pub updated: u64,
    /// What `--replace` removed (everything the database held before).
    pub removed: Option<Inventory>,
    /// What the database holds afterwards.
    pub after: Inventory,
    /// Chunks embedded, and by which model.
    pub embedded: u64,
    /// The model id.
    pub model: String,
    /// True when nothing was written.
    pub dry_run: bool,
    /// Time taken.
    #[serde(serialize_with = "crate::ops::serialize_seconds")]
    pub elapsed: Duration,
}

/// How many conflicting ids an error lists.
const CONFLICT_EXAMPLES: usize = 20;

/// Restores `options.file` into `store`, embedding chunks with `embedder`.
pub fn restore(
    store: &mut dyn Store,
    embedder: &dyn Embedder,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreSummary, OpError> {
    let started = Instant::now();
    let path = &options.file;
    let file = File::open(path).map_err(OpError::io(path))?;
    let bytes = file.metadata().map_err(OpError::io(path))?.len();
    let metadata_file = metadata_file_state(path, options.metadata_file.as_deref());

    let mut tx = store.begin()?;
    let removed = if options.replace {
        let before = tx.inventory()?;
        tx.delete_all()?;
        Some(before)
    } else {
        None
    };

    let source = path.display().to_string();
    let mut validator = Validator::new(source, &options.url_policy);
    let mut loader = Loader {
        tx: &mut *tx,
        embedder,
        options,
        batch: Vec::new(),
        batch_chunks: 0,
        restored: Counts::default(),
        skipped: Counts::default(),
        updated: 0,
        embedded: 0,
        conflicts: 0,
        conflict_examples: Vec::new(),
    };
    progress.start("restore", bytes, Unit::Bytes);
    let read = read_backup(BufReader::with_capacity(1 << 16, file), |raw, at| {
        progress.set(at.offset);
        let analysis = validator.check(raw, at);
        match analysis {
            // Once the file is known to be invalid, keep validating (to report every problem)
            // but stop writing: the transaction will be rolled back.
            Some(a) if !validator.has_errors() => loader.push(a),
            _ => Ok(()),
        }
    });
    progress.finish();
    let header = match read {
        Ok(h) => h,
        Err(ReadError::Aborted(e)) => return Err(e),
        Err(ReadError::Io(e)) => {
            return Err(OpError::Io {
                path: path.clone(),
                source: e,
            })
        }
        Err(e) => {
            let check = if matches!(e, ReadError::UnsupportedVersion { .. }) {
                Check::Version
            } else {
                Check::Json
            };
            let report =
                validator.into_structural_failure(check, format!("{}:{e}", path.display()));
            return Err(OpError::Invalid {
                path: path.clone(),
                report: Box::new(report),
            });
        }
    };
    if !validator.has_errors() {
        loader.flush()?;
    }
    let (report, in_file) = validator.finish(&header, metadata_file);
    if report.has_errors() {
        return Err(OpError::Invalid {
            path: path.clone(),
            report: Box::new(report),
        });
    }
    if loader.conflicts > 0 {
        return Err(OpError::Conflicts {
            count: loader.conflicts,
            examples: loader.conflict_examples,
        });
    }
    let (restored, skipped, updated, embedded) = (
        loader.restored,
        loader.skipped,
        loader.updated,
        loader.embedded,
    );
    let after = tx.inventory()?;
    if !options.dry_run {
        tx.commit()?;
    }
    Ok(RestoreSummary {
        file: path.clone(),
        bytes,
        in_file,
        restored,
        skipped,
        updated,
        removed,
        after,
        embedded,
        model: embedder.model_id().to_owned(),
        dry_run: options.dry_run,
        elapsed: started.elapsed(),
    })
}

/// The metadata file to check: the one named, or the one beside the backup if it exists.
pub(crate) fn metadata_file_state(backup: &Path, named: Option<&Path>) -> MetadataFile {
    let path = match named {
        Some(p) => p.to_owned(),
        None => {
            let beside = metadata_path_for(backup);
            if !beside.exists() {
                return MetadataFile::Absent(format!("no metadata file {}", beside.display()));
            }
            beside
        }
    };
    match read_metadata_file(&path) {
        Ok(counts) => MetadataFile::Read {
            path: path.display().to_string(),
            counts,
        },
        Err(e) => MetadataFile::Unreadable(e),
    }
}

/// Collects valid analyses into batches; per batch, resolves conflicts, embeds, inserts.
struct Loader<'t, 'o> {
    tx: &'t mut dyn WriteTransaction,
    embedder: &'o dyn Embedder,
    options: &'o RestoreOptions,
    batch: Vec<Analysis>,
    batch_chunks: usize,
    restored: Counts,
    skipped: Counts,
    updated: u64,
    embedded: u64,
    conflicts: u64,
    conflict_examples: Vec<Existing>,
}

impl Loader<'_, '_> {
    fn push(&mut self, analysis: Analysis) -> Result<(), OpError> {
        self.batch_chunks += analysis.chunks.len();
        self.batch.push(analysis);
        if self.batch_chunks >= self.options.batch_chunks.max(1) {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OpError> {
        let mut batch = std::mem::take(&mut self.batch);
        self.batch_chunks = 0;
        if batch.is_empty() {
            return Ok(());
        }
        if !self.options.replace {
            batch = self.resolve_conflicts(batch)?;
        }
        let vectors = if self.options.dry_run {
            Vec::new()
        } else {
            self.embed(&batch)?
        };
        let mut offset = 0;
        for analysis in &batch {
            let n = analysis.chunks.len();
            let embeddings = (!self.options.dry_run).then(|| ChunkEmbeddings {
                model: self.embedder.model_id(),
                vectors: &vectors[offset..offset + n],
            });
            self.tx.insert(analysis, embeddings)?;
            offset += n;
            self.restored.add(analysis);
        }
        self.embedded += vectors.len() as u64;
        Ok(())
    }

    /// Applies `--on-conflict` to a batch; returns the analyses to insert.
    fn resolve_conflicts(&mut self, batch: Vec<Analysis>) -> Result<Vec<Analysis>, OpError> {
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
                (true, OnConflict::Skip) => self.skipped.add(&analysis),
                (true, OnConflict::Update) => {
                    to_delete.push(analysis.id);
                    self.updated += 1;
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

    /// Embeds every chunk of the batch, in model batches of texts of similar length.
    fn embed(&mut self, batch: &[Analysis]) -> Result<Vec<Vec<f32>>, OpError> {
        let texts: Vec<&str> = batch
            .iter()
            .flat_map(|a| a.chunks.iter().map(|c| c.content.as_str()))
            .collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut vectors = vec![Vec::new(); texts.len()];
        let dimension = self.embedder.dimension();
        for group in order.chunks(self.embedder.preferred_batch_size().max(1)) {
            let input: Vec<&str> = group.iter().map(|&i| texts[i]).collect();
            let output = self.embedder.embed(&input)?;
            if output.len() != input.len() || output.iter().any(|v| v.len() != dimension) {
                return Err(OpError::Refused(format!(
                    "embedder {} returned vectors of the wrong number or dimension (expected {} of {dimension})",
                    self.embedder.model_id(),
                    input.len()
                )));
            }
            for (&i, v) in group.iter().zip(output) {
                vectors[i] = v;
            }
        }
        Ok(vectors)
    }
}

fn owned_by(e: &Existing, analysis: &Analysis) -> bool {
    match e.kind {
        RecordKind::Analysis => e.id == analysis.id,
        RecordKind::Chunk => analysis.chunks.iter().any(|c| c.id == e.id),
        RecordKind::Artifact => analysis.artifact.as_ref().is_some_and(|r| r.id == e.id),
    }
}
