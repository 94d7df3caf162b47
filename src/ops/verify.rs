//! `verify`: prove that a backup file is intact and, unless `file_only`, that the database holds
//! exactly what the file covers, every chunk embedded by one model (the one demanded, if any)
//! from its current text. No embedder is loaded or called: the database's records say which
//! model made each embedding, and from which text.

use super::restore::metadata_file_state;
use super::{OpError, Progress, Unit};
use crate::embed::ModelRef;
use crate::format::reader::{read_backup, Item, ReadError};
use crate::format::validate::{UrlPolicy, Validator};
use crate::format::writer::write_canonical;
use crate::model::{Analysis, Counts, StatusFilter};
use crate::report::{Check, Report};
use crate::store::{EmbeddingModel, ReadSnapshot, Store};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The backup file.
    pub file: PathBuf,
    /// The metadata file; `None` checks the one beside the backup if it exists.
    pub metadata_file: Option<PathBuf>,
    /// URL contract.
    pub url_policy: UrlPolicy,
    /// The statuses the backup covers (as given to `backup --status`); statuses found in the
    /// file count as covered too.
    pub filter: StatusFilter,
}

/// The outcome of `verify`.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The file checked.
    pub file: PathBuf,
    /// One entry per check.
    pub report: Report,
    /// What the file holds (as far as it could be read).
    pub counts: Counts,
    /// Time taken.
    pub elapsed: Duration,
}

/// 128 bits of SHA-256 over an analysis's canonical JSON: equal content, equal digest.
type ContentDigest = [u8; 16];

fn digest(analysis: &Analysis, buffer: &mut Vec<u8>) -> ContentDigest {
    buffer.clear();
    write_canonical(buffer, analysis).expect("writing to memory cannot fail");
    let full = Sha256::digest(&buffer[..]);
    full[..16]
        .try_into()
        .expect("SHA-256 is longer than 16 bytes")
}

