//! `goldset adopt`: proposes a mapping of goldset's records onto an application's tables from
//! the database's catalog — table and column names, types, foreign keys, CHECK constraints.
//!
//! Roles are found structurally: the chunks table is the one with an embedding-typed column and
//! a foreign key to another table, which is then the analyses table; artifacts and findings are
//! the other tables that reference analyses. Fields are matched by name against a short list of
//! synonyms. Two equally good candidates are reported as ambiguous, never picked silently.

use crate::store::catalog::{Catalog, Column, Table};
use crate::store::layout::{
    AnalysesTable, ArtifactsTable, ChunksTable, EmbeddingEncoding, FindingsTable, IdEncoding,
    Layout, TimeEncoding,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// What `adopt` found.
#[derive(Debug, Clone, Serialize)]
pub struct Proposal {
    /// The mapping, when every required field found a column.
    pub layout: Option<Layout>,
    /// A layout goldset knows by name (`seed application`), matched exactly.
    pub recognised: Option<String>,
    /// What could not be mapped, or needs a decision, and why.
    pub problems: Vec<String>,
    /// What a user should know before restoring into these tables.
    pub notes: Vec<String>,
}

/// Names tried for each field, best first.
const ID: &[&str] = &["id", "uuid", "pk"];
const URL: &[&str] = &["url", "source_url", "uri", "link", "source"];
const CONTENT_TYPE: &[&str] = &["content_type", "kind", "type", "doc_type", "document_type"];
const STATUS: &[&str] = &["status", "state"];
const CREATED_AT: &[&str] = &[
    "created_at",
    "ingested_at",
    "inserted_at",
    "created",
    "timestamp",
];
const CHUNK_INDEX: &[&str] = &["chunk_index", "ordinal", "position", "idx", "index", "seq"];
const CONTENT: &[&str] = &["content", "body", "text", "chunk_text"];
const SECTION_TITLE: &[&str] = &["section_title", "heading", "title"];
const SECTION_PATH: &[&str] = &["section_path", "path", "breadcrumb"];
const EMBEDDING: &[&str] = &["embedding", "vec", "vector", "embeddings"];
const EMBEDDING_MODEL: &[&str] = &["embedding_model", "model"];
const SUMMARY: &[&str] = &["summary", "text", "body"];
const KEY_FINDINGS: &[&str] = &["key_findings", "highlights", "findings"];
const METADATA: &[&str] = &["metadata", "details", "meta", "extra"];
const POSITION: &[&str] = &[
    "position",
    "ordinal",
    "idx",
    "index",
    "finding_index",
    "seq",
];
const AGENT: &[&str] = &["agent", "agent_name"];
const CATEGORY: &[&str] = &["category", "kind", "type"];
const CONFIDENCE: &[&str] = &["confidence", "score"];

/// goldset's status words and the application words that usually mean the same.
const STATUS_WORDS: &[(&str, &[&str])] = &[
    (
        "completed",
        &["completed", "complete", "done", "finished", "success"],
    ),
    (
        "in_progress",
        &["in_progress", "running", "processing", "active"],
    ),
    ("pending", &["pending", "queued", "new", "waiting"]),
    ("failed", &["failed", "error", "errored"]),
];

fn short(table: &str) -> &str {
    table.rsplit('.').next().unwrap_or(table)
}

fn is_embedding_type(t: &str) -> bool {
    t.starts_with("vector") || t == "real[]" || t == "bytea" || t == "blob"
}

fn is_json_type(t: &str) -> bool {
    t == "jsonb" || t == "json"
}

/// Fills `problems` and returns the one column of `table` named like `names` (first name that
/// exists wins), skipping `taken`.
struct Matcher<'a> {
    problems: &'a mut Vec<String>,
}

impl Matcher<'_> {
    fn find(
        &mut self,
        table: &Table,
        field: &str,
        names: &[&str],
        taken: &[&str],
    ) -> Option<String> {
        let found = names.iter().find_map(|n| {
            table
                .columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(n) && !taken.contains(&c.name.as_str()))
        });
        if found.is_none() {
            self.problems.push(format!(
                "{}: no column for {field} (tried {})",
                table.name,
                names.join(", ")
            ));
        }
        found.map(|c| c.name.clone())
    }

    fn optional(table: &Table, names: &[&str], taken: &[&str]) -> Option<String> {
        names.iter().find_map(|n| {
            table
                .columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(n) && !taken.contains(&c.name.as_str()))
                .map(|c| c.name.clone())
        })
    }
}

