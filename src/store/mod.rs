//! Stores: where the dataset lives. Operations see only the [`Store`] trait and its two
//! transaction kinds, so SQLite and PostgreSQL plug in behind the same calls.
//!
//! A store reads from a [`ReadSnapshot`] (one consistent view for a whole backup or verify) and
//! writes through a [`WriteTransaction`] (everything a restore does commits together or not at
//! all).

pub mod catalog;
mod embeddings;
mod error;
pub mod layout;
mod merge;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod schema;
pub mod sqlite;

pub use embeddings::{
    blob_to_vector, vector_to_blob, CacheUsage, ChunkText, ContentDigest, EmbeddingHealth,
    EmbeddingModel, EmbeddingUpdate, Provenance,
};
pub use error::{Result, StoreError};

use crate::model::{Analysis, Counts, StatusFilter};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// How many records a database holds: analyses by status, chunks, artifacts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inventory {
    /// Analyses per status.
    pub analyses_by_status: BTreeMap<String, u64>,
    /// Chunks (all statuses).
    pub chunks: u64,
    /// Artifacts (all statuses).
    pub artifacts: u64,
}

impl Inventory {
    /// All analyses.
    pub fn analyses(&self) -> u64 {
        self.analyses_by_status.values().sum()
    }
}

impl std::fmt::Display for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} analyses", self.analyses())?;
        if !self.analyses_by_status.is_empty() {
            let parts: Vec<String> = self
                .analyses_by_status
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        write!(f, ", {} chunks, {} artifacts", self.chunks, self.artifacts)
    }
}

/// What kind of record an id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// An analysis.
    Analysis,
    /// A chunk.
    Chunk,
    /// An artifact.
    Artifact,
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordKind::Analysis => "analysis",
            RecordKind::Chunk => "chunk",
            RecordKind::Artifact => "artifact",
        })
    }
}

/// An id of the incoming data that the database already holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Existing {
    /// Kind of record.
    pub kind: RecordKind,
    /// Its id.
    pub id: Uuid,
    /// The analysis that owns it in the database (itself for an analysis).
    pub owner: Uuid,
}

/// Embeddings of a batch's chunks, in chunk order.
#[derive(Debug, Clone, Copy)]
pub struct ChunkEmbeddings<'a> {
    /// The model that made them.
    pub model: &'a str,
    /// One vector per chunk.
    pub vectors: &'a [Vec<f32>],
}

/// A batch handed over to [`WriteTransaction::insert_stream`]: analyses with their chunks and
/// artifacts, and one vector per chunk (counting across analyses, in order) or none.
#[derive(Debug)]
pub struct Batch {
    /// The analyses.
    pub analyses: Vec<Analysis>,
    /// One vector per chunk, or `None` to leave the chunks without embeddings.
    pub vectors: Option<Vec<Vec<f32>>>,
}

/// Where a streamed insert gets its batches: `Ok(None)` when there are no more,
/// `Err(StoreError::Stopped)` to give up (the caller's own error says why).
pub type BatchSource<'a> = dyn FnMut() -> Result<Option<Batch>> + 'a;

/// Inserts batch after batch with [`WriteTransaction::insert_batch`]: what
/// [`WriteTransaction::insert_stream`] does where a store has nothing faster.
pub fn insert_each(
    tx: &mut (impl WriteTransaction + ?Sized),
    model: &str,
    next: &mut BatchSource<'_>,
) -> Result<()> {
    while let Some(batch) = next()? {
        let embeddings = batch
            .vectors
            .as_deref()
            .map(|vectors| ChunkEmbeddings { model, vectors });
        tx.insert_batch(&batch.analyses, embeddings)?;
    }
    Ok(())
}

/// A database file's size before and after [`Store::reclaim_space`] compacted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Compaction {
    /// Bytes before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
}

/// Where the PostgreSQL client tools are (`--pg-bin`); `None` looks them up on `PATH`.
#[derive(Debug, Clone, Default)]
pub struct NativeTools {
    /// Folder holding `pg_dump` and `pg_restore`.
    pub pg_bin: Option<PathBuf>,
}

/// What a native dump wrote, read from the same moment as the dump itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NativeSnapshot {
    /// `sqlite` (a database file) or `postgres-custom` (a `pg_dump -Fc` archive).
    pub kind: String,
    /// The tool that wrote it (`pg_dump (PostgreSQL) 18.3`).
    pub tool: String,
    /// PostgreSQL schema the tables came from.
    pub schema: Option<String>,
    /// goldset schema version of the tables.
    pub schema_version: u32,
    /// What the snapshot holds.
    pub inventory: Inventory,
    /// The embeddings it holds.
    pub embedding_models: Vec<EmbeddingModel>,
}

