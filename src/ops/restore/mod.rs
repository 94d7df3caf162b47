//! `restore`: stream the file into one write transaction, validating as it goes; embed every
//! chunk; commit only when the whole file is valid and nothing conflicts. Any error — or a kill —
//! before the commit leaves the database as it was.

mod stages;

use super::apply::{DifferenceTally, Unreadable};
use super::embedding::Lookup;
use super::{OpError, Progress, Unit};
use crate::embed::Embedder;
use crate::format::reader::Header;
use crate::format::reader::ReadError;
use crate::format::validate::{MetadataFile, UrlPolicy, Validator};
use crate::format::{metadata_path_for, read_metadata_file};
use crate::model::{Analysis, Counts};
use crate::report::Check;
use crate::store::{Inventory, Store, WriteTransaction};
use stages::{chunk_count, embed_batch, read_batches, Embedded, Hangup, Tally, ToEmbed, Writer};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self};
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
    /// Take vectors from the embedding cache where it has them (`--no-cache`: false; fresh
    /// vectors are cached either way).
    pub use_cache: bool,
    /// Go ahead when rows of an application's other tables reference rows the restore deletes
    /// (their foreign keys then cascade or set null, as the application declared). Without it,
    /// such a restore is refused and nothing changes.
    pub allow_cascade: bool,
    /// `--replace` on goldset's own tables: delete everything and load in bulk even where
    /// applying the difference would do (see [`difference_pays`]).
    pub in_bulk: bool,
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
    /// What `--replace` did where it applies only the difference (an application's tables).
    pub difference: Option<DifferenceTally>,
    /// What the database holds afterwards.
    pub after: Inventory,
    /// Chunks the model embedded.
    pub embedded: u64,
    /// Chunks whose vector came from the embedding cache.
    pub from_cache: u64,
    /// The model id.
    pub model: String,
    /// True when nothing was written.
    pub dry_run: bool,
    /// Time taken.
    #[serde(serialize_with = "crate::ops::serialize_seconds")]
    pub elapsed: Duration,
    /// What was worth a warning but did not stop the restore (a stale metadata file).
    pub warnings: Vec<String>,
}

/// How many conflicting ids an error lists.
const CONFLICT_EXAMPLES: usize = 20;

/// Batches of embedded analyses in flight between the embedding thread and the writer.
const BATCHES_IN_FLIGHT: usize = 2;

/// Restores `options.file` into `store`, embedding chunks with `embedder`.
///
/// Three stages overlap: a reader thread parses and validates the file into batches, an
/// embedding thread embeds them, and this thread resolves conflicts and writes, all inside one
/// transaction that commits only when the whole file has proved valid. A bulk load (`--replace`
/// or an empty database) with an embedder that needs no cache has nothing to look up between
/// batches: the batches then go from the reader straight to the embedding thread, and the store
/// takes them as one stream ([`WriteTransaction::insert_stream`]).
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

    let owned = store.layout().owned;
    let row_level =
        options.replace && !options.in_bulk && owned && difference_pays(store, embedder)?;
    let mut tx = if row_level {
        store.begin_row_level()?
    } else {
        store.begin()?
    };
    let mut plan = Plan::make(&mut *tx, embedder, options)?;
    plan.any_status = owned;
    tracing::info!(
        file = %path.display(), bytes, replace = options.replace,
        by_difference = plan.by_difference, empty_at_start = plan.empty_at_start,
        stream = plan.stream, model = embedder.model_id(), dry_run = options.dry_run,
        "restore: transaction open, reading the file"
    );
    progress.start("restore", bytes, Unit::Bytes);
    let counting_chunks = AtomicBool::new(false);
    let mut writer = Writer {
        tx: &mut *tx,
        options,
        embedder,
        progress,
        empty_at_start: plan.empty_at_start,
        counting_chunks: &counting_chunks,
        tally: Tally::default(),
        conflicts: 0,
        conflict_examples: Vec::new(),
        difference: plan.by_difference.then(DifferenceTally::default),
        seen: Vec::new(),
        statuses: Default::default(),
        unreadable: if plan.any_status {
            Unreadable::Rewrite
        } else {
            Unreadable::Refuse
        },
    };
    let (validator, read, written) = run_stages(&mut writer, file, plan.stream, &counting_chunks);
    progress.finish();
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        restored = %writer.tally.restored, embedded = writer.tally.embedded,
        from_cache = writer.tally.from_cache, "restore: file read, embedded and written"
    );
    let (in_file, warnings) = check_file(path, validator, read, &written, metadata_file)?;
    written?;
    if writer.conflicts > 0 {
        return Err(OpError::Conflicts {
            count: writer.conflicts,
            examples: writer.conflict_examples,
        });
    }
    let mut difference = writer.difference.take();
    let in_file_ids = InFile {
        ids: std::mem::take(&mut writer.seen),
        statuses: std::mem::take(&mut writer.statuses).into_iter().collect(),
    };
    let mut tally = writer.tally;
    if let Some(d) = &mut difference {
        finish_difference(
            &mut *tx,
            embedder,
            options,
            &plan,
            d,
            in_file_ids,
            &mut tally,
        )?;
    }
    let after = tx.inventory()?;
    if !options.dry_run {
        let committing = Instant::now();
        tx.commit()?;
        tracing::info!(
            elapsed_ms = committing.elapsed().as_millis() as u64,
            "restore: committed"
        );
    }
    Ok(RestoreSummary {
        file: path.clone(),
        bytes,
        in_file,
        restored: tally.restored,
        skipped: tally.skipped,
        updated: tally.updated,
        removed: plan.removed,
        difference,
        after,
        embedded: tally.embedded,
        from_cache: tally.from_cache,
        model: embedder.model_id().to_owned(),
        dry_run: options.dry_run,
        elapsed: started.elapsed(),
        warnings,
    })
}