/// The single table among `candidates`, or a problem saying why there is none or several.
fn one<'c>(
    role: &str,
    candidates: Vec<&'c Table>,
    problems: &mut Vec<String>,
) -> Option<&'c Table> {
    match candidates.as_slice() {
        [only] => Some(only),
        [] => {
            problems.push(format!("no table looks like the {role} table"));
            None
        }
        several => {
            let names: Vec<&str> = several.iter().map(|t| t.name.as_str()).collect();
            problems.push(format!(
                "ambiguous {role} table: {} (write the mapping by hand)",
                names.join(", ")
            ));
            None
        }
    }
}

/// The primary key column of `table` (a single column), or an id-like name.
fn primary_key(table: &Table, m: &mut Matcher<'_>) -> Option<String> {
    let keys: Vec<&Column> = table.columns.iter().filter(|c| c.primary_key).collect();
    match keys.as_slice() {
        [key] => Some(key.name.clone()),
        _ => {
            let own_id = format!("{}_id", short(&table.name).trim_end_matches('s'));
            let mut names = vec![own_id.as_str()];
            names.extend_from_slice(ID);
            m.find(table, "id", &names, &[])
        }
    }
}

/// Proposes a mapping from `catalog`.
pub fn propose(catalog: &Catalog) -> Proposal {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let layout = find_layout(catalog, &mut problems, &mut notes);
    let recognised = layout
        .as_ref()
        .filter(|l| is_seed_layout(l))
        .map(|_| "the seed application (SQLAlchemy models Analysis, Chunk, Artifact)".to_owned());
    if let Some(l) = &layout {
        notes.extend(restore_notes(catalog, l));
    }
    Proposal {
        layout: if problems.is_empty() { layout } else { None },
        recognised,
        problems,
        notes,
    }
}

/// The tables that play goldset's roles, found from the catalog's structure.
struct Roles<'c> {
    catalog: &'c Catalog,
    analyses: &'c Table,
    chunks: &'c Table,
    /// Other tables referencing analyses that look like findings (an agent column).
    findings: Vec<&'c Table>,
    /// Other tables referencing analyses that look like artifacts (a summary column).
    artifacts: Vec<&'c Table>,
}

