//! Native snapshots (`dump`, `load`, `verify --snapshot`): the database's own format — a SQLite
//! file, or a `pg_dump` custom archive — embeddings included, for fast local restores. Each
//! snapshot gets a manifest beside it (`F.manifest.json`) with what it holds and its SHA-256.

use super::atomic::{self, AtomicFile};
use super::OpError;
use crate::embed::ModelRef;
use crate::report::{Check, Report};
use crate::store::{self, NativeCheck, NativeSnapshot, NativeTools, Store};
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Default snapshot path.
pub const DEFAULT_SNAPSHOT_PATH: &str = "data/golden_dataset.snapshot";

/// What a manifest says of its snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `goldset-snapshot`.
    pub format: String,
    /// Version of this manifest's layout.
    pub manifest_version: u32,
    /// The goldset that wrote it.
    pub goldset_version: String,
    /// When.
    pub created_at: String,
    /// The snapshot's file name (beside the manifest).
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// What it is and holds.
    pub snapshot: NativeSnapshot,
}

/// The manifest path of a snapshot: `F.manifest.json`.
pub fn manifest_path(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.file_name().unwrap_or_default().to_os_string();
    name.push(".manifest.json");
    snapshot.with_file_name(name)
}

fn sha256_of(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((bytes, hex))
}

/// Reads the manifest of `snapshot`, after making sure the snapshot itself is there (a missing
/// snapshot is named as such, not as a missing manifest).
pub fn read_manifest(snapshot: &Path) -> Result<Manifest, OpError> {
    std::fs::metadata(snapshot).map_err(OpError::io(snapshot))?;
    let path = manifest_path(snapshot);
    let text = std::fs::read_to_string(&path).map_err(OpError::io(&path))?;
    let manifest: Manifest = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => {
            return Err(OpError::Manifest {
                path,
                reason: format!("not a goldset snapshot manifest: {e}"),
            })
        }
    };
    if manifest.format != "goldset-snapshot" || manifest.manifest_version != 1 {
        return Err(OpError::Manifest {
            path,
            reason: format!(
                "unknown manifest ({} v{})",
                manifest.format, manifest.manifest_version
            ),
        });
    }
    Ok(manifest)
}

/// What `dump` did.
#[derive(Debug, Clone, Serialize)]
pub struct DumpSummary {
    /// The snapshot file.
    pub file: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Time taken.
    #[serde(serialize_with = "crate::ops::serialize_seconds")]
    pub elapsed: Duration,
}

/// Writes a native snapshot of `store` to `file` (atomically) and its manifest beside it.
pub fn dump(
    store: &mut dyn Store,
    file: &Path,
    tools: &NativeTools,
) -> Result<DumpSummary, OpError> {
    let started = Instant::now();
    let out = AtomicFile::create(file).map_err(OpError::io(file))?;
    let snapshot = store.native_dump(out.path(), tools)?;
    let (bytes, sha256) = sha256_of(out.path()).map_err(OpError::io(file))?;
    out.commit().map_err(OpError::io(file))?;
    let manifest = Manifest {
        format: "goldset-snapshot".into(),
        manifest_version: 1,
        goldset_version: env!("CARGO_PKG_VERSION").into(),
        created_at: Timestamp::now().to_string(),
        file: file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        bytes,
        sha256,
        snapshot,
    };
    let mut text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| OpError::Internal(format!("a snapshot manifest: {e}")))?;
    text.push(b'\n');
    let path = manifest_path(file);
    atomic::write_file(&path, &text).map_err(OpError::io(&path))?;
    Ok(DumpSummary {
        file: file.to_owned(),
        manifest,
        elapsed: started.elapsed(),
    })
}

/// What `load` did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    /// The snapshot file.
    pub file: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// A note when the snapshot's embeddings come from another model than the one configured
    /// explicitly (`--embedder`, `GOLDSET_EMBEDDER`, goldset.toml).
    pub model_note: Option<String>,
    /// Time taken.
    #[serde(serialize_with = "crate::ops::serialize_seconds")]
    pub elapsed: Duration,
}

