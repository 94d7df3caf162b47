//! `backup`: one consistent snapshot streamed into the canonical file, written atomically, left
//! untouched when its content has not changed.

use super::atomic::{self, AtomicFile};
use super::{OpError, Progress, Unit};
use crate::format::reader::{parse_analysis, Header};
use crate::format::validate::{MetadataFile, UrlPolicy, Validator};
use crate::format::writer::{metadata_file_content, same_content, BackupWriter};
use crate::format::FORMAT_VERSION;
use crate::model::{Counts, StatusFilter};
use crate::report::Check;
use crate::store::{Store, StoreError};
use crate::timestamp::Timestamp;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to back up, and where.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The backup file.
    pub file: PathBuf,
    /// The metadata file beside it.
    pub metadata_file: PathBuf,
    /// Which analyses to include.
    pub filter: StatusFilter,
    /// Allow replacing a backup that holds analyses with one that holds none.
    pub allow_empty: bool,
}

/// What a backup did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupSummary {
    /// The backup file.
    pub file: PathBuf,
    /// The metadata file.
    pub metadata_file: PathBuf,
    /// What the file holds.
    pub counts: Counts,
    /// Size of the backup file in bytes.
    pub bytes: u64,
    /// True when the file already held this content and was left untouched.
    pub unchanged: bool,
    /// Time taken.
    #[serde(serialize_with = "crate::ops::serialize_seconds")]
    pub elapsed: Duration,
}

/// A wrong `--database-url` or `--status` must not silently turn a golden backup into an empty one.
fn refuse_to_empty(options: &BackupOptions) -> Result<(), OpError> {
    let held = crate::format::read_metadata_file(&options.metadata_file)
        .map(|c| c.total_analyses)
        .unwrap_or(0);
    if held > 0 {
        return Err(OpError::Refused(format!(
            "the database has no analyses to back up, but {} holds {held}; refusing to empty it \
             (check --database-url and --status, or pass --allow-empty)",
            options.file.display()
        )));
    }
    Ok(())
}

/// The metadata file's bytes, if it is a regular file of a sane size (a device could be read
/// forever).
fn read_small_file(path: &Path) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    atomic::open_regular(path)
        .ok()?
        .take(1 << 20)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// Writes the backup of `store` described by `options`.
///
/// What is written is checked as it is written, by the rules `verify --file-only` applies (each
/// record parsed back from its canonical bytes and validated, then the whole-file checks): rows
/// that another tool wrote and that no backup can hold (a year outside 0001–9999, a NUL, a gap in
/// `chunk_index`, …) make it refuse with every such record named, leaving the old file as it was.
pub fn backup(
    store: &mut dyn Store,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupSummary, OpError> {
    let started = Instant::now();
    let path = &options.file;
    let mut out = AtomicFile::create(path).map_err(OpError::io(path))?;
    let policy = UrlPolicy::default();
    let mut validator = Validator::new(format!("{} (as written)", path.display()), &policy);
    let created_at = Timestamp::now();
    let counts = write_checked(
        store,
        options,
        &mut out,
        &mut validator,
        created_at,
        progress,
    )?;
    progress.finish();
    let header = Header {
        version: Some(FORMAT_VERSION.to_owned()),
        created_at: Some(created_at.to_string()),
        // The writer has checked the declared counts against what it wrote.
        metadata: Some(validator.counts()),
    };
    let (report, _) = validator.finish(&header, MetadataFile::Absent("written now".into()));
    if report.has_errors() {
        return Err(OpError::Unbackupable {
            path: path.clone(),
            report: Box::new(report),
        });
    }

    let bytes = out.file().metadata().map_err(OpError::io(path))?.len();
    let unchanged_backup = same_as_target(&mut out, bytes).map_err(OpError::io(path))?;
    if !unchanged_backup {
        out.commit().map_err(OpError::io(path))?;
    }
    // The metadata file is rewritten whenever it differs, even when the backup did not change.
    let metadata = metadata_file_content(&counts).map_err(OpError::io(&options.metadata_file))?;
    let metadata_current = read_small_file(&options.metadata_file).is_some_and(|m| m == metadata);
    if !metadata_current {
        atomic::write_file(&options.metadata_file, &metadata)
            .map_err(OpError::io(&options.metadata_file))?;
    }
    tracing::info!(
        bytes,
        unchanged = unchanged_backup,
        metadata_rewritten = !metadata_current,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "backup: done"
    );
    Ok(BackupSummary {
        file: path.clone(),
        metadata_file: options.metadata_file.clone(),
        counts,
        bytes,
        unchanged: unchanged_backup && metadata_current,
        elapsed: started.elapsed(),
    })
}

/// Streams the snapshot's analyses into `out`, parsing each record back from the bytes just
/// written and checking it with `validator` (a backup never writes what goldset would refuse).
fn write_checked<'p>(
    store: &mut dyn Store,
    options: &BackupOptions,
    out: &mut AtomicFile,
    validator: &mut Validator<'p>,
    created_at: Timestamp,
    progress: &dyn Progress,
) -> Result<Counts, OpError> {
    let path = &options.file;
    let mut snapshot = store.snapshot()?;
    let counts = snapshot.counts(&options.filter)?;
    tracing::info!(filter = ?options.filter, %counts, file = %path.display(), "backup: writing");
    if counts.total_analyses == 0 && !options.allow_empty {
        refuse_to_empty(options)?;
    }
    progress.start("backup", counts.total_analyses, Unit::Records);
    validator.expect(&counts);
    let mut writer = BackupWriter::new(
        BufWriter::with_capacity(1 << 18, out.file()),
        created_at,
        counts,
    )
    .map_err(OpError::io(path))?;
    let mut write_error = None;
    let mut done = 0;
    let streamed = snapshot.for_each_analysis(&options.filter, &mut |analysis| {
        if let Err(e) = writer.write_analysis(&analysis) {
            write_error = Some(e);
            return Err(StoreError::Stopped);
        }
        let (bytes, at) = writer.last_record();
        match parse_analysis(bytes, done, at) {
            Ok(raw) => {
                validator.check(raw, at);
            }
            Err((at, message)) => validator.fail(
                Check::Json,
                format!(
                    "{}:{at}: analysis {}: {message}",
                    path.display(),
                    analysis.id
                ),
            ),
        }
        done += 1;
        progress.set(done);
        Ok(())
    });
    if let Some(e) = write_error {
        return Err(OpError::Io {
            path: path.clone(),
            source: e,
        });
    }
    streamed?;
    writer
        .finish()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(OpError::io(path))?;
    Ok(counts)
}

/// Whether the file being replaced (a link's target) already holds what `out` holds, apart
/// from `created_at`; reads no more than could be equal: a file longer than the new one by
/// more than a timestamp's width is not.
fn same_as_target(out: &mut AtomicFile, bytes: u64) -> std::io::Result<bool> {
    let Ok(existing) = atomic::open_regular(out.target()) else {
        return Ok(false);
    };
    let temp = out.file();
    temp.seek(SeekFrom::Start(0))?;
    same_content(
        BufReader::new(existing.take(bytes + 64)),
        BufReader::new(&*temp),
    )
}