impl<'c> Roles<'c> {
    /// Chunks: the one table with an embedding column and a foreign key; analyses: the one
    /// table it references; findings and artifacts among the other tables referencing analyses.
    fn find(catalog: &'c Catalog, problems: &mut Vec<String>) -> Option<Roles<'c>> {
        let chunk_candidates: Vec<&Table> = catalog
            .tables
            .iter()
            .filter(|t| {
                t.columns.iter().any(|c| {
                    is_embedding_type(&c.sql_type)
                        && EMBEDDING.iter().any(|n| c.name.eq_ignore_ascii_case(n))
                }) && catalog.foreign_keys.iter().any(|k| k.from_table == t.name)
            })
            .collect();
        let chunks = one("chunks", chunk_candidates, problems)?;
        let parents: Vec<&Table> = catalog
            .foreign_keys
            .iter()
            .filter(|k| k.from_table == chunks.name && k.from_columns.len() == 1)
            .filter_map(|k| catalog.table(&k.to_table))
            .collect();
        let analyses = one("analyses", parents, problems)?;
        let mut roles = Roles {
            catalog,
            analyses,
            chunks,
            findings: Vec::new(),
            artifacts: Vec::new(),
        };
        let children: Vec<&Table> = catalog
            .tables
            .iter()
            .filter(|t| t.name != chunks.name && t.name != analyses.name)
            .filter(|t| roles.owner_column(t).is_some())
            .collect();
        roles.findings = children
            .iter()
            .copied()
            .filter(|t| AGENT.iter().any(|n| t.column(n).is_some()))
            .collect();
        roles.artifacts = children
            .into_iter()
            .filter(|t| t.column(SUMMARY[0]).is_some())
            .collect();
        Some(roles)
    }

    /// The column of `child` that references the analyses table.
    fn owner_column(&self, child: &Table) -> Option<String> {
        self.catalog
            .foreign_keys
            .iter()
            .find(|k| {
                k.from_table == child.name && self.catalog.table(&k.to_table) == Some(self.analyses)
            })
            .and_then(|k| k.from_columns.first().cloned())
    }

    /// The analyses table, and the findings table where findings are not a JSON column.
    fn map_analyses(&self, m: &mut Matcher<'_>) -> Option<(AnalysesTable, Option<FindingsTable>)> {
        let a = self.analyses;
        let id = primary_key(a, m)?;
        let findings = Matcher::optional(a, &["findings"], &[]).filter(|f| {
            a.column(f)
                .is_some_and(|c| is_json_type(&c.sql_type) || c.sql_type.starts_with("text"))
        });
        let findings_table = match findings {
            Some(_) => None,
            None => Some(self.map_findings(m)?),
        };
        let status = m.find(a, "status", STATUS, &[])?;
        let table = AnalysesTable {
            table: a.name.clone(),
            url: m.find(a, "url", URL, &[])?,
            content_type: m.find(a, "content_type", CONTENT_TYPE, &[&status])?,
            created_at: m.find(a, "created_at", CREATED_AT, &[])?,
            status,
            findings,
            id,
        };
        Some((table, findings_table))
    }

    fn map_findings(&self, m: &mut Matcher<'_>) -> Option<FindingsTable> {
        let f = one("findings", self.findings.clone(), m.problems)?;
        let analysis_id = self.owner_column(f)?;
        let taken = [analysis_id.as_str()];
        Some(FindingsTable {
            table: f.name.clone(),
            position: m.find(f, "position", POSITION, &taken)?,
            agent: m.find(f, "agent", AGENT, &taken)?,
            category: m.find(f, "category", CATEGORY, &taken)?,
            content: m.find(f, "content", CONTENT, &taken)?,
            confidence: m.find(f, "confidence", CONFIDENCE, &taken)?,
            metadata: Matcher::optional(f, METADATA, &taken),
            analysis_id,
        })
    }

    fn map_chunks(&self, m: &mut Matcher<'_>) -> Option<ChunksTable> {
        let c = self.chunks;
        let owner = self.owner_column(c)?;
        let id = primary_key(c, m)?;
        let taken = [id.as_str(), owner.as_str()];
        Some(ChunksTable {
            table: c.name.clone(),
            chunk_index: m.find(c, "chunk_index", CHUNK_INDEX, &taken)?,
            content: m.find(c, "content", CONTENT, &taken)?,
            section_title: Matcher::optional(c, SECTION_TITLE, &taken),
            section_path: Matcher::optional(c, SECTION_PATH, &taken),
            content_type: m.find(c, "content_type", CONTENT_TYPE, &taken)?,
            embedding_model: Matcher::optional(c, EMBEDDING_MODEL, &taken),
            embedding_sha256: None,
            embedding: m.find(c, "embedding", EMBEDDING, &taken)?,
            id,
            analysis_id: owner,
        })
    }

    /// The artifacts table; `Some(None)` when there is none (analyses without artifacts).
    fn map_artifacts(&self, m: &mut Matcher<'_>) -> Option<Option<ArtifactsTable>> {
        if self.artifacts.is_empty() {
            return Some(None);
        }
        let r = one("artifacts", self.artifacts.clone(), m.problems)?;
        let owner = self.owner_column(r)?;
        let id = primary_key(r, m)?;
        let taken = [id.as_str(), owner.as_str()];
        Some(Some(ArtifactsTable {
            table: r.name.clone(),
            summary: m.find(r, "summary", SUMMARY, &taken)?,
            key_findings: m.find(r, "key_findings", KEY_FINDINGS, &taken)?,
            metadata: m.find(r, "metadata", METADATA, &taken)?,
            id,
            analysis_id: owner,
        }))
    }
}

/// The type of `table.column` as the catalog writes it.
fn type_of<'t>(table: &'t Table, column: &str) -> &'t str {
    table.column(column).map_or("", |c| c.sql_type.as_str())
}

/// How ids, times and embeddings are stored, from the columns' types.
fn encodings(
    roles: &Roles<'_>,
    analyses: &AnalysesTable,
    chunks: &ChunksTable,
) -> (IdEncoding, TimeEncoding, EmbeddingEncoding) {
    let ids = match type_of(roles.analyses, &analyses.id) {
        "uuid" => IdEncoding::Uuid,
        "char(32)" | "character(32)" | "varchar(32)" | "character varying(32)" => IdEncoding::Hex32,
        _ => IdEncoding::Text,
    };
    let timestamps = match type_of(roles.analyses, &analyses.created_at) {
        "timestamp with time zone" => TimeEncoding::Timestamptz,
        "timestamp without time zone" => TimeEncoding::Timestamp,
        "integer" | "bigint" => TimeEncoding::Micros,
        _ => TimeEncoding::Text,
    };
    let embedding = match type_of(roles.chunks, &chunks.embedding) {
        t if t.starts_with("vector") => EmbeddingEncoding::Vector,
        "real[]" => EmbeddingEncoding::RealArray,
        "bytea" | "blob" => EmbeddingEncoding::F32Le,
        _ => EmbeddingEncoding::Json,
    };
    (ids, timestamps, embedding)
}

