//! The backup file, format "1.0": its raw records, a streaming reader, a streaming writer and
//! the validation rules. The specification is `docs/FORMAT.md`; this module is its reference
//! implementation.

pub mod queries;
pub mod reader;
pub mod record;
pub mod urls;
pub mod validate;
pub mod writer;

use crate::model::Counts;
use std::path::{Path, PathBuf};

/// The only format version this build reads and writes.
pub const FORMAT_VERSION: &str = "1.0";

/// Default path of the backup file.
pub const DEFAULT_BACKUP_PATH: &str = "data/golden_dataset_backup.json";

/// The metadata file that belongs beside `backup`: `X_backup.json` → `X_metadata.json`,
/// otherwise `X.json` → `X_metadata.json`.
pub fn metadata_path_for(backup: &Path) -> PathBuf {
    let name = backup.file_name().unwrap_or_default();
    #[cfg(unix)]
    {
        // On bytes, so that a name that is not UTF-8 keeps its bytes (no U+FFFD).
        use std::os::unix::ffi::OsStrExt;
        let bytes = name.as_bytes();
        let stem = bytes.strip_suffix(b".json").unwrap_or(bytes);
        let stem = stem.strip_suffix(b"_backup").unwrap_or(stem);
        let mut out = stem.to_vec();
        out.extend_from_slice(b"_metadata.json");
        backup.with_file_name(std::ffi::OsStr::from_bytes(&out))
    }
    #[cfg(not(unix))]
    {
        let name = name.to_string_lossy();
        let stem = name.strip_suffix(".json").unwrap_or(&name);
        let stem = stem.strip_suffix("_backup").unwrap_or(stem);
        backup.with_file_name(format!("{stem}_metadata.json"))
    }
}

/// Reads a metadata file (the `metadata` object alone). Only a regular file is read, and at
/// most 1 MiB of it: a device or FIFO named by mistake must not be read forever.
pub fn read_metadata_file(path: &Path) -> Result<Counts, String> {
    use std::io::Read;
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    // Looked at before opening: opening a FIFO waits for a writer.
    if !std::fs::metadata(path).map_err(|e| fail(&e))?.is_file() {
        return Err(fail(&"not a regular file"));
    }
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let mut text = String::new();
    file.take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|e| fail(&e))?;
    serde_json::from_str(&text).map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_path_follows_the_backup_name() {
        let p = |s: &str| metadata_path_for(Path::new(s));
        assert_eq!(
            p("data/golden_dataset_backup.json"),
            Path::new("data/golden_dataset_metadata.json")
        );
        assert_eq!(
            p("x/python_tiny_backup.json"),
            Path::new("x/python_tiny_metadata.json")
        );
        assert_eq!(p("sample.json"), Path::new("sample_metadata.json"));
    }

    #[cfg(unix)]
    #[test]
    fn metadata_path_keeps_bytes_that_are_not_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9_backup.json");
        assert_eq!(
            metadata_path_for(Path::new(name)).as_os_str().as_bytes(),
            b"caf\xe9_metadata.json"
        );
    }
}
