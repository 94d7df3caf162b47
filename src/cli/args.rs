//! Argument groups that several subcommands share, each defined once and `#[command(flatten)]`ed
//! where it applies. A subcommand may reword a flag's help with `#[command(mut_arg(...))]`; the
//! name, type and default stay here.

use clap::Args;
use goldset::format::validate::UrlPolicy;
use goldset::format::DEFAULT_BACKUP_PATH;
use goldset::model::StatusFilter;
use goldset::ops::snapshot::{manifest_path, DEFAULT_SNAPSHOT_PATH};
use goldset::ops::OpError;
use goldset::store::NativeTools;
use std::path::PathBuf;

/// `-` as a file name: stdin for a command that reads, stdout for one that writes (as pg_dump
/// and restic take it).
pub const STDIO: &str = "-";

/// What a command reading `-` opens; messages name it.
#[cfg(unix)]
pub const STDIN_PATH: &str = "/dev/stdin";

/// `--file`: the JSON backup file.
#[derive(Debug, Args)]
pub struct BackupFile {
    /// The backup file.
    #[arg(long, short, default_value = DEFAULT_BACKUP_PATH)]
    pub file: PathBuf,
}

impl BackupFile {
    /// Whether the file is `-`.
    pub fn is_stdio(&self) -> bool {
        self.file.as_os_str() == STDIO
    }

    /// The file to read: `-` is stdin; another file must exist now, before the command opens
    /// (or creates) a database or builds an embedder.
    pub fn input(&self) -> Result<PathBuf, OpError> {
        if self.is_stdio() {
            return stdin_path();
        }
        // Looked at, not opened: opening a FIFO would wait for its writer (and close on it).
        std::fs::metadata(&self.file).map_err(OpError::io(&self.file))?;
        Ok(self.file.clone())
    }
}

/// The path that reads stdin.
fn stdin_path() -> Result<PathBuf, OpError> {
    #[cfg(unix)]
    return Ok(PathBuf::from(STDIN_PATH));
    #[cfg(not(unix))]
    return Err(OpError::Refused(
        "reading a backup from stdin (`-`) needs a Unix system; give a file".into(),
    ));
}

/// `--metadata-file`: the metadata file that goes with a backup.
#[derive(Debug, Args)]
pub struct MetadataFile {
    /// The metadata file to check [default: beside the backup, if present].
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
}

/// `--file`: a native snapshot (its manifest beside it).
#[derive(Debug, Args)]
pub struct SnapshotFile {
    /// The snapshot file.
    #[arg(long, short, default_value = DEFAULT_SNAPSHOT_PATH)]
    pub file: PathBuf,
}

impl SnapshotFile {
    /// Checks that the snapshot and its manifest are there, before a database is opened or
    /// created for them.
    pub fn check_present(&self) -> Result<(), OpError> {
        std::fs::metadata(&self.file).map_err(OpError::io(&self.file))?;
        let manifest = manifest_path(&self.file);
        std::fs::metadata(&manifest).map_err(OpError::io(&manifest))?;
        Ok(())
    }
}

/// `--status`: which analyses a backup covers.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Statuses to include (repeat or separate with commas); `all` for every analysis.
    #[arg(long, value_delimiter = ',', default_value = "completed")]
    status: Vec<String>,
}

impl StatusArgs {
    /// The statuses as a filter (`all` anywhere means every status).
    pub fn filter(&self) -> StatusFilter {
        if self.status.iter().any(|s| s == "all") {
            StatusFilter::All
        } else {
            StatusFilter::Only(self.status.clone())
        }
    }
}

/// `--no-cache`: embed with the model, not from the embedding cache.
#[derive(Debug, Args)]
pub struct CacheUse {
    /// Embed every chunk with the model, ignoring the embedding cache.
    #[arg(long)]
    no_cache: bool,
}

impl CacheUse {
    /// Whether the embedding cache may supply vectors.
    pub fn use_cache(&self) -> bool {
        !self.no_cache
    }
}

/// `--wait` / `--no-wait`: what a command that takes the database's write lock does when
/// another restore (or load, reembed, cache prune) holds it. The last one given wins.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// If another restore is running, wait for it (the default).
    #[arg(long, overrides_with = "no_wait")]
    wait: bool,
    /// If another restore is running, fail at once instead of waiting for it.
    #[arg(long, overrides_with = "wait")]
    no_wait: bool,
}

impl LockArgs {
    /// Whether to wait for the lock.
    pub fn wait(&self) -> bool {
        !self.no_wait
    }
}

/// Where the PostgreSQL client tools are.
#[derive(Debug, Args)]
pub struct ToolArgs {
    /// Folder with pg_dump and pg_restore (default: PATH).
    #[arg(long, env = "GOLDSET_PG_BIN", value_name = "DIR")]
    pg_bin: Option<PathBuf>,
}

impl ToolArgs {
    /// The tools as the store takes them.
    pub fn tools(&self) -> NativeTools {
        NativeTools {
            pg_bin: self.pg_bin.clone(),
        }
    }
}

/// The URL contract's deny lists.
#[derive(Debug, Args)]
pub struct UrlArgs {
    /// Also refuse URLs on this host and its subdomains (repeatable).
    #[arg(long = "deny-host", value_name = "HOST")]
    deny_hosts: Vec<String>,
    /// Also refuse URLs containing this word (repeatable).
    #[arg(long = "deny-word", value_name = "WORD")]
    deny_words: Vec<String>,
    /// Drop the default deny lists (placeholder, example.com/org/net, test.local, localhost).
    #[arg(long)]
    no_default_deny: bool,
}

impl UrlArgs {
    /// The deny lists: the defaults (unless dropped) plus those given.
    pub fn policy(&self) -> UrlPolicy {
        let mut policy = if self.no_default_deny {
            UrlPolicy {
                deny_hosts: Vec::new(),
                deny_words: Vec::new(),
            }
        } else {
            UrlPolicy::default()
        };
        policy.deny_hosts.extend(self.deny_hosts.iter().cloned());
        policy.deny_words.extend(self.deny_words.iter().cloned());
        policy
    }
}