fn find_layout(
    catalog: &Catalog,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Option<Layout> {
    let roles = Roles::find(catalog, problems)?;
    let mut m = Matcher { problems };
    let (analyses, findings) = roles.map_analyses(&mut m)?;
    let chunks = roles.map_chunks(&mut m)?;
    let artifacts = roles.map_artifacts(&mut m)?;
    let (ids, timestamps, embedding) = encodings(&roles, &analyses, &chunks);
    if artifacts.is_none() {
        notes.push("no artifacts table: analyses are backed up without artifacts".into());
    }
    if matches!(timestamps, TimeEncoding::Timestamp | TimeEncoding::Text) {
        notes.push(format!(
            "{}.{} has no time zone: goldset reads and writes it as UTC; if the application keeps local time there, add time_zone = \"<IANA name, e.g. Europe/Berlin>\" to [mapping]",
            analyses.table, analyses.created_at
        ));
    }
    if chunks.embedding_model.is_none() {
        notes.push(format!(
            "{} has no column for the embedding model: goldset records it in a table of its own (goldset_embeddings), created by the first restore or reembed",
            chunks.table
        ));
    }
    let status = roles
        .analyses
        .column(&analyses.status)
        .map(|col| status_words(&col.allowed, m.problems))
        .unwrap_or_default();
    Some(Layout {
        ids,
        timestamps,
        time_zone: Default::default(),
        embedding,
        goldset_schema: None,
        analyses,
        findings,
        chunks,
        artifacts,
        status,
        fill: BTreeMap::new(),
        owned: false,
    })
}

/// goldset's words for the application's allowed status words; each allowed word must find one.
fn status_words(allowed: &[String], problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for word in allowed {
        let ours = STATUS_WORDS
            .iter()
            .find(|(_, synonyms)| synonyms.iter().any(|s| s.eq_ignore_ascii_case(word)))
            .map(|(ours, _)| *ours);
        match ours {
            Some(ours) if ours == word => {}
            Some(ours) if !map.contains_key(ours) => {
                map.insert(ours.to_owned(), word.clone());
            }
            Some(ours) => problems.push(format!(
                "status words {:?} and {word:?} both look like goldset's {ours:?}: write [mapping.status] by hand",
                map[ours]
            )),
            None => {}
        }
    }
    map
}

/// The seed application's layout: goldset's own names in tables called analyses, chunks and
/// artifacts, findings as a JSON column.
fn is_seed_layout(l: &Layout) -> bool {
    let mut own = Layout::own(None);
    own.chunks.embedding_model = None;
    own.chunks.embedding_sha256 = None;
    own.owned = false;
    own.ids = l.ids;
    own.timestamps = l.timestamps;
    own.embedding = l.embedding;
    let strip = |mut x: Layout| {
        for t in [&mut x.analyses.table, &mut x.chunks.table] {
            *t = short(t).to_owned();
        }
        if let Some(r) = &mut x.artifacts {
            r.table = short(&r.table).to_owned();
        }
        x
    };
    strip(l.clone()) == own
}

/// What a restore into these tables has to respect: foreign keys from other tables onto mapped
/// ones, NOT NULL columns outside the mapping without a default.
fn restore_notes(catalog: &Catalog, l: &Layout) -> Vec<String> {
    let mapped: Vec<(&str, Vec<&str>)> = l.tables();
    let mut notes = Vec::new();
    for key in &catalog.foreign_keys {
        let into_mapped = mapped
            .iter()
            .any(|(t, _)| catalog.table(t).map(|x| &x.name) == Some(&key.to_table));
        let from_mapped = mapped
            .iter()
            .any(|(t, _)| catalog.table(t).map(|x| &x.name) == Some(&key.from_table));
        if into_mapped && !from_mapped {
            notes.push(format!(
                "{} references {} (ON DELETE {}): restore --replace will not delete rows it references unless you pass --allow-cascade",
                key.from_table,
                key.to_table,
                key.on_delete.to_uppercase()
            ));
        }
    }
    for (table, columns) in &mapped {
        let Some(t) = catalog.table(table) else {
            continue;
        };
        for c in &t.columns {
            if c.not_null && !c.has_default && !columns.contains(&c.name.as_str()) {
                notes.push(format!(
                    "{}.{} is NOT NULL with no default and outside the mapping: give it a value in [mapping.fill.\"{}\"] before restoring",
                    t.name, c.name, table
                ));
            }
        }
        for field in ["content_type"] {
            if let Some(col) = columns
                .iter()
                .find(|c| **c == field)
                .and_then(|c| t.column(c))
                .filter(|c| !c.not_null)
            {
                notes.push(format!(
                    "{}.{} allows NULL, which a backup cannot hold: such rows are reported, not backed up",
                    t.name, col.name
                ));
            }
        }
    }
    notes
}
