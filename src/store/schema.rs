//! Every table and column name, and the schema migrations, in one place.
//!
//! Migrations are numbered from 1 and applied in order inside one transaction; the database
//! records the number it is at (SQLite: `PRAGMA user_version`). A database at a higher number
//! than [`SCHEMA_VERSION`] was written by a newer goldset and is refused.

/// Table of analyses.
pub const ANALYSES: &str = "analyses";
/// Table of chunks.
pub const CHUNKS: &str = "chunks";
/// Table of artifacts.
pub const ARTIFACTS: &str = "artifacts";
/// Embedding cache: vectors by (model id, SHA-256 of the chunk text), so that restoring the same
/// text with the same model again costs a lookup, not a model run. Derived data: never backed up.
pub const EMBEDDING_CACHE: &str = "embedding_cache";

/// Columns of [`ANALYSES`], in the order stores read and write them.
pub const ANALYSIS_COLUMNS: &[&str] = &[
    "id",
    "url",
    "content_type",
    "status",
    "created_at",
    "findings",
];
/// Columns of [`CHUNKS`] that hold the chunk itself, in order (the embedding comes after).
pub const CHUNK_COLUMNS: &[&str] = &[
    "id",
    "analysis_id",
    "chunk_index",
    "content",
    "section_title",
    "section_path",
    "content_type",
];
/// Columns of [`CHUNKS`] that hold the embedding: the vector, the model that made it, and the
/// SHA-256 of the text it was made from (NULL: not known, see migration 4).
pub const EMBEDDING_COLUMNS: &[&str] = &["embedding", "embedding_model", "embedding_sha256"];
/// Columns of [`ARTIFACTS`], in order.
pub const ARTIFACT_COLUMNS: &[&str] = &["id", "analysis_id", "summary", "key_findings", "metadata"];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 4;

/// SQLite migrations; entry `i` brings the schema from version `i` to `i + 1`.
///
/// Ids are lower-case hyphenated UUID text (sorts like the UUID), `created_at` is microseconds
/// since the Unix epoch, JSON is text, an embedding is a BLOB of little-endian `f32`.
pub const SQLITE_MIGRATIONS: &[&str] = &[
    "
CREATE TABLE analyses (
    id           TEXT PRIMARY KEY NOT NULL,
    url          TEXT NOT NULL,
    content_type TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    findings     TEXT NOT NULL
);
CREATE INDEX analyses_backup_order ON analyses (created_at, id);
CREATE INDEX analyses_status ON analyses (status, created_at, id);
CREATE TABLE chunks (
    id              TEXT PRIMARY KEY NOT NULL,
    analysis_id     TEXT NOT NULL REFERENCES analyses (id) ON DELETE CASCADE,
    chunk_index     INTEGER NOT NULL,
    content         TEXT NOT NULL,
    section_title   TEXT,
    section_path    TEXT,
    content_type    TEXT NOT NULL,
    embedding       BLOB,
    embedding_model TEXT,
    UNIQUE (analysis_id, chunk_index)
);
CREATE TABLE artifacts (
    id           TEXT PRIMARY KEY NOT NULL,
    analysis_id  TEXT NOT NULL UNIQUE REFERENCES analyses (id) ON DELETE CASCADE,
    summary      TEXT,
    key_findings TEXT NOT NULL,
    metadata     TEXT NOT NULL
);
",
    "
CREATE TABLE IF NOT EXISTS embedding_cache (
    model          TEXT NOT NULL,
    content_sha256 BLOB NOT NULL,
    embedding      BLOB NOT NULL,
    PRIMARY KEY (model, content_sha256)
) WITHOUT ROWID;
",
    // Version 3: the cache as an ordinary rowid table. A WITHOUT ROWID row keeps at most about a
    // quarter of a page in the b-tree and spills the rest of a 1.5 KB vector into an overflow
    // page of its own, so each entry took ~4.7 KB on disk (and in every native snapshot); a rowid
    // table keeps the whole row in its leaf page (~1.6 KB per 384-dimension entry).
    "
CREATE TABLE embedding_cache_v3 (
    model          TEXT NOT NULL,
    content_sha256 BLOB NOT NULL,
    embedding      BLOB NOT NULL,
    UNIQUE (model, content_sha256)
);
INSERT INTO embedding_cache_v3 (model, content_sha256, embedding)
    SELECT model, content_sha256, embedding FROM embedding_cache;
DROP TABLE embedding_cache;
ALTER TABLE embedding_cache_v3 RENAME TO embedding_cache;
",
    // Version 4: the SHA-256 of the text each embedding was made from, so that a chunk whose
    // text changed afterwards (by SQL, by an application) is found stale. Rows embedded before
    // keep NULL: which text their vector came from is not known, and assuming the current one
    // would hide exactly the edits this column exists to find. `verify` reports them as of
    // unknown provenance (a warning); `reembed` and `restore` fill the column.
    "
ALTER TABLE chunks ADD COLUMN embedding_sha256 BLOB;
",
];

/// `INSERT INTO table (columns…) VALUES (?1, ?2, …)`.
pub fn insert_sql(table: &str, columns: &[&str]) -> String {
    let params: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        columns.join(", "),
        params.join(", ")
    )
}

/// `table.c1, table.c2, …` for a SELECT list.
pub fn qualified(table: &str, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