/// Loads the snapshot `file` into `store` after checking it against its manifest. `configured`:
/// the model the user chose explicitly, if any (a note says when the snapshot's differ).
pub fn load(
    store: &mut dyn Store,
    file: &Path,
    replace: bool,
    tools: &NativeTools,
    configured: Option<&ModelRef>,
) -> Result<LoadSummary, OpError> {
    let started = Instant::now();
    let manifest = read_manifest(file)?;
    let (bytes, sha256) = sha256_of(file).map_err(OpError::io(file))?;
    if bytes != manifest.bytes || sha256 != manifest.sha256 {
        return Err(OpError::Refused(format!(
            "{} does not match its manifest (size {bytes} vs {}, SHA-256 {sha256} vs {}): refusing to load it",
            file.display(),
            manifest.bytes,
            manifest.sha256
        )));
    }
    let expected_kind = store.native_kind();
    if manifest.snapshot.kind != expected_kind {
        return Err(OpError::Refused(format!(
            "{} is a {} snapshot; it loads into a database of that kind only (use restore from a JSON backup to move between databases)",
            file.display(),
            manifest.snapshot.kind
        )));
    }
    let held = store.snapshot()?.inventory()?;
    if !replace && (held.analyses() > 0 || held.chunks > 0) {
        return Err(OpError::Refused(format!(
            "{} already holds {held}; pass --replace to load the snapshot over it",
            store.location()
        )));
    }
    store.native_load(file, &manifest.snapshot, tools)?;
    let after = store.snapshot()?.inventory()?;
    if after != manifest.snapshot.inventory {
        return Err(OpError::LoadedMismatch(format!(
            "the snapshot was loaded into {}, which now holds {after}, but the manifest says {}",
            store.location(),
            manifest.snapshot.inventory
        )));
    }
    let model_note = configured.and_then(|configured| {
        manifest
            .snapshot
            .embedding_models
            .iter()
            .find(|m| !configured.matches(&m.model, m.dimension))
            .map(|m| {
                format!(
                    "the snapshot's embeddings come from {} ({} dimensions, {} chunks) but goldset is configured for {configured}: \
                     set --embedder to match, or restore the JSON backup to re-embed",
                    m.model, m.dimension, m.chunks,
                )
            })
    });
    Ok(LoadSummary {
        file: file.to_owned(),
        manifest,
        model_note,
        elapsed: started.elapsed(),
    })
}

/// Checks a snapshot against its manifest without loading it.
pub fn verify_snapshot(file: &Path, tools: &NativeTools) -> Result<Report, OpError> {
    let mut report = Report::default();
    // A snapshot that is not there is an I/O error (exit 2, as for `load`), not a failed check.
    std::fs::metadata(file).map_err(OpError::io(file))?;
    let manifest = match read_manifest(file) {
        Ok(m) => m,
        Err(e) => {
            report.fail(Check::SnapshotManifest, e.to_string());
            return Ok(report);
        }
    };
    report.pass(
        Check::SnapshotManifest,
        format!(
            "{} snapshot by goldset {}, {}",
            manifest.snapshot.kind, manifest.goldset_version, manifest.snapshot.tool
        ),
    );
    let (bytes, sha256) = sha256_of(file).map_err(OpError::io(file))?;
    if bytes != manifest.bytes || sha256 != manifest.sha256 {
        report.fail(
            Check::SnapshotChecksum,
            format!(
                "{}: size {bytes} and SHA-256 {sha256}, manifest says {} and {}",
                file.display(),
                manifest.bytes,
                manifest.sha256
            ),
        );
        return Ok(report);
    }
    report.pass(
        Check::SnapshotChecksum,
        format!("{bytes} bytes, SHA-256 {}…", &sha256[..16]),
    );
    let counts_unknown = |report: &mut Report| {
        report.skip(
            Check::SnapshotCounts,
            format!(
                "counts of a PostgreSQL archive are known only by loading it; manifest: {}",
                manifest.snapshot.inventory
            ),
        )
    };
    match store::check_native(&manifest.snapshot.kind, file, tools) {
        NativeCheck::Readable {
            what,
            found: Some(found),
        } => {
            report.pass(Check::SnapshotReadable, what);
            if found.inventory != manifest.snapshot.inventory
                || found.embedding_models != manifest.snapshot.embedding_models
            {
                report.fail(
                    Check::SnapshotCounts,
                    format!(
                        "holds {}, manifest says {}",
                        found.inventory, manifest.snapshot.inventory
                    ),
                );
            } else {
                report.pass(
                    Check::SnapshotCounts,
                    manifest.snapshot.inventory.to_string(),
                );
            }
        }
        NativeCheck::Readable { what, found: None } => {
            report.pass(Check::SnapshotReadable, what);
            counts_unknown(&mut report);
        }
        NativeCheck::Unreadable(why) => {
            report.fail(Check::SnapshotReadable, why);
            if manifest.snapshot.kind != "sqlite" {
                counts_unknown(&mut report);
            }
        }
        NativeCheck::Unchecked(why) => {
            report.skip(Check::SnapshotReadable, why);
            counts_unknown(&mut report);
        }
    }
    Ok(report)
}
