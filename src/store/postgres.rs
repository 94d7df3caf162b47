//! PostgreSQL + pgvector: the production store.
//!
//! * Tables live in a schema of the user's choosing (`--schema`, default `public`); the
//!   embedding column is a pgvector `vector(D)`, typed by the first restore (D from the embedder).
//!   No vector index is built: goldset never searches by similarity, an HNSW build would
//!   dominate restore time, and the application that searches knows which operator class and
//!   parameters it wants (see ARCHITECTURE.md).
//! * A snapshot is a `REPEATABLE READ, READ ONLY` transaction; rows stream through three
//!   portals fetched in pages, merged by analysis (a bounded number of round trips).
//! * A write transaction holds a session-level advisory lock (one restore at a time per schema)
//!   and writes with `COPY … FROM STDIN (FORMAT binary)`.
//! * Connection URLs: `postgres://` or `postgresql://`, `sslmode=disable|prefer|require`, and
//!   the libpq variables `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`,
//!   `PGAPPNAME` for what the URL leaves out. The password never appears in a message.

mod copy;
mod tls;

use super::schema::{self, ANALYSES, ARTIFACTS, CHUNKS, EMBEDDING_CACHE};
use super::{
    blob_to_vector, insert_each, redact_url, vector_to_blob, BatchSource, CacheUsage,
    ChunkEmbeddings, ChunkText, Compaction, ContentDigest, EmbeddingHealth, EmbeddingModel,
    Existing, Inventory, NativeSnapshot, NativeTools, OpenOptions, ReadSnapshot, RecordKind,
    Result, Store, StoreError, WriteTransaction,
};
use crate::model::{Analysis, Artifact, Chunk, Counts, Finding, StatusFilter};
use crate::timestamp::Timestamp;
use copy::BinaryRows;
use pgvector::Vector;
use postgres::config::SslMode;
use postgres::types::{Json, ToSql, Type};
use postgres::{Client, Config, IsolationLevel, Row, Transaction};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use time::OffsetDateTime;
use uuid::Uuid;

/// Rows fetched per round trip when streaming a backup.
const FETCH_ROWS: i32 = 1000;

/// The text of a PostgreSQL error, without anything from the connection string.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text += &format!(" ({detail})");
            }
            if let Some(hint) = db.hint() {
                text += &format!("; hint: {hint}");
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// A golden dataset in a PostgreSQL schema.
pub struct PostgresStore {
    client: Client,
    /// Connection parameters, for the native tools (handed over in `PG*` variables, never on a
    /// command line).
    config: Config,
    location: String,
    names: Names,
    wait_for_lock: bool,
}

/// Fully qualified, quoted names of the tables in the chosen schema.
struct Names {
    schema: String,
    analyses: String,
    chunks: String,
    artifacts: String,
    cache: String,
    migrations: String,
    /// Schema-qualified `vector` type (pgvector may live in another schema than ours).
    vector: String,
    /// Advisory lock key of this schema.
    lock_key: i64,
}

impl Names {
    fn new(schema: &str) -> Self {
        let q = |t: &str| format!("{}.{t}", quote(schema));
        let lock_key = lock_key(schema);
        Names {
            schema: schema.to_owned(),
            analyses: q(ANALYSES),
            chunks: q(CHUNKS),
            artifacts: q(ARTIFACTS),
            cache: q(EMBEDDING_CACHE),
            migrations: q("goldset_migrations"),
            vector: "vector".into(),
            lock_key,
        }
    }
}

/// The session-level advisory lock a restore into `schema` holds: FNV-1a of `goldset:SCHEMA`,
/// stable across runs and machines (other tools can take it to keep restores out).
pub fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"goldset:".iter().chain(schema.as_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Builds the connection configuration: the URL first, then libpq's environment variables.
fn config(url: &str) -> Result<Config> {
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: redact_url(url),
        reason,
    };
    let mut config = Config::from_str(url).map_err(|e| invalid(describe(&e)))?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        config.host(&env("PGHOST").unwrap_or_else(|| "localhost".into()));
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT") {
            config.port(
                port.parse()
                    .map_err(|_| invalid(format!("PGPORT {port:?} is not a port")))?,
            );
        }
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
    }
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(&db);
        }
    }
    if !url.contains("sslmode=") {
        if let Some(mode) = env("PGSSLMODE") {
            config.ssl_mode(match mode.as_str() {
                "disable" => SslMode::Disable,
                "allow" | "prefer" => SslMode::Prefer,
                "require" | "verify-ca" | "verify-full" => SslMode::Require,
                other => return Err(invalid(format!("PGSSLMODE {other:?} is not a known mode"))),
            });
        }
    }
    config.application_name(&env("PGAPPNAME").unwrap_or_else(|| "goldset".into()));
    Ok(config)
}

fn valid_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Schema(format!(
            "schema name {schema:?}: use letters, digits and underscores (at most 63)"
        )))
    }
}

impl PostgresStore {
    /// Connects, checks pgvector, and creates or migrates the schema (creating only with
    /// `options.create`).
    pub fn open(url: &str, options: &OpenOptions) -> Result<Self> {
        valid_schema(&options.schema)?;
        let config = config(url)?;
        let client = config.clone().connect(tls::LazyTls).map_err(|e| {
            StoreError::Schema(format!(
                "cannot connect to {}: {}",
                redact_url(url),
                describe(&e)
            ))
        })?;
        let mut store = PostgresStore {
            client,
            config,
            location: format!("{} (schema {})", redact_url(url), options.schema),
            names: Names::new(&options.schema),
            wait_for_lock: options.wait_for_lock,
        };
        store.migrate(options.create)?;
        Ok(store)
    }

