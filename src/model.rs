//! The golden dataset's records, independent of where they are stored or how they are written.
//!
//! These are *validated* values: ids are UUIDs, timestamps are instants. The backup file's raw
//! records live in [`crate::format::record`]; [`crate::format::validate`] turns one into the other.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use crate::timestamp::Timestamp;

/// One analysis of a source document: the unit a backup is made of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// Primary key.
    #[serde(serialize_with = "serialize_uuid")]
    pub id: Uuid,
    /// The analysed document.
    pub url: String,
    /// Kind of document (`documentation`, `paper`, …); free text.
    pub content_type: String,
    /// Pipeline status (`completed`, `pending`, …); only `completed` is backed up by default.
    pub status: String,
    /// When the analysis was made.
    pub created_at: Timestamp,
    /// Findings, in their stored order.
    pub findings: Vec<Finding>,
    /// Chunks, ordered by `chunk_index` (0..n-1).
    pub chunks: Vec<Chunk>,
    /// At most one artifact.
    pub artifact: Option<Artifact>,
}

/// One finding an agent made about an analysis. Stored as JSON inside the analysis row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// The agent that produced it.
    pub agent: String,
    /// Its category (`insight`, `risk`, …).
    pub category: String,
    /// The finding itself.
    pub content: String,
    /// Confidence, within 0..=1.
    pub confidence: f64,
    /// Free-form metadata. `None` (absent) and `Some({})` are different and both preserved.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::format::record::unique_map_opt"
    )]
    pub metadata: Option<Map<String, Value>>,
}

/// One ordered piece of an analysed document; the unit that gets an embedding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chunk {
    /// Primary key.
    #[serde(serialize_with = "serialize_uuid")]
    pub id: Uuid,
    /// The text that is embedded.
    pub content: String,
    /// Title of the section the chunk comes from.
    pub section_title: Option<String>,
    /// Path of that section (`Guide > Setup`).
    pub section_path: Option<String>,
    /// Kind of content (`text`, `code`, …).
    pub content_type: String,
    /// Position within the analysis, 0..n-1.
    pub chunk_index: i64,
}

/// The summary produced for an analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Artifact {
    /// Primary key.
    #[serde(serialize_with = "serialize_uuid")]
    pub id: Uuid,
    /// Prose summary (may be null).
    pub summary: Option<String>,
    /// A JSON array (usually of strings).
    pub key_findings: Vec<Value>,
    /// A free-form JSON object.
    pub metadata: Map<String, Value>,
}

/// Record counts, as written in a backup's `metadata` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Number of analyses.
    pub total_analyses: u64,
    /// Number of chunks.
    pub total_chunks: u64,
    /// Number of artifacts.
    pub total_artifacts: u64,
}

impl Counts {
    /// Adds one analysis and its children.
    pub fn add(&mut self, analysis: &Analysis) {
        self.total_analyses += 1;
        self.total_chunks += analysis.chunks.len() as u64;
        self.total_artifacts += u64::from(analysis.artifact.is_some());
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} analyses, {} chunks, {} artifacts",
            self.total_analyses, self.total_chunks, self.total_artifacts
        )
    }
}

/// Which analyses a backup covers, by status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusFilter {
    /// Every analysis.
    All,
    /// Analyses whose status is one of these.
    Only(Vec<String>),
}

impl StatusFilter {
    /// Whether an analysis with this status is covered.
    pub fn matches(&self, status: &str) -> bool {
        match self {
            StatusFilter::All => true,
            StatusFilter::Only(list) => list.iter().any(|s| s == status),
        }
    }
}

impl Default for StatusFilter {
    fn default() -> Self {
        StatusFilter::Only(vec!["completed".to_owned()])
    }
}

fn serialize_uuid<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
}
