//! Where goldset's records live: the tables and columns of analyses, findings, chunks and
//! artifacts, and how ids, times, JSON, statuses and embeddings are stored in them.
//!
//! goldset's own schema is one layout ([`Layout::own`]); an application's tables are another,
//! given as `[mapping]` in `goldset.toml` (written by `goldset adopt`). Every statement a store
//! issues to read the dataset is built from the layout, so one code path serves both. What a
//! layout *allows* travels with it ([`Layout::owned`]): goldset's own tables may be created,
//! bulk-loaded and retyped; an application's are never altered — row-level writes only.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::timestamp::Timestamp;
pub use crate::timestamp::WallClock;

/// How an id column holds a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdEncoding {
    /// PostgreSQL `uuid`.
    Uuid,
    /// Text, lower-case with hyphens (`550e8400-e29b-41d4-a716-446655440000`).
    Text,
    /// Text, 32 lower-case hex digits without hyphens (SQLAlchemy's `Uuid` on SQLite).
    Hex32,
}

impl IdEncoding {
    /// The text of `id` as a column of this encoding holds it (a `uuid` column takes the
    /// hyphenated form too).
    pub fn text(self, id: &uuid::Uuid) -> String {
        match self {
            IdEncoding::Hex32 => id.simple().to_string(),
            _ => id.hyphenated().to_string(),
        }
    }
}

/// Checks that an id stored as text is written exactly as `encoding` writes `id` (trailing
/// blanks of a fixed-width column aside): goldset finds, compares and deletes rows by that
/// text, so another form (upper case, hyphens in a 32-hex column) would be missed.
pub fn canonical(text: &str, id: &uuid::Uuid, encoding: IdEncoding) -> Result<(), String> {
    let expected = encoding.text(id);
    if text.trim_end() == expected {
        return Ok(());
    }
    let name = match encoding {
        IdEncoding::Uuid => "uuid",
        IdEncoding::Text => "text",
        IdEncoding::Hex32 => "hex32",
    };
    Err(format!(
        "{text:?} is not written as the mapping's ids = \"{name}\" writes it ({expected:?}); fix the row or the mapping"
    ))
}

/// How a time column holds an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeEncoding {
    /// PostgreSQL `timestamptz`.
    Timestamptz,
    /// PostgreSQL `timestamp` without time zone: wall-clock time in the mapping's `time_zone`
    /// (UTC unless it says otherwise).
    Timestamp,
    /// Text: `YYYY-MM-DD HH:MM:SS[.ffffff]` (SQLAlchemy on SQLite); without an offset, a
    /// wall-clock time in the mapping's `time_zone` (UTC unless it says otherwise).
    Text,
    /// An integer of microseconds since the Unix epoch (goldset's own SQLite schema).
    Micros,
}

/// How the embedding column holds a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmbeddingEncoding {
    /// pgvector `vector(N)`.
    #[serde(rename = "vector")]
    Vector,
    /// PostgreSQL `real[]`.
    #[serde(rename = "real[]")]
    RealArray,
    /// Little-endian `f32`s: PostgreSQL `bytea`, SQLite BLOB.
    #[serde(rename = "f32le")]
    F32Le,
    /// A JSON array of numbers as text (SQLite).
    #[serde(rename = "json")]
    Json,
}

/// The analyses table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysesTable {
    /// Table, optionally schema-qualified (`app.documents`).
    pub table: String,
    /// Primary key.
    pub id: String,
    /// The analysed document's URL.
    pub url: String,
    /// Kind of document.
    pub content_type: String,
    /// Pipeline status (translated by [`Layout::status`]).
    pub status: String,
    /// When the analysis was made.
    pub created_at: String,
    /// A JSON list of findings on the row; absent when findings are a table ([`Layout::findings`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<String>,
}