    fn migrate(&mut self, create: bool) -> Result<()> {
        let n = &self.names;
        let vector_schema: Option<String> = self
            .client
            .query_opt(
                "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                 WHERE e.extname = 'vector'",
                &[],
            )?
            .map(|r| r.get(0));
        let tables_exist: bool = self
            .client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{}.goldset_migrations", quote(&n.schema))],
            )?
            .get(0);
        if !tables_exist && !create {
            return Err(StoreError::Missing(format!(
                "{} holds no goldset tables (create them with `goldset init` or `goldset restore`)",
                self.location
            )));
        }
        let vector_schema = match vector_schema {
            Some(s) => s,
            None => {
                let available: bool = self
                    .client
                    .query_one("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')", &[])?
                    .get(0);
                if !available {
                    return Err(StoreError::Schema(
                        "the pgvector extension is not installed on this server (https://github.com/pgvector/pgvector#installation)".into(),
                    ));
                }
                self.client
                    .batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
                    .map_err(|e| {
                        StoreError::Schema(format!(
                            "CREATE EXTENSION vector failed: {} (ask a superuser to run it once)",
                            describe(&e)
                        ))
                    })?;
                self.client
                    .query_one(
                        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                         WHERE e.extname = 'vector'",
                        &[],
                    )?
                    .get(0)
            }
        };
        self.names.vector = format!("{}.vector", quote(&vector_schema));
        let n = &self.names;
        let migrations = postgres_migrations(n);
        let mut tx = self.client.transaction()?;
        // One migrator at a time, per schema.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(n.lock_key ^ 1)])?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {m} (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            schema = quote(&n.schema),
            m = n.migrations
        ))?;
        let current: i32 = tx
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {}", n.migrations),
                &[],
            )?
            .get(0);
        if current as usize > migrations.len() {
            return Err(StoreError::Schema(format!(
                "schema {} is at version {current}; this goldset knows up to {} — upgrade goldset",
                n.schema,
                schema::SCHEMA_VERSION
            )));
        }
        for (i, sql) in migrations.iter().enumerate().skip(current as usize) {
            tracing::info!(version = i + 1, "applying PostgreSQL migration");
            tx.batch_execute(sql)?;
            tx.execute(
                &format!("INSERT INTO {} (version) VALUES ($1)", n.migrations),
                &[&(i as i32 + 1)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Finds a client tool (in `tools.pg_bin` or on `PATH`) and refuses one older than the server.
    fn tool(&mut self, tools: &NativeTools, name: &str) -> Result<Tool> {
        let path = match &tools.pg_bin {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        };
        let out = Command::new(&path).arg("--version").output().map_err(|e| {
            StoreError::Schema(format!(
                "cannot run {}: {e} (install the PostgreSQL client tools or pass --pg-bin DIR)",
                path.display()
            ))
        })?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let server: String = self
            .client
            .query_one("SHOW server_version_num", &[])?
            .get(0);
        let (tool_major, server_major) = (major(&version), major(&server));
        if let (Some(t), Some(s)) = (tool_major, server_major) {
            if t < s {
                return Err(StoreError::Refused(format!(
                    "{} is {version}, older than the PostgreSQL {s} server; use the client tools of version {s} or newer (--pg-bin DIR)",
                    path.display()
                )));
            }
        }
        Ok(Tool { path, version })
    }

    /// A command for a client tool, connected through `PG*` variables (the password never
    /// appears on a command line).
    fn command(&self, tool: &Path) -> Command {
        let c = &self.config;
        let mut cmd = Command::new(tool);
        for var in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
            "PGSSLMODE",
            "PGSERVICE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        if let Some(host) = c.get_hosts().first() {
            match host {
                postgres::config::Host::Tcp(h) => cmd.env("PGHOST", h),
                #[cfg(unix)]
                postgres::config::Host::Unix(p) => cmd.env("PGHOST", p),
            };
        }
        if let Some(port) = c.get_ports().first() {
            cmd.env("PGPORT", port.to_string());
        }
        if let Some(user) = c.get_user() {
            cmd.env("PGUSER", user);
        }
        if let Some(password) = c.get_password() {
            cmd.env("PGPASSWORD", String::from_utf8_lossy(password).into_owned());
        }
        if let Some(db) = c.get_dbname() {
            cmd.env("PGDATABASE", db);
        }
        cmd.env(
            "PGSSLMODE",
            match c.get_ssl_mode() {
                SslMode::Disable => "disable",
                SslMode::Require => "require",
                _ => "prefer",
            },
        );
        cmd.env("PGAPPNAME", "goldset");
        cmd
    }

    /// Takes this schema's session-level restore lock: waits for it (saying who holds it) or,
    /// without `wait_for_lock`, fails at once naming the holder.
    fn acquire_restore_lock(&mut self) -> Result<()> {
        let key = self.names.lock_key;
        let locked: bool = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
            .get(0);
        if !locked {
            let holder = self.lock_holder()?;
            if !self.wait_for_lock {
                return Err(StoreError::Locked(format!(
                    "another restore into schema {} is running: {holder} holds its lock (retry later, or use --wait)",
                    self.names.schema
                )));
            }
            tracing::warn!(
                "waiting for another restore into schema {}: {holder}",
                self.names.schema
            );
            self.client
                .execute("SELECT pg_advisory_lock($1)", &[&key])?;
        }
        Ok(())
    }

    /// Who holds this schema's restore lock, for the message.
    fn lock_holder(&mut self) -> Result<String> {
        let key = self.names.lock_key;
        let row = self.client.query_opt(
            "SELECT a.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''),
                    coalesce(host(a.client_addr), 'local'), to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ')
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                AND l.classid = (($1::bigint >> 32) & 4294967295)::oid
                AND l.objid = ($1::bigint & 4294967295)::oid",
            &[&key],
        )?;
        Ok(match row {
            Some(r) => format!(
                "pid {} (user {}, application {}, from {}, connected since {})",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, String>(3),
                r.get::<_, String>(4)
            ),
            None => "another session".into(),
        })
    }
}

/// A PostgreSQL client tool and the version it reports.
struct Tool {
    path: PathBuf,
    version: String,
}

/// The major version in `pg_dump (PostgreSQL) 18.3` or in a `server_version_num` like 180003.
fn major(version: &str) -> Option<u32> {
    let number = version
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let digits: String = number.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u32 = digits.parse().ok()?;
    Some(if n >= 100_000 { n / 10_000 } else { n })
}

/// Runs a native tool, turning a failure into an error with its message.
fn run_tool(cmd: &mut Command, name: &str) -> Result<()> {
    let out = cmd.output().map_err(|e| {
        StoreError::Refused(format!(
            "cannot run {name}: {e} (install the PostgreSQL client tools or pass --pg-bin)"
        ))
    })?;
    if !out.status.success() {
        return Err(StoreError::Refused(format!(
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// PostgreSQL migrations; entry `i` brings the schema from version `i` to `i + 1`.
fn postgres_migrations(n: &Names) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE {a} (
             id           uuid PRIMARY KEY,
             url          text NOT NULL,
             content_type text NOT NULL,
             status       text NOT NULL,
             created_at   timestamptz NOT NULL,
             findings     jsonb NOT NULL
         );
         CREATE INDEX ON {a} (created_at, id);
         CREATE INDEX ON {a} (status, created_at, id);
         CREATE TABLE {c} (
             id              uuid PRIMARY KEY,
             analysis_id     uuid NOT NULL REFERENCES {a} (id) ON DELETE CASCADE,
             chunk_index     integer NOT NULL,
             content         text NOT NULL,
             section_title   text,
             section_path    text,
             content_type    text NOT NULL,
             embedding       {v},
             embedding_model text,
             UNIQUE (analysis_id, chunk_index)
         );
         CREATE TABLE {r} (
             id           uuid PRIMARY KEY,
             analysis_id  uuid NOT NULL UNIQUE REFERENCES {a} (id) ON DELETE CASCADE,
             summary      text,
             key_findings jsonb NOT NULL,
             metadata     jsonb NOT NULL
         );",
            a = n.analyses,
            c = n.chunks,
            r = n.artifacts,
            v = n.vector
        ),
        // IF NOT EXISTS: loading a version-1 snapshot keeps the cache table it does not hold.
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
             model          text NOT NULL,
             content_sha256 bytea NOT NULL,
             embedding      bytea NOT NULL,
             PRIMARY KEY (model, content_sha256)
         )",
            n.cache
        ),
        // Version 3 rebuilt SQLite's cache table; a PostgreSQL heap row already keeps a vector
        // inline, so here the step only documents the table and keeps the versions in step.
        format!(
            "COMMENT ON TABLE {} IS 'goldset embedding cache: vectors by model and SHA-256 of the text; derived data, never backed up'",
            n.cache
        ),
    ]
}

impl Store for PostgresStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn reclaim_space(&mut self) -> Result<Option<Compaction>> {
        Ok(None)
    }

    fn native_dump(&mut self, target: &Path, tools: &NativeTools) -> Result<NativeSnapshot> {
        let tool = self.tool(tools, "pg_dump")?;
        let mut cmd = self.command(&tool.path);
        cmd.arg("--format=custom")
            .arg("--no-owner")
            .arg("--no-privileges")
            .arg("--file")
            .arg(target);
        let n = &self.names;
        for table in [
            &n.analyses,
            &n.chunks,
            &n.artifacts,
            &n.cache,
            &n.migrations,
        ] {
            cmd.arg(format!("--table={table}"));
        }
        // pg_dump reads the snapshot our transaction exports, so the counts in the manifest are
        // those of the very rows it dumps, whatever commits meanwhile.
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let exported: String = tx.query_one("SELECT pg_export_snapshot()", &[])?.get(0);
        let held = inventory(&mut tx, n)?;
        let models = embedding_models(&mut tx, n)?;
        let version: i32 = tx
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {}", n.migrations),
                &[],
            )?
            .get(0);
        cmd.arg(format!("--snapshot={exported}"));
        run_tool(&mut cmd, "pg_dump")?;
        tx.commit()?;
        Ok(NativeSnapshot {
            kind: "postgres-custom".into(),
            tool: tool.version,
            schema: Some(n.schema.clone()),
            schema_version: version as u32,
            inventory: held,
            embedding_models: models,
        })
    }

    fn native_load(
        &mut self,
        source: &Path,
        snapshot: &NativeSnapshot,
        tools: &NativeTools,
    ) -> Result<()> {
        let tool = self.tool(tools, "pg_restore")?;
        if let (Some(dumped), Some(restorer)) = (major(&snapshot.tool), major(&tool.version)) {
            if dumped > restorer {
                return Err(StoreError::Refused(format!(
                    "the snapshot was written by {} and is newer than {} ({}); use pg_restore {dumped} or newer (--pg-bin DIR)",
                    snapshot.tool,
                    tool.path.display(),
                    tool.version
                )));
            }
        }
        if snapshot.schema.as_deref() != Some(self.names.schema.as_str()) {
            return Err(StoreError::Refused(format!(
                "the snapshot holds schema {}; load it with --schema {0}",
                snapshot.schema.as_deref().unwrap_or("?")
            )));
        }
        // One restore at a time per schema, goldset's or a load.
        self.acquire_restore_lock()?;
        let key = self.names.lock_key;
        // The archive recreates goldset's tables (dropping the existing ones first) in one
        // transaction: a failed load changes nothing.
        let mut cmd = self.command(&tool.path);
        cmd.args([
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--no-privileges",
            "--clean",
            "--if-exists",
        ]);
        cmd.arg(format!(
            "--dbname={}",
            self.config.get_dbname().unwrap_or("postgres")
        ));
        cmd.arg(source);
        let loaded = run_tool(&mut cmd, "pg_restore");
        let _ = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&key]);
        loaded
    }

    fn snapshot(&mut self) -> Result<Box<dyn ReadSnapshot + '_>> {
        let tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        Ok(Box::new(PgSnapshot {
            tx,
            names: &self.names,
        }))
    }

    fn begin(&mut self) -> Result<Box<dyn WriteTransaction + '_>> {
        self.acquire_restore_lock()?;
        let key = self.names.lock_key;
        let started = self.client.batch_execute("BEGIN");
        if let Err(e) = started {
            let _ = self
                .client
                .execute("SELECT pg_advisory_unlock($1)", &[&key]);
            return Err(e.into());
        }
        Ok(Box::new(PgWrite {
            client: &mut self.client,
            names: &self.names,
            done: false,
            vector_type: None,
            rebuild: None,
        }))
    }
}

