//! The configuration file: defaults for the global options, below flags and environment
//! variables (flag > environment > file > built-in default).
//!
//! `--config PATH` (or `GOLDSET_CONFIG`) names it; otherwise `goldset.toml` in the current
//! folder is read when it exists. Unknown keys are refused, with the line and column.
//!
//! ```toml
//! database_url = "postgres://goldset@db.internal/golden"   # passwords: use PGPASSWORD
//! schema = "golden"
//! embedder = "local:sentence-transformers/all-MiniLM-L6-v2"
//! openai_base_url = "http://gpu-box:8080/v1"               # keys: OPENAI_API_KEY, never here
//!
//! [mapping]            # an application's tables (see `goldset adopt`)
//! ```

use goldset::ops::OpError;
use goldset::store::layout::Layout;
use std::path::{Path, PathBuf};

/// The file read when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "goldset.toml";

/// What a configuration file may set.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Like `--database-url`.
    pub database_url: Option<String>,
    /// Like `--schema`.
    pub schema: Option<String>,
    /// Like `--embedder`.
    pub embedder: Option<String>,
    /// Like `--openai-base-url`.
    pub openai_base_url: Option<String>,
    /// An application's tables to work on in place (`goldset adopt` writes it).
    pub mapping: Option<Layout>,
}

/// Reads the configuration: the file named (which must exist), else `goldset.toml` if present,
/// else nothing.
pub fn load(named: Option<&Path>) -> Result<Config, OpError> {
    let path: PathBuf = match named {
        Some(p) => p.to_owned(),
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => DEFAULT_CONFIG_FILE.into(),
        None => return Ok(Config::default()),
    };
    let text = std::fs::read_to_string(&path).map_err(OpError::io(&path))?;
    let config: Config = toml::from_str(&text).map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(":{line}:{column}")
            })
            .unwrap_or_default();
        OpError::Refused(format!(
            "{}{at}: invalid configuration: {}",
            path.display(),
            e.message()
        ))
    })?;
    if let Some(mapping) = &config.mapping {
        mapping
            .validate()
            .map_err(|e| OpError::Refused(format!("{}: {e}", path.display())))?;
    }
    Ok(config)
}