/// What a native snapshot file is found to be, without a database to load it into.
#[derive(Debug)]
pub enum NativeCheck {
    /// The database's own tools read it; with what it holds, where that can be known without
    /// loading it (SQLite).
    Readable {
        /// What was checked.
        what: String,
        /// What it holds.
        found: Option<NativeSnapshot>,
    },
    /// It is damaged or not a snapshot; why.
    Unreadable(String),
    /// It could not be checked here (a tool is missing); why.
    Unchecked(String),
}

/// Checks a native snapshot file of `kind` ([`Store::native_kind`]) without loading it.
pub fn check_native(kind: &str, file: &Path, tools: &NativeTools) -> NativeCheck {
    match kind {
        "sqlite" => sqlite::check_file(file),
        #[cfg(feature = "postgres")]
        "postgres-custom" => postgres::check_archive(file, tools),
        #[cfg(not(feature = "postgres"))]
        "postgres-custom" => {
            let _ = tools;
            NativeCheck::Unchecked(WITHOUT_POSTGRES.into())
        }
        other => NativeCheck::Unreadable(format!("unknown snapshot kind {other:?}")),
    }
}

/// A place where a golden dataset is kept.
pub trait Store: Send {
    /// Where it is, for messages (never with a password).
    fn location(&self) -> String;
    /// The kind of native snapshot [`Store::native_dump`] writes (`sqlite`, `postgres-custom`).
    fn native_kind(&self) -> &'static str;
    /// The user tables of the database and the foreign keys between them (read-only).
    fn catalog(&mut self) -> Result<catalog::Catalog>;
    /// Where the dataset is in this database.
    fn layout(&self) -> &layout::Layout;
    /// Opens one consistent read-only view.
    fn snapshot(&mut self) -> Result<Box<dyn ReadSnapshot + '_>>;
    /// Opens a write transaction. Dropping it without [`WriteTransaction::commit`] rolls back.
    fn begin(&mut self) -> Result<Box<dyn WriteTransaction + '_>>;
    /// Begins a write transaction that writes row by row, for a replace by difference
    /// ([`WriteTransaction::replaces_by_difference`] is then true): on an application's tables
    /// the same as [`Store::begin`]; on goldset's own, the row-level writer over
    /// [`layout::Layout::own`] instead of the bulk one.
    fn begin_row_level(&mut self) -> Result<Box<dyn WriteTransaction + '_>> {
        self.begin()
    }
    /// Writes a native snapshot (schema, data and embeddings) to `target`, with the database's
    /// own tools: SQLite's online backup API, or `pg_dump --format=custom`.
    fn native_dump(&mut self, target: &Path, tools: &NativeTools) -> Result<NativeSnapshot>;
    /// Loads a native snapshot written by [`Store::native_dump`], all or nothing, over whatever
    /// goldset tables exist (the caller has checked that `replace` allows it).
    fn native_load(
        &mut self,
        source: &Path,
        snapshot: &NativeSnapshot,
        tools: &NativeTools,
    ) -> Result<()>;
    /// Gives the space of deleted rows back to the file system, where the store keeps it for
    /// itself otherwise: SQLite runs `VACUUM` when 1 % or more of the file is free pages (a
    /// native snapshot copies free pages too). `None` when nothing was done — always on
    /// PostgreSQL, which reuses the space for later rows (autovacuum) and whose plain `VACUUM`
    /// would not shrink the files.
    fn reclaim_space(&mut self) -> Result<Option<Compaction>>;
    /// The ids of every chunk whose stored embedding was made from another text than the
    /// chunk's current one, in id order (see [`ReadSnapshot::embedding_provenance`]). Chunks
    /// of unknown provenance are not among them.
    fn stale_chunk_ids(&mut self) -> Result<Vec<String>> {
        Ok(self.snapshot()?.embedding_provenance(None)?.stale_ids)
    }
}