struct PgSnapshot<'c> {
    tx: Transaction<'c>,
    names: &'c Names,
}

/// `WHERE a.status = ANY($1)` (or nothing) and its parameter.
struct StatusClause {
    sql: &'static str,
    statuses: Vec<String>,
}

impl StatusClause {
    fn new(filter: &StatusFilter) -> Self {
        match filter {
            StatusFilter::All => StatusClause {
                sql: "",
                statuses: Vec::new(),
            },
            StatusFilter::Only(list) => StatusClause {
                sql: "WHERE a.status = ANY($1)",
                statuses: list.clone(),
            },
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        if self.sql.is_empty() {
            Vec::new()
        } else {
            vec![&self.statuses]
        }
    }
}

fn inventory(client: &mut impl postgres::GenericClient, n: &Names) -> Result<Inventory> {
    let mut inv = Inventory::default();
    for r in client.query(
        &format!(
            "SELECT status, count(*) FROM {} GROUP BY status",
            n.analyses
        ),
        &[],
    )? {
        inv.analyses_by_status
            .insert(r.get(0), r.get::<_, i64>(1) as u64);
    }
    let counts = client.query_one(
        &format!(
            "SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})",
            n.chunks, n.artifacts
        ),
        &[],
    )?;
    inv.chunks = counts.get::<_, i64>(0) as u64;
    inv.artifacts = counts.get::<_, i64>(1) as u64;
    Ok(inv)
}

fn embedding_models(
    client: &mut impl postgres::GenericClient,
    n: &Names,
) -> Result<Vec<EmbeddingModel>> {
    let rows = client.query(
        &format!(
            "SELECT coalesce(embedding_model, ''), vector_dims(embedding), count(*) FROM {}
              WHERE embedding IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC, 1",
            n.chunks
        ),
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| EmbeddingModel {
            model: r.get(0),
            dimension: r.get::<_, i32>(1) as usize,
            chunks: r.get::<_, i64>(2) as u64,
        })
        .collect())
}

