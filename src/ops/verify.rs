//! `verify`: prove that a backup file is intact and, unless `file_only`, that the database holds
//! exactly what the file covers, with every chunk embedded by the configured model.

use super::restore::metadata_file_state;
use super::{OpError, Progress, Unit};
use crate::embed::Embedder;
use crate::format::reader::{read_backup, Item, ReadError};
use crate::format::validate::{UrlPolicy, Validator};
use crate::format::writer::write_canonical;
use crate::model::{Analysis, Counts, StatusFilter};
use crate::report::{Check, Report};
use crate::store::Store;
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
/// embedder whose model the embeddings must come from).
pub fn verify(
    database: Option<(&mut dyn Store, &dyn Embedder)>,
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
    if let Some((store, embedder)) = database {
        tracing::info!(database = %store.location(), "verify: checking the database");
        check_database(
            store,
            embedder,
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
    embedder: &dyn Embedder,
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
    let health = snapshot.embedding_health(embedder.model_id(), embedder.dimension())?;
    let bad = health.missing + health.other_model + health.wrong_dimension;
    report.fail_counted(Check::DbEmbeddings, bad, health.examples);
    report.pass(
        Check::DbEmbeddings,
        format!(
            "{} chunks embedded by {} ({} dimensions)",
            health.chunks,
            embedder.model_id(),
            embedder.dimension()
        ),
    );
    Ok(())
}
