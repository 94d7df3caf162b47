//! Atomic file replacement: write a temp file in the target folder, fsync it, rename it over the
//! target, fsync the folder. A crash at any point leaves either the old file or the new one.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// A file being written that replaces `target` only on [`AtomicFile::commit`].
/// Dropped without commit, the temp file is removed and `target` is untouched.
pub struct AtomicFile {
    target: PathBuf,
    temp: NamedTempFile,
}

impl AtomicFile {
    /// Starts writing a replacement for `target` (its folder is created if missing).
    pub fn create(target: &Path) -> io::Result<Self> {
        let dir = folder_of(target);
        std::fs::create_dir_all(&dir)?;
        let temp = tempfile::Builder::new()
            .prefix(".goldset-")
            .suffix(".tmp")
            .tempfile_in(&dir)?;
        Ok(AtomicFile {
            target: target.to_owned(),
            temp,
        })
    }

    /// Where the temp file is (for tools that write to a path).
    pub fn path(&self) -> &Path {
        self.temp.path()
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
        self.temp.persist(&self.target).map_err(|e| e.error)?;
        sync_folder(&folder_of(&self.target))
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