/// The (model, text digest) pairs that chunks use.
fn used_cache_keys(n: &Names) -> String {
    format!(
        "SELECT DISTINCT embedding_model AS model, sha256(convert_to(content, 'UTF8')) AS digest
           FROM {} WHERE embedding_model IS NOT NULL",
        n.chunks
    )
}

fn embedding_cache(
    client: &mut impl postgres::GenericClient,
    n: &Names,
) -> Result<Vec<CacheUsage>> {
    let rows = client.query(
        &format!(
            "WITH used AS ({})
             SELECT c.model, octet_length(c.embedding) / 4, count(*),
                    sum(octet_length(c.embedding))::bigint, count(*) FILTER (WHERE u.model IS NULL)
               FROM {} c LEFT JOIN used u ON u.model = c.model AND u.digest = c.content_sha256
              GROUP BY 1, 2 ORDER BY 1, 2",
            used_cache_keys(n),
            n.cache
        ),
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| CacheUsage {
            model: r.get(0),
            dimension: r.get::<_, i32>(1) as usize,
            entries: r.get::<_, i64>(2) as u64,
            bytes: r.get::<_, i64>(3) as u64,
            unused: r.get::<_, i64>(4) as u64,
        })
        .collect())
}

fn micros(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_unix_micros((t.unix_timestamp_nanos() / 1000) as i64)
}

fn offset_date_time(t: Timestamp) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.unix_micros()) * 1000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {t}: {e}")))
}

fn analysis_from_row(r: &Row) -> Analysis {
    let Json(findings): Json<Vec<Finding>> = r.get(5);
    Analysis {
        id: r.get(0),
        url: r.get(1),
        content_type: r.get(2),
        status: r.get(3),
        created_at: micros(r.get(4)),
        findings,
        chunks: Vec::new(),
        artifact: None,
    }
}

fn chunk_from_row(r: &Row) -> (Uuid, Chunk) {
    (
        r.get(1),
        Chunk {
            id: r.get(0),
            chunk_index: i64::from(r.get::<_, i32>(2)),
            content: r.get(3),
            section_title: r.get(4),
            section_path: r.get(5),
            content_type: r.get(6),
        },
    )
}

fn artifact_from_row(r: &Row) -> (Uuid, Artifact) {
    let Json(key_findings): Json<Vec<Value>> = r.get(3);
    let Json(metadata): Json<Map<String, Value>> = r.get(4);
    (
        r.get(1),
        Artifact {
            id: r.get(0),
            summary: r.get(2),
            key_findings,
            metadata,
        },
    )
}

/// One portal's rows, fetched a page at a time.
struct Paged {
    portal: postgres::Portal,
    page: VecDeque<Row>,
    exhausted: bool,
}

impl Paged {
    fn next(&mut self, tx: &mut Transaction<'_>) -> Result<Option<Row>> {
        if self.page.is_empty() && !self.exhausted {
            let rows = tx.query_portal(&self.portal, FETCH_ROWS)?;
            self.exhausted = rows.len() < FETCH_ROWS as usize;
            self.page.extend(rows);
        }
        Ok(self.page.pop_front())
    }
}

