//! The operations — backup, restore, verify — written against the [`Store`](crate::store::Store)
//! and [`Embedder`](crate::embed::Embedder) traits only. They report progress through
//! [`Progress`] and return summaries; rendering is the CLI's job.

pub mod adopt;
pub mod apply;
pub mod atomic;
pub mod backup;
pub mod cache;
pub mod diff;
pub mod embedding;
pub mod eval;
pub mod history;
pub mod reembed;
pub mod restore;
pub mod snapshot;
pub mod verify;

use crate::embed::EmbedError;
use crate::report::Report;
use crate::store::{Existing, StoreError};
use std::path::PathBuf;

/// Receives progress of long work. Implementations must be cheap: it is called per record.
pub trait Progress: Sync {
    /// Work of `total` units (`unit` names them) begins.
    fn start(&self, message: &str, total: u64, unit: Unit);
    /// `done` units are done so far.
    fn set(&self, done: u64);
    /// The work is over.
    fn finish(&self);
}

/// What progress counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of a file.
    Bytes,
    /// Records.
    Records,
    /// Chunks (shown with a rate, chunks/s).
    Chunks,
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64, _: Unit) {}
    fn set(&self, _: u64) {}
    fn finish(&self) {}
}

/// Why an operation did not complete. Nothing was changed unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The embedder failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The backup file is invalid; the report says where and why.
    #[error("{} is invalid; nothing was changed", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        report: Box<Report>,
    },
    /// The database holds records that a backup cannot hold (they break FORMAT.md's rules, so
    /// `verify` and `restore` would refuse the file); the report names each. Nothing was written.
    #[error("the database holds records that break the backup format's rules; {} was not written (left as it was)", path.display())]
    Unbackupable {
        /// The backup file that was not written.
        path: PathBuf,
        /// Every problem found.
        report: Box<Report>,
    },
    /// Records of the file already exist in the database (`--on-conflict fail`).
    #[error("{count} records of the backup already exist in the database; nothing was changed")]
    Conflicts {
        /// How many.
        count: u64,
        /// The first of them.
        examples: Vec<Existing>,
    },
    /// The operation refuses to go on (a policy, not a failure); the text says why and what to
    /// do. Nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// An external tool (`git`) is missing or failed.
    #[error("{tool}: {reason}")]
    Tool {
        /// The tool, as it was run.
        tool: String,
        /// What went wrong (the tool's own message where it gave one).
        reason: String,
    },
    /// A snapshot's manifest is not one goldset can read.
    #[error("{}: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// One side of a diff (a file, or a version of it from git) is not a valid backup.
    #[error("{name} is not a valid backup ({reason}); run `goldset verify --file-only` on it")]
    NotABackup {
        /// The side, as named on the command line (or `commit:path`).
        name: String,
        /// The first problem found.
        reason: String,
    },
    /// The embedder broke its contract: not one vector of its dimension for every text.
    #[error("embedder {model} returned {reason}")]
    EmbedderContract {
        /// The embedder's model id.
        model: String,
        /// What came back instead.
        reason: String,
    },
    /// A bug, or a worker thread that died: goldset itself is at fault. Nothing was changed.
    #[error("internal error: {0}")]
    Internal(String),
    /// A native load committed, but the database then disagrees with the snapshot's manifest:
    /// unlike every other error, the database *was* changed.
    #[error("{0}")]
    LoadedMismatch(String),
}

impl OpError {
    /// The process exit code: 1 when the data is at fault, 2 for usage, I/O, database, tool
    /// and embedder errors. An unreadable diff side or snapshot manifest is 2 as well: for
    /// `diff` 1 means "they differ", and `load` refuses a snapshot that fails its manifest with 2.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpError::Invalid { .. }
            | OpError::Unbackupable { .. }
            | OpError::Conflicts { .. }
            | OpError::LoadedMismatch(_) => 1,
            OpError::Store(e) if e.is_bad_data() => 1,
            OpError::Store(_)
            | OpError::Embed(_)
            | OpError::Io { .. }
            | OpError::Refused(_)
            | OpError::Tool { .. }
            | OpError::Manifest { .. }
            | OpError::NotABackup { .. }
            | OpError::EmbedderContract { .. }
            | OpError::Internal(_) => 2,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OpError {
        let path = path.into();
        move |source| OpError::Io { path, source }
    }
}

pub(crate) fn serialize_seconds<S: serde::Serializer>(
    d: &std::time::Duration,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    /// ARCHITECTURE.md's rule: operations see the `Store` trait only, never a concrete store.
    #[test]
    fn operations_do_not_reach_into_a_concrete_store() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ops");
        let mut folders = vec![root];
        let mut files = 0;
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                files += 1;
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or_default();
                    // Spelled in parts, so that this file does not match itself.
                    for store in ["sqlite", "postgres"] {
                        let concrete = format!("{store}::");
                        assert!(
                            !code.contains(&concrete),
                            "{}:{}: `{concrete}` in ops: {line}",
                            path.display(),
                            n + 1
                        );
                    }
                }
            }
        }
        assert!(files >= 10, "read {files} files of src/ops");
    }
}
