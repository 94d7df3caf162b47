//! The backup file, format "1.0": its raw records, a streaming reader, a streaming writer and
//! the validation rules. The specification is `docs/FORMAT.md`; this module is its reference
//! implementation.

pub mod reader;
pub mod record;
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
    let name = backup
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".json").unwrap_or(&name);
    let stem = stem.strip_suffix("_backup").unwrap_or(stem);
    backup.with_file_name(format!("{stem}_metadata.json"))
}

/// Reads a metadata file (the `metadata` object alone).
pub fn read_metadata_file(path: &Path) -> Result<Counts, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e))
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
}