impl ReadSnapshot for PgSnapshot<'_> {
    fn inventory(&mut self) -> Result<Inventory> {
        inventory(&mut self.tx, self.names)
    }

    fn embedding_models(&mut self) -> Result<Vec<EmbeddingModel>> {
        embedding_models(&mut self.tx, self.names)
    }

    fn counts(&mut self, filter: &StatusFilter) -> Result<Counts> {
        let n = self.names;
        let status = StatusClause::new(filter);
        let clause = status.sql;
        let sql = format!(
            "SELECT (SELECT count(*) FROM {a} a {clause}),
                    (SELECT count(*) FROM {a} a JOIN {c} c ON c.analysis_id = a.id {clause}),
                    (SELECT count(*) FROM {a} a JOIN {r} r ON r.analysis_id = a.id {clause})",
            a = n.analyses,
            c = n.chunks,
            r = n.artifacts
        );
        let row = self.tx.query_one(&sql, &status.params())?;
        Ok(Counts {
            total_analyses: row.get::<_, i64>(0) as u64,
            total_chunks: row.get::<_, i64>(1) as u64,
            total_artifacts: row.get::<_, i64>(2) as u64,
        })
    }

    fn for_each_analysis(
        &mut self,
        filter: &StatusFilter,
        visit: &mut dyn FnMut(Analysis) -> Result<()>,
    ) -> Result<()> {
        let n = self.names;
        let status = StatusClause::new(filter);
        let (clause, params) = (status.sql, status.params());
        let order = "ORDER BY a.created_at, a.id";
        let mut bind = |sql: String| -> Result<Paged> {
            Ok(Paged {
                portal: self.tx.bind(&sql, &params)?,
                page: VecDeque::new(),
                exhausted: false,
            })
        };
        let mut analyses = bind(format!(
            "SELECT {} FROM {} a {clause} {order}",
            schema::qualified("a", schema::ANALYSIS_COLUMNS),
            n.analyses
        ))?;
        // Children come through a lateral join on the ordered analysis keys: a nested loop over
        // the (analysis_id, chunk_index) index that streams in backup order, instead of
        // sorting every wide row (which spills to disk).
        let keys = format!(
            "(SELECT a.id, a.created_at FROM {} a {clause} {order}) a",
            n.analyses
        );
        let mut chunks = bind(format!(
            "SELECT {} FROM {keys} CROSS JOIN LATERAL
                 (SELECT * FROM {} c WHERE c.analysis_id = a.id ORDER BY c.chunk_index) c
             {order}, c.chunk_index",
            schema::qualified("c", schema::CHUNK_COLUMNS),
            n.chunks
        ))?;
        let mut artifacts = bind(format!(
            "SELECT {} FROM {keys} CROSS JOIN LATERAL
                 (SELECT * FROM {} r WHERE r.analysis_id = a.id) r
             {order}",
            schema::qualified("r", schema::ARTIFACT_COLUMNS),
            n.artifacts
        ))?;
        let tx = &mut self.tx;
        let mut next_chunk = chunks.next(tx)?.map(|r| chunk_from_row(&r));
        let mut next_artifact = artifacts.next(tx)?.map(|r| artifact_from_row(&r));
        // The three streams share one order, so each analysis's children are at their heads.
        while let Some(row) = analyses.next(tx)? {
            let mut analysis = analysis_from_row(&row);
            while next_chunk
                .as_ref()
                .is_some_and(|(owner, _)| *owner == analysis.id)
            {
                let (_, chunk) = next_chunk.take().expect("checked above");
                analysis.chunks.push(chunk);
                next_chunk = chunks.next(tx)?.map(|r| chunk_from_row(&r));
            }
            if next_artifact
                .as_ref()
                .is_some_and(|(owner, _)| *owner == analysis.id)
            {
                analysis.artifact = next_artifact.take().map(|(_, a)| a);
                next_artifact = artifacts.next(tx)?.map(|r| artifact_from_row(&r));
            }
            visit(analysis)?;
        }
        Ok(())
    }

    fn embedding_cache(&mut self) -> Result<Vec<CacheUsage>> {
        embedding_cache(&mut self.tx, self.names)
    }

    fn orphans(&mut self) -> Result<(u64, Vec<String>)> {
        let n = self.names;
        let rows = self.tx.query(
            &format!(
                "SELECT 'chunk ' || c.id || ' of missing analysis ' || c.analysis_id FROM {c} c
                  WHERE NOT EXISTS (SELECT 1 FROM {a} a WHERE a.id = c.analysis_id)
                 UNION ALL
                 SELECT 'artifact ' || r.id || ' of missing analysis ' || r.analysis_id FROM {r} r
                  WHERE NOT EXISTS (SELECT 1 FROM {a} a WHERE a.id = r.analysis_id)",
                a = n.analyses,
                c = n.chunks,
                r = n.artifacts
            ),
            &[],
        )?;
        let examples = rows
            .iter()
            .take(crate::report::EXAMPLES_PER_CHECK)
            .map(|r| r.get(0))
            .collect();
        Ok((rows.len() as u64, examples))
    }

    fn embedding_health(&mut self, model: &str, dimension: usize) -> Result<EmbeddingHealth> {
        let n = self.names;
        let row = self.tx.query_one(
            &format!(
                "SELECT count(*),
                        count(*) FILTER (WHERE embedding IS NULL),
                        count(*) FILTER (WHERE embedding IS NOT NULL AND embedding_model IS DISTINCT FROM $1),
                        count(*) FILTER (WHERE embedding IS NOT NULL AND embedding_model = $1
                                           AND vector_dims(embedding) <> $2)
                   FROM {}",
                n.chunks
            ),
            &[&model, &(dimension as i32)],
        )?;
        let mut h = EmbeddingHealth {
            chunks: row.get::<_, i64>(0) as u64,
            missing: row.get::<_, i64>(1) as u64,
            other_model: row.get::<_, i64>(2) as u64,
            wrong_dimension: row.get::<_, i64>(3) as u64,
            examples: Vec::new(),
        };
        if h.missing + h.other_model + h.wrong_dimension > 0 {
            let rows = self.tx.query(
                &format!(
                    "SELECT id::text, embedding_model, vector_dims(embedding) FROM {}
                      WHERE embedding IS NULL OR embedding_model IS DISTINCT FROM $1 OR vector_dims(embedding) <> $2
                      ORDER BY id LIMIT $3",
                    n.chunks
                ),
                &[&model, &(dimension as i32), &(crate::report::EXAMPLES_PER_CHECK as i64)],
            )?;
            for r in rows {
                let id: String = r.get(0);
                let found: Option<String> = r.get(1);
                let dims: Option<i32> = r.get(2);
                h.examples.push(match (found, dims) {
                    (_, None) => format!("chunk {id}: no embedding"),
                    (found, _) if found.as_deref() != Some(model) => {
                        format!(
                            "chunk {id}: embedded by {:?}, expected {model:?}",
                            found.unwrap_or_default()
                        )
                    }
                    (_, Some(d)) => format!("chunk {id}: dimension {d}, expected {dimension}"),
                });
            }
        }
        Ok(h)
    }
}

