//! `log`: the history of a backup file tracked in git — one entry per commit with the counts it
//! held and what changed since the commit before, each version streamed from `git show`.

use super::diff::{diff, Side, Summary};
use super::OpError;
use crate::format::writer::BackupWriter;
use crate::model::Counts;
use crate::timestamp::Timestamp;
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One commit that touched the backup file.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// Full commit id.
    pub commit: String,
    /// Abbreviated commit id.
    pub short: String,
    /// Commit date (YYYY-MM-DD).
    pub date: String,
    /// First line of the commit message.
    pub subject: String,
    /// What the file held at this commit (zero if the commit deleted it).
    pub counts: Counts,
    /// Changes against the previous version (the first version: against nothing).
    pub changes: Summary,
}

fn git(dir: &Path, args: &[&str]) -> Result<String, OpError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // Untranslated messages, which `log` recognises.
        .env("LC_ALL", "C")
        .output()
        .map_err(cannot_run_git)?;
    if !out.status.success() {
        return Err(OpError::Tool {
            tool: format!("git {}", args.join(" ")),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cannot_run_git(e: std::io::Error) -> OpError {
    OpError::Tool {
        tool: "git".into(),
        reason: format!("cannot be run: {e}"),
    }
}

/// The history of `file`, newest first, at most `max` entries.
pub fn log(file: &Path, max: usize) -> Result<Vec<LogEntry>, OpError> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| OpError::Refused(format!("{} is not a file name", file.display())))?
        .to_string_lossy()
        .into_owned();
    // The folder first: git's own messages for these ("fatal: cannot change to …", "fatal:
    // not a git repository (or any of the parent directories): .git") say less.
    if !dir.is_dir() {
        return Err(OpError::Io {
            path: dir,
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    let prefix = match git(&dir, &["rev-parse", "--show-prefix"]) {
        Ok(prefix) => prefix.trim().to_owned(),
        Err(OpError::Tool { reason, .. }) if reason.contains("not a git repository") => {
            return Err(OpError::Refused(format!(
                "{} is not in a git repository: `goldset log` shows the history of a backup \
                 file committed to git",
                file.display()
            )))
        }
        Err(e) => return Err(e),
    };
    let path_in_repo = format!("{prefix}{name}");
    let count = (max + 1).to_string();
    let listing = git(
        &dir,
        &[
            "log",
            "--format=%H%x09%h%x09%ad%x09%s",
            "--date=short",
            "-n",
            &count,
            "--",
            &name,
        ],
    )?;
    let commits: Vec<Vec<String>> = listing
        .lines()
        .map(|l| l.splitn(4, '\t').map(str::to_owned).collect())
        .filter(|f: &Vec<String>| f.len() == 4)
        .collect();
    if commits.is_empty() {
        return Err(OpError::Refused(format!(
            "git has no history for {}",
            file.display()
        )));
    }
    let mut entries = Vec::new();
    for (i, c) in commits.iter().enumerate().take(max) {
        let old = commits.get(i + 1).map(|p| p[0].as_str());
        let d = diff(
            version(&dir, old, &path_in_repo)?,
            version(&dir, Some(&c[0]), &path_in_repo)?,
            0,
        )?;
        entries.push(LogEntry {
            commit: c[0].clone(),
            short: c[1].clone(),
            date: c[2].clone(),
            subject: c[3].clone(),
            counts: d.new_counts,
            changes: d.summary,
        });
    }
    Ok(entries)
}

/// The file as of `commit` (`None`, or a commit without the file: an empty backup).
fn version<'s>(dir: &Path, commit: Option<&str>, path: &str) -> Result<Side<'s>, OpError> {
    let spec = commit.map(|c| format!("{c}:{path}"));
    let present = spec
        .as_ref()
        .is_some_and(|s| git(dir, &["cat-file", "-e", s]).is_ok());
    let Some(spec) = spec.filter(|_| present) else {
        let empty = BackupWriter::new(
            Vec::new(),
            Timestamp::from_unix_micros(0),
            Counts::default(),
        )
        .and_then(|w| w.finish())
        .map_err(|e| OpError::Internal(format!("an empty backup: {e}")))?;
        return Ok(Side::Stream(
            "(no file)".into(),
            Box::new(std::io::Cursor::new(empty)),
        ));
    };
    let child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["show", &spec])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(cannot_run_git)?;
    Ok(Side::Stream(spec, Box::new(GitBlob(child))))
}

/// The output of a running `git show`; reaped when dropped.
struct GitBlob(Child);

impl Read for GitBlob {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.stdout.as_mut().expect("piped").read(buf)
    }
}

impl Drop for GitBlob {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