/// Verifies `options.file`, and the database against it when `database` is given (with the
/// model the embeddings must come from, when one is demanded; otherwise they must all come
/// from one model, whichever it is).
pub fn verify(
    database: Option<(&mut dyn Store, Option<&ModelRef>)>,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<Verification, OpError> {
    let started = Instant::now();
    let path = &options.file;
    let file = File::open(path).map_err(OpError::io(path))?;
    let bytes = file.metadata().map_err(OpError::io(path))?.len();
    let mut validator = Validator::new(path.display().to_string(), &options.url_policy);
    // Per analysis of the file: its content digest. Per status: whether the file covers it.
    let mut digests: HashMap<Uuid, ContentDigest> = HashMap::new();
    let mut statuses: BTreeSet<String> = BTreeSet::new();
    let mut buffer = Vec::new();
    progress.start("verify", bytes, Unit::Bytes);
    let read = read_backup(BufReader::with_capacity(1 << 16, file), |item| {
        if let Item::Analysis(_, at) = &item {
            progress.set(at.offset);
        }
        if let Some(a) = validator.item(item) {
            statuses.insert(a.status.clone());
            digests.insert(a.id, digest(&a, &mut buffer));
        }
        Ok::<(), OpError>(())
    });
    progress.finish();
    let (mut report, counts) = match read {
        Ok(header) => validator.finish(
            &header,
            metadata_file_state(path, options.metadata_file.as_deref()),
        ),
        Err(ReadError::Io(e)) => {
            return Err(OpError::Io {
                path: path.clone(),
                source: e,
            })
        }
        Err(ReadError::Aborted(e)) => return Err(e),
        Err(e) => {
            let counts = validator.counts();
            let check = if matches!(e, ReadError::UnsupportedVersion { .. }) {
                Check::Version
            } else {
                Check::Json
            };
            let mut report =
                validator.into_structural_failure(check, format!("{}:{e}", path.display()));
            if database.is_some() {
                report.skip(Check::DbContent, "the file could not be read");
            }
            return Ok(Verification {
                file: path.clone(),
                report,
                counts,
                elapsed: started.elapsed(),
            });
        }
    };

    tracing::info!(
        file = %path.display(), %counts, elapsed_ms = started.elapsed().as_millis() as u64,
        "verify: file read and checked"
    );
    if let Some((store, demanded)) = database {
        tracing::info!(database = %store.location(), "verify: checking the database");
        check_database(
            store,
            demanded,
            &mut report,
            digests,
            &options.filter,
            &statuses,
        )?;
    }
    Ok(Verification {
        file: path.clone(),
        report,
        counts,
        elapsed: started.elapsed(),
    })
}

fn check_database(
    store: &mut dyn Store,
    demanded: Option<&ModelRef>,
    report: &mut Report,
    mut expected: HashMap<Uuid, ContentDigest>,
    filter: &StatusFilter,
    in_file: &BTreeSet<String>,
) -> Result<(), OpError> {
    let location = store.location();
    let mut snapshot = store.snapshot()?;
    let mut buffer = Vec::new();
    let (mut matched, mut uncovered) = (0u64, 0u64);
    report.ran(Check::DbContent);
    report.ran(Check::DbExtra);
    snapshot.for_each_analysis(&StatusFilter::All, &mut |a| {
        match expected.remove(&a.id) {
            Some(d) if d == digest(&a, &mut buffer) => matched += 1,
            Some(_) => report.fail(
                Check::DbContent,
                format!(
                    "analysis {}: the database's content differs from the backup's",
                    a.id
                ),
            ),
            None if filter.matches(&a.status) || in_file.contains(&a.status) => report.fail(
                Check::DbExtra,
                format!(
                    "analysis {} ({}) is in the database but not in the backup",
                    a.id, a.status
                ),
            ),
            None => uncovered += 1,
        }
        Ok(())
    })?;
    let mut missing: Vec<Uuid> = expected.into_keys().collect();
    missing.sort();
    for id in missing {
        report.fail(
            Check::DbContent,
            format!("analysis {id} is in the backup but not in {location}"),
        );
    }
    report.pass(
        Check::DbContent,
        format!("{matched} analyses identical in {location}"),
    );
    report.pass(
        Check::DbExtra,
        format!(
            "no other analysis of the covered statuses; {uncovered} of other statuses not covered"
        ),
    );
    let (orphans, examples) = snapshot.orphans()?;
    report.fail_counted(Check::DbOrphans, orphans, examples);
    report.pass(
        Check::DbOrphans,
        "every chunk and artifact has its analysis",
    );
    check_embeddings(&mut *snapshot, demanded, report)?;
    check_provenance(&mut *snapshot, report)
}

/// Every chunk has an embedding, all of one model and dimension — the demanded one, if any.
fn check_embeddings(
    snapshot: &mut dyn ReadSnapshot,
    demanded: Option<&ModelRef>,
    report: &mut Report,
) -> Result<(), OpError> {
    let models = snapshot.embedding_models()?;
    // The model every chunk is checked against: the demanded one (as the database spells it,
    // where it holds it), else the one that embedded most chunks.
    let (model, dimension) = match (demanded, models.first()) {
        (Some(wanted), _) => match models
            .iter()
            .find(|m| wanted.matches(&m.model, m.dimension))
        {
            Some(m) => (m.model.clone(), m.dimension),
            None => (
                wanted.id.clone(),
                wanted
                    .dimension
                    .or(models.first().map(|m| m.dimension))
                    .unwrap_or(0),
            ),
        },
        (None, Some(m)) => (m.model.clone(), m.dimension),
        (None, None) => (String::new(), 0),
    };
    let health = snapshot.embedding_health(&model, dimension)?;
    let bad = health.missing + health.other_model + health.wrong_dimension;
    report.fail_counted(Check::DbEmbeddings, bad, health.examples);
    if models.len() > 1 && demanded.is_none() {
        report.fail(
            Check::DbEmbeddings,
            format!(
                "the embeddings come from {} models: {}",
                models.len(),
                list(&models)
            ),
        );
    }
    let note = match demanded {
        Some(_) => format!("{} chunks embedded by {model} ({dimension} dimensions), as demanded", health.chunks),
        None if health.chunks == 0 => "no chunks".to_owned(),
        None => format!(
            "{} chunks embedded by {model} ({dimension} dimensions), the model the database records",
            health.chunks
        ),
    };
    report.pass(Check::DbEmbeddings, note);
    Ok(())
}

/// `model (N dimensions, C chunks), …`.
fn list(models: &[EmbeddingModel]) -> String {
    models
        .iter()
        .map(|m| {
            let name = if m.model.is_empty() {
                "an unrecorded model"
            } else {
                &m.model
            };
            format!("{name} ({} dimensions, {} chunks)", m.dimension, m.chunks)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every embedding was made from its chunk's current text: stale chunks fail the check; those
/// whose text of origin is not recorded are a warning (unknown, not known to be wrong).
fn check_provenance(snapshot: &mut dyn ReadSnapshot, report: &mut Report) -> Result<(), OpError> {
    let p = snapshot.embedding_provenance(Some(crate::report::EXAMPLES_PER_CHECK))?;
    report.ran(Check::DbStaleEmbeddings);
    report.fail_counted(
        Check::DbStaleEmbeddings,
        p.stale,
        p.stale_ids
            .iter()
            .map(|id| format!("chunk {id}: its text changed after its embedding was made (`goldset reembed --stale` embeds it again)"))
            .collect(),
    );
    if p.unknown > 0 {
        let first = p.unknown_ids.join(", ");
        report.warn(
            Check::DbStaleEmbeddings,
            format!(
                "{} chunks of unknown provenance: no record of the text their embedding was made from (embedded before goldset recorded it, or by another program; first: {first}); `goldset reembed` or a restore records it",
                p.unknown
            ),
        );
    }
    report.pass(
        Check::DbStaleEmbeddings,
        if p.unknown > 0 {
            "no embedding is known to be stale"
        } else {
            "every embedding was made from its chunk's current text"
        },
    );
    Ok(())
}