fn copy_sql(table: &str, columns: &[&str]) -> String {
    format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        columns.join(", ")
    )
}

/// Columns of a chunk row as goldset writes it: the chunk, then its embedding.
fn chunk_columns() -> Vec<&'static str> {
    [schema::CHUNK_COLUMNS, schema::EMBEDDING_COLUMNS].concat()
}

/// Binary `COPY` data of the three tables for a run of batches, each table to its own writer.
struct TableRows<A: Write, C: Write, R: Write> {
    analyses: BinaryRows<A>,
    chunks: BinaryRows<C>,
    artifacts: BinaryRows<R>,
}

impl<A: Write, C: Write, R: Write> TableRows<A, C, R> {
    fn new(analyses: A, chunks: C, artifacts: R, vector: Type) -> Self {
        TableRows {
            analyses: BinaryRows::new(
                analyses,
                schema::ANALYSIS_COLUMNS,
                vec![
                    Type::UUID,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TIMESTAMPTZ,
                    Type::JSONB,
                ],
            ),
            chunks: BinaryRows::new(
                chunks,
                &chunk_columns(),
                vec![
                    Type::UUID,
                    Type::UUID,
                    Type::INT4,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    vector,
                    Type::TEXT,
                ],
            ),
            artifacts: BinaryRows::new(
                artifacts,
                schema::ARTIFACT_COLUMNS,
                vec![Type::UUID, Type::UUID, Type::TEXT, Type::JSONB, Type::JSONB],
            ),
        }
    }

    /// Appends `analyses` with their chunks and artifacts; with `vectors`, one per chunk in
    /// order, made by `model`.
    fn write(
        &mut self,
        analyses: &[Analysis],
        vectors: Option<impl Iterator<Item = Vector>>,
        model: Option<&str>,
    ) -> Result<()> {
        let mut vectors = vectors;
        let model = vectors.as_ref().and(model);
        for a in analyses {
            let created = offset_date_time(a.created_at)?;
            self.analyses.write(&[
                &a.id,
                &a.url,
                &a.content_type,
                &a.status,
                &created,
                &Json(&a.findings),
            ])?;
            for c in &a.chunks {
                let vector = match vectors.as_mut() {
                    Some(v) => Some(v.next().ok_or_else(|| {
                        StoreError::Refused(format!(
                            "no embedding was handed over for chunk {}",
                            c.id
                        ))
                    })?),
                    None => None,
                };
                self.chunks.write(&[
                    &c.id,
                    &a.id,
                    &(c.chunk_index as i32),
                    &c.content,
                    &c.section_title,
                    &c.section_path,
                    &c.content_type,
                    &vector,
                    &model,
                ])?;
            }
            if let Some(r) = &a.artifact {
                self.artifacts.write(&[
                    &r.id,
                    &a.id,
                    &r.summary,
                    &Json(&r.key_findings),
                    &Json(&r.metadata),
                ])?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(A, C, R)> {
        Ok((
            self.analyses.finish()?,
            self.chunks.finish()?,
            self.artifacts.finish()?,
        ))
    }
}

/// A write transaction on the store's connection, under the schema's advisory lock. Dropped
/// without commit, it rolls back and releases the lock.
struct PgWrite<'c> {
    client: &'c mut Client,
    names: &'c Names,
    done: bool,
    /// The `vector` type's OID-bearing descriptor, looked up once.
    vector_type: Option<Type>,
    /// In a bulk load: the SQL that rebuilds the indexes and constraints dropped for it.
    rebuild: Option<String>,
}

impl Drop for PgWrite<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.client.batch_execute("ROLLBACK");
        }
        let _ = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.names.lock_key]);
    }
}

impl PgWrite<'_> {
    /// Runs `COPY table (columns) FROM STDIN (FORMAT binary)` with `data`, already encoded.
    fn copy_in(&mut self, table: &str, columns: &[&str], data: &mut impl Read) -> Result<()> {
        let mut writer = self.client.copy_in(&copy_sql(table, columns))?;
        io::copy(data, &mut writer).map_err(copy::io_error)?;
        writer.finish()?;
        Ok(())
    }

    /// The tables were emptied in this transaction: drop their indexes and constraints, load,
    /// and rebuild them once before COMMIT (as pg_restore does) instead of maintaining them row by
    /// row. The rebuild validates everything the constraints promise. Readers wait for the
    /// commit (ACCESS EXCLUSIVE), as they would for `pg_restore --clean`. If anything else
    /// depends on these constraints (an application's foreign key), the load stays row by row.
    fn start_bulk_load(&mut self) -> Result<()> {
        let n = self.names;
        let tables = [n.analyses.as_str(), n.chunks.as_str(), n.artifacts.as_str()];
        let rows = self.client.query(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype::text
               FROM pg_constraint c
              WHERE c.conrelid = ANY (ARRAY[$1::text::regclass, $2::text::regclass, $3::text::regclass]::oid[])
                AND c.contype IN ('p', 'u', 'f')",
            &[&tables[0], &tables[1], &tables[2]],
        )?;
        let indexes = self.client.query(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
               FROM pg_index i
              WHERE i.indrelid = ANY (ARRAY[$1::text::regclass, $2::text::regclass, $3::text::regclass]::oid[])
                AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            &[&tables[0], &tables[1], &tables[2]],
        )?;
        let (mut drop, mut keys, mut foreign) = (Vec::new(), Vec::new(), Vec::new());
        for r in &rows {
            let (table, name, definition, kind): (String, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let add = format!(
                "ALTER TABLE {table} ADD CONSTRAINT {} {definition}",
                quote(&name)
            );
            let dropped = format!("ALTER TABLE {table} DROP CONSTRAINT {}", quote(&name));
            if kind == "f" {
                drop.insert(0, dropped);
                foreign.push(add);
            } else {
                drop.push(dropped);
                keys.push(add);
            }
        }
        for r in &indexes {
            let (name, definition): (String, String) = (r.get(0), r.get(1));
            drop.push(format!("DROP INDEX {name}"));
            keys.push(definition);
        }
        self.client.batch_execute("SAVEPOINT goldset_bulk")?;
        match self.client.batch_execute(&drop.join(";\n")) {
            Ok(()) => {
                self.client
                    .batch_execute("RELEASE SAVEPOINT goldset_bulk")?;
                keys.extend(foreign);
                self.rebuild = Some(keys.join(";\n"));
            }
            Err(e) => {
                tracing::info!(
                    "bulk load not possible, loading row by row: {}",
                    describe(&e)
                );
                self.client
                    .batch_execute("ROLLBACK TO SAVEPOINT goldset_bulk")?;
            }
        }
        Ok(())
    }

    fn vector_type(&mut self) -> Result<Type> {
        if self.vector_type.is_none() {
            let stmt = self
                .client
                .prepare(&format!("SELECT NULL::{}", self.names.vector))?;
            self.vector_type = Some(stmt.columns()[0].type_().clone());
        }
        Ok(self.vector_type.clone().expect("set above"))
    }
}