/// Findings as rows of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingsTable {
    /// Table.
    pub table: String,
    /// The analysis a finding belongs to.
    pub analysis_id: String,
    /// The order of the findings within their analysis.
    pub position: String,
    /// Finding fields.
    pub agent: String,
    /// Category.
    pub category: String,
    /// The finding's text.
    pub content: String,
    /// Confidence, 0..=1.
    pub confidence: String,
    /// A JSON object of metadata (absent in the file when the column is NULL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// The chunks table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunksTable {
    /// Table.
    pub table: String,
    /// Primary key.
    pub id: String,
    /// The analysis a chunk belongs to.
    pub analysis_id: String,
    /// Position within the analysis.
    pub chunk_index: String,
    /// The text that is embedded.
    pub content: String,
    /// Section title (nullable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_title: Option<String>,
    /// Section path (nullable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_path: Option<String>,
    /// Kind of content.
    pub content_type: String,
    /// The embedding.
    pub embedding: String,
    /// The id of the model that made the embedding, where the application keeps one; otherwise
    /// goldset records it in a table of its own ([`Layout::goldset_schema`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
    /// The SHA-256 of the text each embedding was made from, in a column of the table (goldset's
    /// own `embedding_sha256`); an application's tables have none, and goldset records it
    /// beside the model instead. Not part of a mapping file.
    #[serde(skip)]
    pub embedding_sha256: Option<String>,
}

/// The artifacts table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsTable {
    /// Table.
    pub table: String,
    /// Primary key.
    pub id: String,
    /// The analysis (one artifact at most per analysis).
    pub analysis_id: String,
    /// Summary (nullable).
    pub summary: String,
    /// A JSON list.
    pub key_findings: String,
    /// A JSON object.
    pub metadata: String,
}

/// Where goldset's records live and how they are stored: `[mapping]` in goldset.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// How ids are stored.
    pub ids: IdEncoding,
    /// How `created_at` is stored.
    pub timestamps: TimeEncoding,
    /// The time zone of wall-clock times in a column without offsets (`timestamp`, naive
    /// text): an IANA name; UTC when absent.
    #[serde(default, skip_serializing_if = "WallClock::is_utc")]
    pub time_zone: WallClock,
    /// How embeddings are stored.
    pub embedding: EmbeddingEncoding,
    /// PostgreSQL schema for goldset's own bookkeeping beside an application's tables (the
    /// model of each embedding, the embedding cache); created by the first writing command,
    /// never by a reading one. Default `goldset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goldset_schema: Option<String>,
    /// The analyses.
    pub analyses: AnalysesTable,
    /// Findings as a table of their own (else a JSON column of analyses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<FindingsTable>,
    /// The chunks.
    pub chunks: ChunksTable,
    /// The artifacts (none: analyses never have one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<ArtifactsTable>,
    /// goldset's status words and the application's for the same state (`completed = "done"`);
    /// words not listed are the same in both.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status: BTreeMap<String, String>,
    /// Values for NOT NULL columns outside the mapping that have no default, per table
    /// (`[mapping.fill."app.documents"] owner = "golden-set"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fill: BTreeMap<String, BTreeMap<String, String>>,
    /// True for goldset's own schema only (never read from a file).
    #[serde(skip)]
    pub owned: bool,
}

impl FindingsTable {
    /// The mapped columns, in the order rows are written.
    pub fn columns(&self) -> Vec<&str> {
        let mut columns = vec![
            self.analysis_id.as_str(),
            &self.position,
            &self.agent,
            &self.category,
            &self.content,
            &self.confidence,
        ];
        columns.extend(self.metadata.as_deref());
        columns
    }
}

impl ArtifactsTable {
    /// The mapped columns, in the order rows are written.
    pub fn columns(&self) -> Vec<&str> {
        vec![
            self.id.as_str(),
            &self.analysis_id,
            &self.summary,
            &self.key_findings,
            &self.metadata,
        ]
    }
}

/// Why a mapping cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mapping: {0}")]
pub struct LayoutError(pub String);