/// Whether a `--replace` on goldset's own tables should apply only the difference (row by
/// row, like on an application's tables) rather than delete everything and load in bulk: when
/// the database already holds chunks, every one embedded by this embedder's model. Then a file
/// that is mostly what the database holds costs a read of the database and the change, where a
/// bulk load rewrites every row and rebuilds every index. A model change re-embeds every chunk
/// anyway, and an empty database has nothing to compare with: those load in bulk.
fn difference_pays(store: &mut dyn Store, embedder: &dyn Embedder) -> Result<bool, OpError> {
    let models = store.snapshot()?.embedding_models()?;
    let model = embedder.model_id();
    let pays = match models.as_slice() {
        [held] if held.model == model => {
            // An embedder that has not met its model yet (`openai:`) takes the dimension the
            // database holds for its id, so a fully cached restore never contacts the server.
            let dimension = if embedder.wants_dimension_hint() {
                embedder.settle_dimension(Some(held.dimension))?
            } else {
                embedder.dimension()
            };
            dimension == held.dimension
        }
        _ => false,
    };
    tracing::debug!(
        by_difference = pays,
        "replace on goldset's own tables: stored embeddings {models:?}"
    );
    Ok(pays)
}

/// How a restore goes, decided once its transaction is open.
struct Plan {
    /// `--replace` on a store that applies only the difference (an application's tables).
    by_difference: bool,
    /// The tables held nothing: nothing to conflict with or compare with.
    empty_at_start: bool,
    /// A bulk load whose embedder needs no cache lookups between batches: one stream.
    stream: bool,
    /// What a bulk `--replace` deleted first.
    removed: Option<Inventory>,
    /// A replace by difference deletes analyses of any status the file lacks (goldset's own
    /// tables), not only of the statuses the file holds (an application's).
    any_status: bool,
}

impl Plan {
    fn make(
        tx: &mut dyn WriteTransaction,
        embedder: &dyn Embedder,
        options: &RestoreOptions,
    ) -> Result<Plan, OpError> {
        // An application's tables are replaced by applying the difference (unchanged rows keep
        // their row, embedding and index entries); goldset's own by deleting and loading in bulk.
        let by_difference = options.replace && tx.replaces_by_difference();
        tx.allow_cascade(options.allow_cascade);
        // Before anything is deleted: what the database holds for this model id.
        super::embedding::settle_dimension(tx, embedder)?;
        let removed = if options.replace && !by_difference {
            let before = tx.inventory()?;
            tx.delete_all()?;
            Some(before)
        } else {
            None
        };
        // Into an empty database, an additive restore is a bulk load with nothing to conflict
        // with (ids repeated within the file are the validator's to report); a replace by
        // difference into empty tables has nothing to compare with.
        let empty_at_start = (!options.replace || by_difference) && tx.load_in_bulk_if_empty()?;
        if by_difference {
            // Unchanged chunks keep their vectors; any not made by this model are embedded
            // again at the end, so that one model embeds every chunk when the restore commits.
            tx.prepare_embeddings(embedder.dimension())?;
        } else {
            check_embedding_model(tx, embedder)?;
        }
        Ok(Plan {
            by_difference,
            empty_at_start,
            stream: (options.replace || empty_at_start)
                && !by_difference
                && !embedder.worth_caching(),
            removed,
            any_status: false,
        })
    }
}

/// What the reader thread hands back: its validator and how reading ended.
type Read<'o> = (Validator<'o>, Result<Header, ReadError<Hangup>>);