/// A consistent view of a store: everything read through it belongs to one moment.
pub trait ReadSnapshot {
    /// What the database holds.
    fn inventory(&mut self) -> Result<Inventory>;
    /// The counts of what `filter` covers.
    fn counts(&mut self, filter: &StatusFilter) -> Result<Counts>;
    /// Calls `visit` for every analysis that `filter` covers, whole (findings, ordered chunks,
    /// artifact), ordered by `created_at` then `id`. Memory holds one analysis at a time.
    fn for_each_analysis(
        &mut self,
        filter: &StatusFilter,
        visit: &mut dyn FnMut(Analysis) -> Result<()>,
    ) -> Result<()>;
    /// Chunks and artifacts whose analysis is missing (first few ids, and the number).
    fn orphans(&mut self) -> Result<(u64, Vec<String>)>;
    /// What the embedding cache holds, per model and dimension.
    fn embedding_cache(&mut self) -> Result<Vec<CacheUsage>>;
    /// Checks every chunk's embedding against `model` and `dimension`.
    fn embedding_health(&mut self, model: &str, dimension: usize) -> Result<EmbeddingHealth>;
    /// The models and dimensions of the embeddings, with chunk counts.
    fn embedding_models(&mut self) -> Result<Vec<EmbeddingModel>>;
    /// Compares each embedded chunk's text with the SHA-256 recorded for its embedding
    /// (goldset's `embedding_sha256` column, or `goldset_embeddings` beside an application's
    /// tables): the stale chunks (all ids, or the first `limit`) and those of unknown
    /// provenance (the first few).
    fn embedding_provenance(&mut self, limit: Option<usize>) -> Result<Provenance>;
    /// Calls `visit` with blocks (≈ [`EMBEDDING_BLOCK`] chunks, in no particular order) of the
    /// ids and vectors, row after row, of the chunk embeddings `model` made with `dimension`.
    fn for_each_embedding(
        &mut self,
        model: &str,
        dimension: usize,
        visit: &mut EmbeddingVisitor<'_>,
    ) -> Result<()>;
    /// The `depth` chunks nearest to `query` by the database's own search (`ORDER BY embedding
    /// <=> query LIMIT depth`: the application's index, if any), with cosine similarities.
    fn nearest(&mut self, _query: &[f32], _depth: usize) -> Result<Vec<(Uuid, f64)>> {
        Err(StoreError::Refused("this store has no vector index to search (--search index needs PostgreSQL with a pgvector `vector` column)".into()))
    }
}

/// What [`ReadSnapshot::for_each_embedding`] calls: chunk ids, their vectors row after row.
pub type EmbeddingVisitor<'a> = dyn FnMut(&[Uuid], &[f32]) -> Result<()> + 'a;
/// Chunks per block of [`ReadSnapshot::for_each_embedding`].
pub const EMBEDDING_BLOCK: usize = 1024;

/// How one analysis changes when `restore --replace` applies only the difference: the file's
/// version, and which of its stored parts go and come.
#[derive(Debug)]
pub struct Patch<'a> {
    /// The analysis as the file has it.
    pub analysis: &'a Analysis,
    /// Its own row (url, content type, status, time, JSON findings) differs.
    pub row: bool,
    /// Its findings differ (where they are rows of their own).
    pub findings: bool,
    /// Stored chunks to delete (gone from the file).
    pub remove_chunks: Vec<Uuid>,
    /// Positions in `analysis.chunks` of the chunks to insert.
    pub add_chunks: Vec<usize>,
    /// Positions in `analysis.chunks` of stored chunks to update in place (same id, other
    /// fields changed, its position perhaps among them): the row stays, and so do rows of
    /// other tables that reference it; its embedding changes only when a vector is given for
    /// it.
    pub update_chunks: Vec<usize>,
    /// Those of `update_chunks` whose position changes. The store first moves them past every
    /// position the analysis has before and after, then inserts `add_chunks`, then gives them
    /// their new positions, so that a unique (analysis, position) key holds at every step.
    pub moved_chunks: Vec<usize>,
    /// Its artifact differs (the stored one goes, the file's, if any, comes).
    pub artifact: bool,
}