impl Layout {
    /// goldset's own tables (in `schema` on PostgreSQL; `None` on SQLite).
    pub fn own(schema: Option<&str>) -> Layout {
        let table = |t: &str| match schema {
            Some(s) => format!("{s}.{t}"),
            None => t.to_owned(),
        };
        Layout {
            ids: if schema.is_some() {
                IdEncoding::Uuid
            } else {
                IdEncoding::Text
            },
            timestamps: if schema.is_some() {
                TimeEncoding::Timestamptz
            } else {
                TimeEncoding::Micros
            },
            time_zone: WallClock::utc(),
            embedding: if schema.is_some() {
                EmbeddingEncoding::Vector
            } else {
                EmbeddingEncoding::F32Le
            },
            goldset_schema: schema.map(str::to_owned),
            analyses: AnalysesTable {
                table: table("analyses"),
                id: "id".into(),
                url: "url".into(),
                content_type: "content_type".into(),
                status: "status".into(),
                created_at: "created_at".into(),
                findings: Some("findings".into()),
            },
            findings: None,
            chunks: ChunksTable {
                table: table("chunks"),
                id: "id".into(),
                analysis_id: "analysis_id".into(),
                chunk_index: "chunk_index".into(),
                content: "content".into(),
                section_title: Some("section_title".into()),
                section_path: Some("section_path".into()),
                content_type: "content_type".into(),
                embedding: "embedding".into(),
                embedding_model: Some("embedding_model".into()),
                embedding_sha256: Some("embedding_sha256".into()),
            },
            artifacts: Some(ArtifactsTable {
                table: table("artifacts"),
                id: "id".into(),
                analysis_id: "analysis_id".into(),
                summary: "summary".into(),
                key_findings: "key_findings".into(),
                metadata: "metadata".into(),
            }),
            status: BTreeMap::new(),
            fill: BTreeMap::new(),
            owned: true,
        }
    }

    /// Instant `t` as text for the time column: RFC 3339 where the column keeps instants,
    /// else the wall-clock time in the mapping's zone (`YYYY-MM-DD HH:MM:SS.ffffff`, what
    /// SQLAlchemy writes for a naive datetime).
    pub fn time_text(&self, t: Timestamp) -> String {
        match self.timestamps {
            TimeEncoding::Timestamptz | TimeEncoding::Micros => t.to_string(),
            TimeEncoding::Timestamp | TimeEncoding::Text => {
                self.time_zone.wall_of(t).naive_utc_text()
            }
        }
    }

    /// Checks what can be checked without a database: findings in exactly one place, status
    /// words one-to-one, names that are plain identifiers.
    pub fn validate(&self) -> Result<(), LayoutError> {
        match (&self.analyses.findings, &self.findings) {
            (Some(_), Some(_)) => {
                return Err(LayoutError(
                    "findings are both a column of analyses and a table: keep one".into(),
                ))
            }
            (None, None) => {
                return Err(LayoutError(
                    "findings have no place: set analyses.findings (a JSON column) or [mapping.findings] (a table)".into(),
                ))
            }
            _ => {}
        }
        let mut seen = BTreeMap::new();
        for (ours, theirs) in &self.status {
            if let Some(other) = seen.insert(theirs, ours) {
                return Err(LayoutError(format!(
                    "status: {other:?} and {ours:?} both map to {theirs:?}"
                )));
            }
        }
        for name in self.names() {
            let plain = |part: &str| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
            };
            if !name.split('.').all(plain) || name.split('.').count() > 2 {
                return Err(LayoutError(format!(
                    "{name:?} is not a table or column name goldset uses (letters, digits, _; schema.table)"
                )));
            }
        }
        Ok(())
    }

    /// Every table and column name of the layout.
    fn names(&self) -> Vec<&str> {
        let mut all = Vec::new();
        for (table, columns) in self.tables() {
            all.push(table);
            all.extend(columns);
        }
        all.extend(self.goldset_schema.as_deref());
        for (table, columns) in &self.fill {
            all.push(table);
            all.extend(columns.keys().map(String::as_str));
        }
        all
    }

    /// Each mapped table with the columns the mapping names in it.
    pub fn tables(&self) -> Vec<(&str, Vec<&str>)> {
        let mut all = vec![
            (self.analyses.table.as_str(), self.analysis_columns()),
            (self.chunks.table.as_str(), self.chunk_columns()),
        ];
        if let Some(f) = &self.findings {
            all.push((f.table.as_str(), f.columns()));
        }
        if let Some(r) = &self.artifacts {
            all.push((r.table.as_str(), r.columns()));
        }
        all
    }

    /// The mapped columns of analyses, in the order rows are written: id, url, content type,
    /// status, time, then the JSON findings column where findings live there.
    pub fn analysis_columns(&self) -> Vec<&str> {
        let a = &self.analyses;
        let mut columns = vec![
            a.id.as_str(),
            &a.url,
            &a.content_type,
            &a.status,
            &a.created_at,
        ];
        columns.extend(a.findings.as_deref());
        columns
    }

    /// The mapped columns of chunks, in the order rows are written; the optional ones last.
    pub fn chunk_columns(&self) -> Vec<&str> {
        let c = &self.chunks;
        let mut columns = vec![
            c.id.as_str(),
            &c.analysis_id,
            &c.chunk_index,
            &c.content,
            &c.content_type,
            &c.embedding,
        ];
        columns.extend(c.section_title.as_deref());
        columns.extend(c.section_path.as_deref());
        columns.extend(c.embedding_model.as_deref());
        columns
    }

    /// The application's word for goldset's status `ours`.
    pub fn status_to_store<'a>(&'a self, ours: &'a str) -> &'a str {
        self.status.get(ours).map_or(ours, String::as_str)
    }

    /// goldset's word for the stored status `theirs`.
    pub fn status_from_store<'a>(&'a self, theirs: &'a str) -> &'a str {
        self.status
            .iter()
            .find(|(_, t)| t.as_str() == theirs)
            .map_or(theirs, |(ours, _)| ours.as_str())
    }

    /// The layout as the TOML of a `[mapping]` section.
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct File<'a> {
            mapping: &'a Layout,
        }
        toml::to_string(&File { mapping: self }).unwrap_or_default()
    }
}

