//! Why a store operation failed: one variant per kind of failure, so that messages and exit codes
//! follow the failure (a stored row goldset cannot read is bad data; a refused connection is not).

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not understood.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with any password removed.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The database server could not be reached or refused the login.
    #[error("cannot connect to {location}: {reason}")]
    Connect {
        /// Where (never with a password).
        location: String,
        /// The server's or the network's answer.
        reason: String,
    },
    /// SQLite reported an error.
    #[error("sqlite: {}", describe_sqlite(.0))]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error (connection parameters are never part of the message).
    #[cfg(feature = "postgres")]
    #[error("postgres: {}", super::postgres::describe(.0))]
    Postgres(#[from] ::postgres::Error),
    /// The operation would lose or mix up data; the text says why and what to do. Nothing was
    /// changed.
    #[error("{0}")]
    Refused(String),
    /// Another restore holds the database's write lock (`--no-wait`).
    #[error("{0}")]
    Locked(String),
    /// A stored row holds a value goldset cannot read back (or would refuse in a backup).
    #[error("{table} row {row}: column {column}: {reason}")]
    BadRow {
        /// The table.
        table: String,
        /// The row's id (`?` when the id itself is unreadable).
        row: String,
        /// The column.
        column: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A database file or archive is damaged.
    #[error("{0}")]
    Corrupt(String),
    /// The database does not exist (and the command does not create one).
    #[error("{0}")]
    Missing(String),
    /// The schema is newer than this build, or otherwise unusable.
    #[error("schema: {0}")]
    Schema(String),
    /// An external tool (`pg_dump`, `pg_restore`) is missing, too old, or failed.
    #[error("{tool}: {reason}")]
    Tool {
        /// The tool, as it was run.
        tool: String,
        /// What went wrong.
        reason: String,
    },
    /// The caller's callback stopped the iteration (its own error says why).
    #[error("stopped by the caller")]
    Stopped,
    /// A value could not be encoded for the database.
    #[error("cannot encode column {column}: {reason}")]
    Encode {
        /// The column.
        column: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A file the store reads or writes (a snapshot, a copy beside the database) failed.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A temporary file the store writes through failed.
    #[error("temporary file: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// Whether the stored data is at fault (exit 1), rather than the environment (exit 2).
    pub fn is_bad_data(&self) -> bool {
        matches!(self, StoreError::BadRow { .. })
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn file(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::File { path, source }
    }

    /// A stored value that cannot be read back.
    pub fn bad_row(
        table: &str,
        row: impl std::fmt::Display,
        column: &str,
        reason: impl std::fmt::Display,
    ) -> StoreError {
        StoreError::BadRow {
            table: table.to_owned(),
            row: row.to_string(),
            column: column.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// What is wrong with a stored JSON value, and where in it (`[0].confidence: invalid type …`).
pub(crate) fn json_problem<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> String {
    match e.path().to_string().as_str() {
        "." => format!("unexpected JSON: {}", e.inner()),
        path => format!("unexpected JSON at {path}: {}", e.inner()),
    }
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// SQLite's message, with the likely cause where its own words ("disk I/O error") hide it: a
/// write that failed for space (`ENOSPC` is reported as "database or disk is full", but a
/// file-size limit, `EFBIG`, as an I/O error).
fn describe_sqlite(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::SystemIoFailure) => format!(
            "{e} (reading or writing the database file failed: is the disk full, or a file-size limit reached?)"
        ),
        _ => e.to_string(),
    }
}
