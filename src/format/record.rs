//! Records exactly as they appear in a backup file, before validation.
//!
//! Ids and timestamps are kept as text here so that the validator can report every bad one with
//! its position instead of stopping at the first. Unknown fields are refused (never dropped):
//! the error names the field and its position.

use crate::model::Finding;
use serde::Deserialize;
use serde_json::{Map, Value};

/// An analysis as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    pub id: String,
    pub url: String,
    pub content_type: String,
    pub status: String,
    pub created_at: String,
    pub findings: Vec<Finding>,
    pub chunks: Vec<RawChunk>,
    /// Required, may be `null`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub artifact: Option<RawArtifact>,
}

/// A chunk as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChunk {
    pub id: String,
    pub content: String,
    /// Required, may be `null`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub section_title: Option<String>,
    /// Required, may be `null`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub section_path: Option<String>,
    pub content_type: String,
    pub chunk_index: i64,
}

/// An artifact as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArtifact {
    pub id: String,
    /// Required, may be `null`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub summary: Option<String>,
    pub key_findings: Vec<Value>,
    pub metadata: Map<String, Value>,
}