/// A write transaction: nothing it does is visible, or kept, until it commits.
pub trait WriteTransaction {
    /// Whether `restore --replace` should write only the difference between the file and the
    /// database ([`WriteTransaction::apply_patch`] and friends) instead of deleting everything
    /// and loading again: true on an application's tables, whose rows, embeddings and indexes
    /// must not churn.
    fn replaces_by_difference(&self) -> bool {
        false
    }
    /// The stored analyses among `ids`, whole.
    fn analyses_by_id(&mut self, _ids: &[Uuid]) -> Result<Vec<Analysis>> {
        Err(StoreError::Refused(
            "this store does not apply differences".into(),
        ))
    }
    /// Applies one analysis's change; `vectors` (made by `model`) holds one vector per added
    /// chunk and per updated chunk whose text changed, by chunk id.
    fn apply_patch(
        &mut self,
        _patch: &Patch<'_>,
        _vectors: &std::collections::HashMap<Uuid, Vec<f32>>,
        _model: &str,
    ) -> Result<()> {
        Err(StoreError::Refused(
            "this store does not apply differences".into(),
        ))
    }
    /// Deletes every analysis (with its children) whose id is not in `keep` (sorted) and whose
    /// status is one of `statuses` (goldset's words; `None`: any); returns what went. On an
    /// application's tables, analyses of other statuses — its queued or running work, which a
    /// backup of completed analyses never held — are left alone.
    fn delete_analyses_except(
        &mut self,
        _keep: &[Uuid],
        _statuses: Option<&[String]>,
    ) -> Result<Counts> {
        Err(StoreError::Refused(
            "this store does not apply differences".into(),
        ))
    }
    /// Lets deletes reach rows outside the dataset that reference deleted rows (an
    /// application's `ON DELETE CASCADE` / `SET NULL`; `--allow-cascade`). Without it, an
    /// application's store refuses such a delete, naming the tables and rows; goldset's own
    /// tables have no such references.
    fn allow_cascade(&mut self, _allow: bool) {}
    /// What the database holds now (inside the transaction).
    fn inventory(&mut self) -> Result<Inventory>;
    /// Deletes every analysis, chunk and artifact (PostgreSQL then loads in bulk: indexes and
    /// constraints are dropped and rebuilt before the commit).
    fn delete_all(&mut self) -> Result<()>;
    /// When the goldset tables hold nothing, prepares to load them in bulk as after
    /// [`WriteTransaction::delete_all`] and returns true (an additive restore into an empty
    /// database then needs no conflict checks); otherwise changes nothing and returns false.
    fn load_in_bulk_if_empty(&mut self) -> Result<bool>;
    /// The ids among `analyses` (and their chunks and artifacts) that already exist.
    fn existing(&mut self, analyses: &[Analysis]) -> Result<Vec<Existing>>;
    /// Deletes these analyses with their chunks and artifacts.
    fn delete_analyses(&mut self, ids: &[Uuid]) -> Result<()>;
    /// Inserts analyses with their chunks and artifacts. With `embeddings`, chunk `i` of the
    /// batch (counting across analyses, in order) gets vector `i`.
    fn insert_batch(
        &mut self,
        analyses: &[Analysis],
        embeddings: Option<ChunkEmbeddings<'_>>,
    ) -> Result<()>;
    /// Inserts every batch `next` hands over, with embeddings made by `model`, until it returns
    /// `Ok(None)`. Meant for a bulk load (after [`WriteTransaction::delete_all`] or a true
    /// [`WriteTransaction::load_in_bulk_if_empty`]) in which nothing else is asked of the
    /// transaction until the stream ends. PostgreSQL then sends every chunk through one `COPY`
    /// that stays open for the whole stream, so the server never waits between batches; other
    /// stores insert batch by batch ([`insert_each`]).
    fn insert_stream(&mut self, model: &str, next: &mut BatchSource<'_>) -> Result<()> {
        insert_each(self, model, next)
    }
    /// The models and dimensions of the embeddings the database holds, with chunk counts.
    fn embedding_models(&mut self) -> Result<Vec<EmbeddingModel>>;
    /// Prepares storage for vectors of `dimension`. PostgreSQL types the vector column
    /// `vector(dimension)` when no embedding of another dimension remains, and leaves it untyped
    /// while both kinds coexist (in the middle of a `reembed`).
    fn prepare_embeddings(&mut self, dimension: usize) -> Result<()>;
    /// The embedding cache's vectors for `model` and these text digests, in order (`None` where
    /// nothing of `dimension` values is cached).
    fn cached_embeddings(
        &mut self,
        model: &str,
        dimension: usize,
        digests: &[ContentDigest],
    ) -> Result<Vec<Option<Vec<f32>>>>;
    /// The length of the vectors the embedding cache holds for `model` (one entry's), if any.
    fn cached_dimension(&mut self, model: &str) -> Result<Option<usize>>;
    /// Adds vectors to the embedding cache, replacing entries of the same key.
    fn cache_embeddings(&mut self, model: &str, entries: &[(ContentDigest, &[f32])]) -> Result<()>;
    /// Up to `limit` chunks, in id order after `after`, whose embedding is missing, was not
    /// made by `model` with `dimension` values, or was not made from the chunk's current text
    /// as far as the database records it (stale, or of unknown provenance).
    fn chunks_needing_embedding(
        &mut self,
        model: &str,
        dimension: usize,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ChunkText>>;
    /// Up to `limit` chunks, in id order after `after`, whose embedding was made from another
    /// text than their current one (chunks of unknown provenance are not stale).
    fn stale_chunks(&mut self, after: Option<Uuid>, limit: usize) -> Result<Vec<ChunkText>>;
    /// Replaces the embeddings of these chunks with vectors made by `model`, recording the
    /// digest of the text each was made from.
    fn set_embeddings(&mut self, model: &str, updates: &[EmbeddingUpdate<'_>]) -> Result<()>;
    /// Removes the embedding cache's entries that no chunk uses (with `everything`, all of
    /// them); returns how many entries and how many bytes of vectors went.
    fn prune_embedding_cache(&mut self, everything: bool) -> Result<(u64, u64)>;
    /// Makes everything durable.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Create the database (SQLite) or the schema and tables (PostgreSQL) when missing. Only
    /// writing commands set it: reading commands must not mistake a typo for an empty dataset.
    pub create: bool,
    /// PostgreSQL schema holding goldset's tables.
    pub schema: String,
    /// When another restore holds the write lock: wait for it (true) or fail at once.
    pub wait_for_lock: bool,
    /// An application's tables to work on in place (`[mapping]` in goldset.toml); `None`:
    /// goldset's own tables.
    pub mapping: Option<layout::Layout>,
    /// The command only reads: an application's database is opened read-only.
    pub read_only: bool,
    /// Only look at the catalog (`goldset adopt`): no migration, no mapping check.
    pub inspect: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create: false,
            schema: "public".into(),
            wait_for_lock: true,
            mapping: None,
            read_only: false,
            inspect: false,
        }
    }
}

/// Opens the store a database URL names: `sqlite:PATH`, or `postgres://…` / `postgresql://…`
/// (libpq `PG*` environment variables fill what the URL leaves out).
pub fn open(url: &str, options: &OpenOptions) -> Result<Box<dyn Store>> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: redact_url(url),
                reason: "no file path after sqlite:".into(),
            });
        }
        return Ok(Box::new(sqlite::SqliteStore::open(
            std::path::Path::new(path),
            options,
        )?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Box::new(postgres::PostgresStore::open(url, options)?));
        #[cfg(not(feature = "postgres"))]
        return Err(StoreError::InvalidUrl {
            url: redact_url(url),
            reason: WITHOUT_POSTGRES.into(),
        });
    }
    Err(StoreError::InvalidUrl {
        url: redact_url(url),
        reason: "expected sqlite:PATH or postgres://…".into(),
    })
}

