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
    /// The operation refuses to go on; the text says why and what to do. Nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// A native load committed, but the database then disagrees with the snapshot's manifest:
    /// unlike every other error, the database *was* changed.
    #[error("{0}")]
    LoadedMismatch(String),
}

impl OpError {
    /// The process exit code: 1 when the data is at fault, 2 for usage, I/O and database errors.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpError::Invalid { .. }
            | OpError::Unbackupable { .. }
            | OpError::Conflicts { .. }
            | OpError::LoadedMismatch(_) => 1,
            OpError::Store(e) if e.is_bad_data() => 1,
            _ => 2,
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
