//! Atomic file replacement: write a temp file in the target folder, fsync it, rename it over the
//! target, fsync the folder. A crash at any point leaves either the old file or the new one.
//!
//! Only regular files are replaced: a target that is a device, a FIFO, a socket or a folder is
//! refused (renaming over `/dev/null` would replace the node; reading a device to compare it
//! never ends). A symbolic link is followed: the file it points to is replaced, the link stays.
//!
//! Temp files are named `.goldset-PID-XXXXXX.tmp` and locked while written; a killed writer's
//! file (its process gone, its lock free) is removed by the next writer in that folder.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tempfile::NamedTempFile;

/// The prefix of every temp file goldset writes beside a target (`.gitignore`: `.goldset-*`).
pub const TEMP_PREFIX: &str = ".goldset-";

/// A file being written that replaces `target` only on [`AtomicFile::commit`].
/// Dropped without commit, the temp file is removed and `target` is untouched.
pub struct AtomicFile {
    target: PathBuf,
    temp: NamedTempFile,
}

impl AtomicFile {
    /// Starts writing a replacement for `target` (its folder is created if missing). Refuses a
    /// target that exists and is not a regular file (or a link to one).
    pub fn create(target: &Path) -> io::Result<Self> {
        let target = writable_target(target)?;
        let dir = folder_of(&target);
        std::fs::create_dir_all(&dir)?;
        let temp = temp_file_in(&dir, "", ".tmp")?;
        Ok(AtomicFile { target, temp })
    }

    /// Where the temp file is (for tools that write to a path).
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// The file that will be replaced (a symbolic link's target, resolved).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The temp file, to write to and read back.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Flushes the data to disk and renames the temp file over the target.
    pub fn commit(self) -> io::Result<()> {
        let file = self.temp.as_file();
        file.sync_all()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Keep the mode of the file being replaced; a new file gets the usual 0644.
            let mode = std::fs::metadata(&self.target)
                .map(|m| m.permissions().mode())
                .unwrap_or(0o644);
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        // The target may have become something else since `create` (checked again, closely).
        writable_target(&self.target)?;
        self.temp.persist(&self.target).map_err(|e| e.error)?;
        sync_folder(&folder_of(&self.target))
    }
}

/// The path to replace for `target`: itself when absent or a regular file, the file a symbolic
/// link points to; an error naming what it is otherwise.
pub fn writable_target(target: &Path) -> io::Result<PathBuf> {
    let meta = match std::fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(target.to_owned()),
        Err(e) => return Err(e),
    };
    let (path, meta) = if meta.file_type().is_symlink() {
        let resolved = std::fs::canonicalize(target).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("a symbolic link that cannot be followed ({e}); refusing to replace it"),
            )
        })?;
        let meta = std::fs::metadata(&resolved)?;
        (resolved, meta)
    } else {
        (target.to_owned(), meta)
    };
    if meta.is_file() {
        return Ok(path);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{}is {}, not a regular file; goldset writes only regular files and refuses to replace it",
            if path == target {
                String::new()
            } else {
                format!("links to {}, which ", path.display())
            },
            kind_of(&meta)
        ),
    ))
}

/// Opens `path` for reading only if it is a regular file (a device or FIFO could be read forever).
pub fn open_regular(path: &Path) -> io::Result<File> {
    // Looked at before opening: opening a FIFO waits for a writer.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {}, not a regular file", kind_of(&meta)),
        ));
    }
    File::open(path)
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// A locked temp file `.goldset-{kind}PID-XXXXXX{suffix}` in `dir`, after removing the stale
/// ones killed writers left there.
pub fn temp_file_in(dir: &Path, kind: &str, suffix: &str) -> io::Result<NamedTempFile> {
    remove_stale_temp_files(dir);
    let temp = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{kind}{}-", std::process::id()))
        .suffix(suffix)
        .tempfile_in(dir)?;
    // Held until the file is closed (renamed or removed): tells other goldsets it is in use.
    let _ = temp.as_file().try_lock();
    Ok(temp)
}

/// A temp file of a writer that no longer runs: its process is gone and nobody holds its lock.
/// Files of goldset versions that put no pid in the name count after a day untouched.
const UNNAMED_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Removes the temp files (and SQLite journals of temp files) that killed goldset processes left
/// in `dir`. Best effort: what cannot be inspected is left alone.
pub fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
            continue;
        };
        if !(rest.ends_with(".tmp") || rest.ends_with(".tmp-journal") || rest.starts_with("load-"))
        {
            continue;
        }
        let rest = rest.strip_prefix("load-").unwrap_or(rest);
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let owner_gone = match pid {
            Some(pid) if pid == std::process::id() => false,
            Some(pid) => !process_alive(pid),
            None => meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age > UNNAMED_STALE_AFTER),
        };
        if !owner_gone {
            continue;
        }
        // A free lock: no goldset has the file open (another pid namespace, a reused pid).
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() {
            tracing::info!(path = %path.display(), "removing a stale temp file");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Whether a process with this id runs (on Linux, from `/proc`; elsewhere assumed).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn sync_folder(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `target` atomically.
pub fn write_file(target: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = AtomicFile::create(target)?;
    f.file().write_all(bytes)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temp_files_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // pid 4194304 is above Linux's pid_max limit: never a live process.
        let dead = dir.path().join(".goldset-4194304-abc123.tmp");
        let dead_journal = dir.path().join(".goldset-4194304-abc123.tmp-journal");
        let dead_load = dir.path().join(".goldset-load-4194304-xyz.tmp");
        let live = dir
            .path()
            .join(format!(".goldset-{}-keep.tmp", std::process::id()));
        let other = dir.path().join(".goldset-notes.txt");
        for p in [&dead, &dead_journal, &dead_load, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        // A dead pid whose file is still locked (another namespace): kept.
        let locked = dir.path().join(".goldset-4194303-lock.tmp");
        std::fs::write(&locked, b"x").unwrap();
        let holder = File::open(&locked).unwrap();
        holder.lock().unwrap();

        remove_stale_temp_files(dir.path());
        if cfg!(target_os = "linux") {
            assert!(!dead.exists() && !dead_journal.exists() && !dead_load.exists());
        }
        assert!(live.exists() && other.exists() && locked.exists());
    }

    #[test]
    fn only_regular_files_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.json");
        assert_eq!(writable_target(&file).unwrap(), file);
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(writable_target(&file).unwrap(), file);
        let e = writable_target(dir.path()).unwrap_err();
        assert!(e.to_string().contains("a folder"), "{e}");
        #[cfg(unix)]
        {
            let e = writable_target(Path::new("/dev/null")).unwrap_err();
            assert!(e.to_string().contains("a character device"), "{e}");
            let link = dir.path().join("link.json");
            std::os::unix::fs::symlink(&file, &link).unwrap();
            let resolved = writable_target(&link).unwrap();
            assert_eq!(resolved, std::fs::canonicalize(&file).unwrap());
            let dangling = dir.path().join("dangling.json");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
            assert!(writable_target(&dangling).is_err());
        }
    }
}