/// Why a PostgreSQL URL or archive is refused by a build without the `postgres` feature.
#[cfg(not(feature = "postgres"))]
const WITHOUT_POSTGRES: &str =
    "this goldset was built without PostgreSQL support; rebuild with --features postgres";

/// The URL with its password (if any) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.password().is_none() => url.to_owned(),
        Ok(mut parsed) => match parsed.set_password(Some("***")) {
            Ok(()) => parsed.into(),
            Err(()) => hide_password(url),
        },
        // libpq URLs the WHATWG parser refuses (several hosts: `h1:5432,h2:5433`).
        Err(_) => hide_password(url),
    }
}

/// [`redact_url`] by hand: the password is what follows the first `:` of the userinfo (before
/// the authority's last `@`).
fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:s3cret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:golden.db"), "sqlite:golden.db");
        assert!(!redact_url("postgresql://a:p%40ss@h/d?sslmode=require").contains("p%40ss"));
        assert_eq!(
            redact_url("postgresql://a:p%40ss@h/d?sslmode=require"),
            "postgresql://a:***@h/d?sslmode=require"
        );
        // Several hosts, as libpq takes them: the url crate refuses the port list.
        assert_eq!(
            redact_url("postgres://u:pw@h1:5432,h2:5433/db?target_session_attrs=any"),
            "postgres://u:***@h1:5432,h2:5433/db?target_session_attrs=any"
        );
        assert_eq!(
            redact_url("postgres://u@h1:5432,h2:5433/db"),
            "postgres://u@h1:5432,h2:5433/db"
        );
        // A password holding `@` and `:` (percent-encoding forgotten) is hidden whole.
        assert_eq!(
            redact_url("postgres://u:p:w@x@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn a_postgres_url_in_a_build_without_postgres_says_how_to_get_it() {
        let e = open("postgres://u:pw@h/db", &OpenOptions::default())
            .err()
            .unwrap();
        let text = e.to_string();
        assert!(text.contains("rebuild with --features postgres"), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }
}