/// Runs the three stages — reader, embedder, writer (this thread) — until the file is read.
fn run_stages<'o>(
    writer: &mut Writer<'_, 'o>,
    file: File,
    stream: bool,
    counting_chunks: &AtomicBool,
) -> (
    Validator<'o>,
    Result<Header, ReadError<Hangup>>,
    Result<(), OpError>,
) {
    let (options, embedder, progress) = (writer.options, writer.embedder, writer.progress);
    std::thread::scope(|scope| {
        let (batch_tx, batch_rx) = mpsc::sync_channel::<Vec<Analysis>>(1);
        let reader =
            scope.spawn(move || read_batches(file, options, batch_tx, progress, counting_chunks));
        let dry_run = options.dry_run;
        let written = if stream {
            // Batches go straight from the reader to the embedding thread, whose results wait
            // (at most BATCHES_IN_FLIGHT of them) for the store.
            let (done_tx, done_rx) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
            scope.spawn(move || {
                for analyses in batch_rx {
                    let lookup = Lookup::nothing_cached(chunk_count(&analyses));
                    let batch = ToEmbed { analyses, lookup };
                    if done_tx.send(embed_batch(embedder, batch, dry_run)).is_err() {
                        return;
                    }
                }
            });
            writer.stream(done_rx)
        } else {
            let (embed_tx, embed_rx) = mpsc::channel::<ToEmbed>();
            let (done_tx, done_rx) = mpsc::channel::<Result<Embedded, OpError>>();
            scope.spawn(move || {
                for batch in embed_rx {
                    if done_tx.send(embed_batch(embedder, batch, dry_run)).is_err() {
                        return;
                    }
                }
            });
            writer.run(batch_rx, embed_tx, done_rx)
        };
        let (validator, read): Read<'o> = reader.join().expect("the reader thread does not panic");
        (validator, read, written)
    })
}

/// The whole-file checks once the reader is done: what the file holds and the warnings, or
/// why it is refused (a writer error that stopped the reader is the writer's to report).
fn check_file(
    path: &Path,
    validator: Validator<'_>,
    read: Result<Header, ReadError<Hangup>>,
    written: &Result<(), OpError>,
    metadata_file: MetadataFile,
) -> Result<(Counts, Vec<String>), OpError> {
    let header = match read {
        Ok(h) => h,
        // The writer stopped reading: its own error says why.
        Err(ReadError::Aborted(Hangup)) if written.is_err() => {
            return Ok((Counts::default(), Vec::new()))
        }
        Err(ReadError::Aborted(Hangup)) => {
            unreachable!("the reader stops early only when the writer failed")
        }
        Err(ReadError::Io(e)) => {
            return Err(OpError::Io {
                path: path.to_owned(),
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
                path: path.to_owned(),
                report: Box::new(report),
            });
        }
    };
    let (report, in_file) = validator.finish(&header, metadata_file);
    let warnings = report
        .get(Check::MetadataFile)
        .map(|r| r.examples.clone())
        .unwrap_or_default();
    if report.has_errors() {
        return Err(OpError::Invalid {
            path: path.to_owned(),
            report: Box::new(report),
        });
    }
    Ok((in_file, warnings))
}

/// What a replace by difference remembers of the file: its analysis ids and statuses.
struct InFile {
    ids: Vec<Uuid>,
    statuses: Vec<String>,
}

/// The end of a replace by difference: the analyses the file no longer has are deleted, and
/// every chunk not embedded by this model is embedded.
fn finish_difference(
    tx: &mut dyn WriteTransaction,
    embedder: &dyn Embedder,
    options: &RestoreOptions,
    plan: &Plan,
    difference: &mut DifferenceTally,
    file: InFile,
    tally: &mut Tally,
) -> Result<(), OpError> {
    let InFile {
        ids: mut seen,
        statuses,
    } = file;
    tally.embedded += difference.embedded;
    tally.from_cache += difference.from_cache;
    if !plan.empty_at_start {
        seen.sort_unstable();
        let statuses = (!plan.any_status).then_some(statuses.as_slice());
        difference.deleted = tx.delete_analyses_except(&seen, statuses)?;
    }
    // Into empty tables every chunk was just embedded by this model: nothing can be stale.
    if !options.dry_run && !plan.empty_at_start {
        let (fresh, cached) = super::reembed::embed_all_stale(tx, embedder, options.use_cache)?;
        tally.embedded += fresh;
        tally.from_cache += cached;
    }
    Ok(())
}

/// One model per database: an additive restore with another model than the one that embedded
/// the chunks already there would leave a mix that no similarity search can use.
fn check_embedding_model(
    tx: &mut dyn WriteTransaction,
    embedder: &dyn Embedder,
) -> Result<(), OpError> {
    let (model, dimension) = (embedder.model_id(), embedder.dimension());
    let held = tx.embedding_models()?;
    if let Some(other) = held
        .iter()
        .find(|m| m.model != model || m.dimension != dimension)
    {
        return Err(OpError::Refused(format!(
            "the database holds {} chunks embedded by {} ({} dimensions) but this restore embeds with {model} \
             ({dimension} dimensions); restore with --replace to switch models, or \
             choose the --embedder that matches",
            other.chunks, other.model, other.dimension
        )));
    }
    tx.prepare_embeddings(dimension)?;
    Ok(())
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