/// `"a"."b"` for `a.b`, `"t"` for `t`: a name as SQL, quoted.
pub fn quote_name(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other_app() -> Layout {
        let text = r#"
            [mapping]
            ids = "uuid"
            timestamps = "timestamp"
            embedding = "vector"
            [mapping.analyses]
            table = "app.documents"
            id = "doc_id"
            url = "source_url"
            content_type = "kind"
            status = "state"
            created_at = "ingested_at"
            [mapping.findings]
            table = "app.document_findings"
            analysis_id = "doc_id"
            position = "position"
            agent = "agent_name"
            category = "category"
            content = "body"
            confidence = "score"
            metadata = "extra"
            [mapping.chunks]
            table = "app.passages"
            id = "passage_id"
            analysis_id = "doc_id"
            chunk_index = "ordinal"
            content = "body"
            section_title = "heading"
            section_path = "path"
            content_type = "kind"
            embedding = "vec"
            [mapping.status]
            completed = "done"
            in_progress = "running"
        "#;
        #[derive(Deserialize)]
        struct File {
            mapping: Layout,
        }
        toml::from_str::<File>(text).unwrap().mapping
    }

    #[test]
    fn a_mapping_reads_validates_and_writes_back_the_same() {
        let layout = other_app();
        layout.validate().unwrap();
        assert!(!layout.owned);
        assert_eq!(layout.status_to_store("completed"), "done");
        assert_eq!(layout.status_from_store("done"), "completed");
        assert_eq!(layout.status_from_store("failed"), "failed");
        let again: toml::Value = toml::from_str(&layout.to_toml()).unwrap();
        let layout2: Layout = again["mapping"].clone().try_into().unwrap();
        assert_eq!(layout2, layout);
    }

    #[test]
    fn inconsistent_mappings_are_refused() {
        let mut l = other_app();
        l.analyses.findings = Some("findings".into());
        assert!(l.validate().unwrap_err().0.contains("both"));
        let mut l = other_app();
        l.findings = None;
        assert!(l.validate().unwrap_err().0.contains("no place"));
        let mut l = other_app();
        l.status.insert("pending".into(), "done".into());
        assert!(l.validate().unwrap_err().0.contains("both map to"));
        let mut l = other_app();
        l.chunks.table = "app.passages; DROP TABLE x".into();
        assert!(l.validate().is_err());
        Layout::own(Some("public")).validate().unwrap();
        Layout::own(None).validate().unwrap();
    }

    #[test]
    fn names_are_quoted_per_part() {
        assert_eq!(quote_name("app.documents"), "\"app\".\"documents\"");
        assert_eq!(quote_name("chunks"), "\"chunks\"");
    }
}