impl WriteTransaction for PgWrite<'_> {
    fn inventory(&mut self) -> Result<Inventory> {
        inventory(self.client, self.names)
    }

    fn delete_all(&mut self) -> Result<()> {
        let n = self.names;
        self.client.batch_execute(&format!(
            "DELETE FROM {}; DELETE FROM {}; DELETE FROM {};",
            n.chunks, n.artifacts, n.analyses
        ))?;
        self.start_bulk_load()
    }

    fn load_in_bulk_if_empty(&mut self) -> Result<bool> {
        let n = self.names;
        let empty = format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {}) AND NOT EXISTS (SELECT 1 FROM {}) AND NOT EXISTS (SELECT 1 FROM {})",
            n.analyses, n.chunks, n.artifacts
        );
        if !self.client.query_one(&empty, &[])?.get::<_, bool>(0) {
            return Ok(false);
        }
        // Bulk mode alters the tables: take their exclusive locks first, then make sure no one
        // wrote in between.
        self.client.batch_execute(&format!(
            "LOCK TABLE {}, {}, {} IN ACCESS EXCLUSIVE MODE",
            n.analyses, n.chunks, n.artifacts
        ))?;
        if !self.client.query_one(&empty, &[])?.get::<_, bool>(0) {
            return Ok(false);
        }
        self.start_bulk_load()?;
        Ok(true)
    }

    fn existing(&mut self, analyses: &[Analysis]) -> Result<Vec<Existing>> {
        let n = self.names;
        let analysis_ids: Vec<Uuid> = analyses.iter().map(|a| a.id).collect();
        let chunk_ids: Vec<Uuid> = analyses
            .iter()
            .flat_map(|a| a.chunks.iter().map(|c| c.id))
            .collect();
        let artifact_ids: Vec<Uuid> = analyses
            .iter()
            .filter_map(|a| a.artifact.as_ref().map(|r| r.id))
            .collect();
        let rows = self.client.query(
            &format!(
                "SELECT 0, id, id FROM {a} WHERE id = ANY($1)
                 UNION ALL SELECT 1, id, analysis_id FROM {c} WHERE id = ANY($2)
                 UNION ALL SELECT 2, id, analysis_id FROM {r} WHERE id = ANY($3)",
                a = n.analyses,
                c = n.chunks,
                r = n.artifacts
            ),
            &[&analysis_ids, &chunk_ids, &artifact_ids],
        )?;
        Ok(rows
            .iter()
            .map(|r| Existing {
                kind: match r.get::<_, i32>(0) {
                    0 => RecordKind::Analysis,
                    1 => RecordKind::Chunk,
                    _ => RecordKind::Artifact,
                },
                id: r.get(1),
                owner: r.get(2),
            })
            .collect())
    }

    fn delete_analyses(&mut self, ids: &[Uuid]) -> Result<()> {
        let ids = ids.to_vec();
        self.client.execute(
            &format!("DELETE FROM {} WHERE id = ANY($1)", self.names.analyses),
            &[&ids],
        )?;
        Ok(())
    }

    fn insert_batch(
        &mut self,
        analyses: &[Analysis],
        embeddings: Option<ChunkEmbeddings<'_>>,
    ) -> Result<()> {
        let mut rows = TableRows::new(Vec::new(), Vec::new(), Vec::new(), self.vector_type()?);
        let vectors = embeddings.map(|e| e.vectors.iter().map(|v| Vector::from(v.clone())));
        rows.write(analyses, vectors, embeddings.map(|e| e.model))?;
        let (analyses, chunks, artifacts) = rows.finish()?;
        let n = self.names;
        // Parents first: outside a bulk load the foreign keys are checked row by row.
        self.copy_in(
            &n.analyses,
            schema::ANALYSIS_COLUMNS,
            &mut analyses.as_slice(),
        )?;
        self.copy_in(&n.chunks, &chunk_columns(), &mut chunks.as_slice())?;
        self.copy_in(
            &n.artifacts,
            schema::ARTIFACT_COLUMNS,
            &mut artifacts.as_slice(),
        )
    }

    /// In a bulk load, one `COPY` of chunks stays open for the whole stream: the server loads
    /// rows while the next batch is parsed and embedded, instead of finishing a statement and
    /// waiting for the next one three times a batch. Analyses and artifacts (a tenth of the
    /// bytes) wait in unnamed temporary files and are copied after the chunks; the foreign keys
    /// are dropped until the rebuild before `COMMIT` checks them all.
    fn insert_stream(&mut self, model: &str, next: &mut BatchSource<'_>) -> Result<()> {
        if self.rebuild.is_none() {
            return insert_each(self, model, next);
        }
        let n = self.names;
        let vector = self.vector_type()?;
        let spool = || -> Result<BufWriter<File>> {
            let file = tempfile::tempfile().map_err(|e| {
                let dir = std::env::temp_dir();
                io::Error::new(
                    e.kind(),
                    format!("cannot create one in {}: {e}", dir.display()),
                )
            })?;
            Ok(BufWriter::new(file))
        };
        let mut chunk_copy = self
            .client
            .copy_in(&copy_sql(&n.chunks, &chunk_columns()))?;
        let mut rows = TableRows::new(spool()?, &mut chunk_copy, spool()?, vector);
        while let Some(batch) = next()? {
            let vectors = batch.vectors.map(|v| v.into_iter().map(Vector::from));
            rows.write(&batch.analyses, vectors, Some(model))?;
        }
        let (analyses, _, artifacts) = rows.finish()?;
        chunk_copy.finish()?;
        for (table, columns, spooled) in [
            (&n.analyses, schema::ANALYSIS_COLUMNS, analyses),
            (&n.artifacts, schema::ARTIFACT_COLUMNS, artifacts),
        ] {
            let mut file = spooled.into_inner().map_err(|e| e.into_error())?;
            file.rewind()?;
            self.copy_in(table, columns, &mut BufReader::new(file))?;
        }
        Ok(())
    }

    fn embedding_models(&mut self) -> Result<Vec<EmbeddingModel>> {
        embedding_models(self.client, self.names)
    }

    fn prepare_embeddings(&mut self, dimension: usize) -> Result<()> {
        let n = self.names;
        let typmod: i32 = self
            .client
            .query_one(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = 'embedding'",
                &[&n.chunks],
            )?
            .get(0);
        if typmod == dimension as i32 {
            return Ok(());
        }
        let others: bool = self
            .client
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE embedding IS NOT NULL AND vector_dims(embedding) <> $1)",
                    n.chunks
                ),
                &[&(dimension as i32)],
            )?
            .get(0);
        let column_type = if !others {
            format!("{}({dimension})", n.vector)
        } else if typmod != -1 {
            // Vectors of two dimensions coexist until a reembed has replaced them all.
            n.vector.clone()
        } else {
            return Ok(());
        };
        self.client.batch_execute(&format!(
            "ALTER TABLE {} ALTER COLUMN embedding TYPE {column_type}",
            n.chunks
        ))?;
        Ok(())
    }

    fn cached_embeddings(
        &mut self,
        model: &str,
        dimension: usize,
        digests: &[ContentDigest],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let keys: Vec<&[u8]> = digests.iter().map(|d| &d[..]).collect();
        let rows = self.client.query(
            &format!(
                "SELECT content_sha256, embedding FROM {} WHERE model = $1 AND content_sha256 = ANY($2)",
                self.names.cache
            ),
            &[&model, &keys],
        )?;
        let found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(digests
            .iter()
            .map(|d| {
                found
                    .get(&d[..])
                    .filter(|b| b.len() == dimension * 4)
                    .map(|b| blob_to_vector(b))
            })
            .collect())
    }

    fn cache_embeddings(&mut self, model: &str, entries: &[(ContentDigest, &[f32])]) -> Result<()> {
        // ON CONFLICT may touch a row once per statement: one entry per digest.
        let mut seen = std::collections::HashSet::new();
        let (keys, blobs): (Vec<&[u8]>, Vec<Vec<u8>>) = entries
            .iter()
            .filter(|(d, _)| seen.insert(*d))
            .map(|(d, v)| (&d[..], vector_to_blob(v)))
            .unzip();
        self.client.execute(
            &format!(
                "INSERT INTO {} (model, content_sha256, embedding)
                 SELECT $1, d, e FROM unnest($2::bytea[], $3::bytea[]) AS u (d, e)
                 ON CONFLICT (model, content_sha256) DO UPDATE SET embedding = EXCLUDED.embedding",
                self.names.cache
            ),
            &[&model, &keys, &blobs],
        )?;
        Ok(())
    }

    fn chunks_needing_embedding(
        &mut self,
        model: &str,
        dimension: usize,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ChunkText>> {
        let rows = self.client.query(
            &format!(
                "SELECT id, content FROM {}
                  WHERE ($1::uuid IS NULL OR id > $1)
                    AND (embedding IS NULL OR embedding_model IS DISTINCT FROM $2
                         OR vector_dims(embedding) <> $3)
                  ORDER BY id LIMIT $4",
                self.names.chunks
            ),
            &[&after, &model, &(dimension as i32), &(limit as i64)],
        )?;
        Ok(rows
            .iter()
            .map(|r| ChunkText {
                id: r.get(0),
                content: r.get(1),
            })
            .collect())
    }

    fn set_embeddings(&mut self, model: &str, updates: &[(Uuid, &[f32])]) -> Result<()> {
        let ids: Vec<Uuid> = updates.iter().map(|(id, _)| *id).collect();
        let vectors: Vec<pgvector::Vector> = updates
            .iter()
            .map(|(_, v)| pgvector::Vector::from(v.to_vec()))
            .collect();
        self.client.execute(
            &format!(
                "UPDATE {c} AS c SET embedding = u.e, embedding_model = $1
                   FROM unnest($2::uuid[], $3::{v}[]) AS u (id, e)
                  WHERE c.id = u.id",
                c = self.names.chunks,
                v = self.names.vector
            ),
            &[&model, &ids, &vectors],
        )?;
        Ok(())
    }

    fn prune_embedding_cache(&mut self, everything: bool) -> Result<(u64, u64)> {
        let n = self.names;
        let condition = if everything {
            ""
        } else {
            "WHERE NOT EXISTS (SELECT 1 FROM used u WHERE u.model = c.model AND u.digest = c.content_sha256)"
        };
        let row = self.client.query_one(
            &format!(
                "WITH used AS ({}),
                      gone AS (DELETE FROM {} c {condition} RETURNING octet_length(c.embedding) AS bytes)
                 SELECT count(*), coalesce(sum(bytes), 0)::bigint FROM gone",
                used_cache_keys(n),
                n.cache
            ),
            &[],
        )?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        if let Some(rebuild) = self.rebuild.take() {
            self.client.batch_execute(&rebuild)?;
        }
        self.client.batch_execute("COMMIT")?;
        self.done = true;
        Ok(())
    }
}
