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

mod adopted;
mod bulk;
mod cache;
mod catalog;
mod connect;
mod copy;
mod decode;
mod lock;
mod migrate;
mod native;
mod provenance;
mod read;
mod tls;
mod vectors;
mod write;

pub use connect::describe;
pub use lock::lock_key;
pub(super) use native::check_archive;

use super::layout::Layout;
use super::schema::{ANALYSES, ARTIFACTS, CHUNKS, EMBEDDING_CACHE};
use super::{
    redact_url, Compaction, NativeSnapshot, NativeTools, OpenOptions, ReadSnapshot, Result, Store,
    StoreError, WriteTransaction,
};
use connect::quote;
use postgres::{Client, Config, IsolationLevel};
use std::path::Path;

/// Where goldset keeps its bookkeeping beside an application's tables, unless the mapping says.
const BOOKKEEPING_SCHEMA: &str = "goldset";

/// A golden dataset in a PostgreSQL schema.
pub struct PostgresStore {
    client: Client,
    /// Connection parameters, for the native tools (handed over in `PG*` variables, never on a
    /// command line).
    config: Config,
    location: String,
    /// goldset's own tables (or, beside an application's, its bookkeeping tables).
    names: Names,
    /// Where the dataset is: goldset's own tables or an application's.
    layout: Layout,
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
    /// The model (and text digest) of each embedding in an application's chunks table.
    embeddings: String,
    /// Schema-qualified `vector` type (pgvector may live in another schema than ours).
    vector: String,
    /// Advisory lock key of this schema.
    lock_key: i64,
}

impl Names {
    fn new(schema: &str) -> Self {
        let q = |t: &str| format!("{}.{t}", quote(schema));
        Names {
            schema: schema.to_owned(),
            analyses: q(ANALYSES),
            chunks: q(CHUNKS),
            artifacts: q(ARTIFACTS),
            cache: q(EMBEDDING_CACHE),
            migrations: q("goldset_migrations"),
            embeddings: q("goldset_embeddings"),
            vector: "vector".into(),
            lock_key: lock_key(schema),
        }
    }
}

impl PostgresStore {
    /// Connects, checks pgvector, and creates or migrates the schema (creating only with
    /// `options.create`).
    pub fn open(url: &str, options: &OpenOptions) -> Result<Self> {
        connect::valid_schema(&options.schema)?;
        let config = connect::config(url)?;
        let started = std::time::Instant::now();
        tracing::debug!(
            hosts = ?config.get_hosts(),
            ports = ?config.get_ports(),
            user = config.get_user().unwrap_or_default(),
            dbname = config.get_dbname().unwrap_or_default(),
            ssl_mode = ?config.get_ssl_mode(),
            "connecting to PostgreSQL"
        );
        let mut client = config
            .clone()
            .connect(tls::LazyTls)
            .map_err(|e| StoreError::Connect {
                location: redact_url(url),
                reason: describe(&e),
            })?;
        if tracing::enabled!(tracing::Level::INFO) {
            let version: String = client
                .query_one("SHOW server_version", &[])
                .map(|row| row.get(0))
                .unwrap_or_default();
            tracing::info!(
                url = %redact_url(url),
                server_version = version,
                schema = options.schema,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "connected to PostgreSQL"
            );
        }
        let (location, names, layout) = match &options.mapping {
            None => (
                format!("{} (schema {})", redact_url(url), options.schema),
                Names::new(&options.schema),
                Layout::own(Some(&options.schema)),
            ),
            Some(mapping) => {
                let own = mapping
                    .goldset_schema
                    .as_deref()
                    .unwrap_or(BOOKKEEPING_SCHEMA);
                connect::valid_schema(own)?;
                (
                    format!("{} (mapped tables)", redact_url(url)),
                    Names::new(own),
                    mapping.clone(),
                )
            }
        };
        let mut store = PostgresStore {
            client,
            config,
            location,
            names,
            layout,
            wait_for_lock: options.wait_for_lock,
        };
        if options.inspect {
            // `adopt` reads the catalog only.
        } else if store.layout.owned {
            store.migrate(options.create)?;
        } else {
            store.check_mapping()?;
        }
        Ok(store)
    }

    /// Whether goldset's record of embedding models exists beside an application's tables.
    fn model_table_exists(
        client: &mut impl postgres::GenericClient,
        names: &Names,
    ) -> Result<bool> {
        Ok(client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&names.embeddings])?
            .get(0))
    }

    /// Refuses native snapshots of an application's tables: their schema is the application's.
    fn refuse_native(&self, what: &str) -> Result<()> {
        if self.layout.owned {
            return Ok(());
        }
        Err(StoreError::Refused(format!(
            "{what} works on goldset's own tables; for an application's tables use `goldset backup` / `goldset restore` (or pg_dump of your schema)"
        )))
    }
}

impl Store for PostgresStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn native_kind(&self) -> &'static str {
        "postgres-custom"
    }

    fn catalog(&mut self) -> Result<super::catalog::Catalog> {
        PostgresStore::catalog(self)
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn reclaim_space(&mut self) -> Result<Option<Compaction>> {
        Ok(None)
    }

    fn native_dump(&mut self, target: &Path, tools: &NativeTools) -> Result<NativeSnapshot> {
        self.refuse_native("dump")?;
        self.dump_native(target, tools)
    }

    fn native_load(
        &mut self,
        source: &Path,
        snapshot: &NativeSnapshot,
        tools: &NativeTools,
    ) -> Result<()> {
        self.refuse_native("load")?;
        self.load_native(source, snapshot, tools)
    }

    fn snapshot(&mut self) -> Result<Box<dyn ReadSnapshot + '_>> {
        let tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let mut tx = tx;
        let model_table = !self.layout.owned && Self::model_table_exists(&mut tx, &self.names)?;
        if !self.layout.owned {
            // Naive and text times are UTC.
            tx.batch_execute("SET LOCAL TimeZone = 'UTC'")?;
        }
        Ok(Box::new(read::PgSnapshot {
            tx,
            reading: read::Reading {
                layout: &self.layout,
                names: &self.names,
                model_table,
            },
        }))
    }

    fn begin_row_level(&mut self) -> Result<Box<dyn WriteTransaction + '_>> {
        if !self.layout.owned {
            return self.begin();
        }
        // goldset's own tables through the mapping's row-level writer: every table of the
        // catalog counts (the schema may be called `goldset` too).
        let catalog = catalog::read(&mut self.client, "")?;
        self.acquire_restore_lock()?;
        Ok(Box::new(adopted::AdoptedWrite::begin(
            &mut self.client,
            &self.names,
            &self.layout,
            catalog,
        )?))
    }

    fn begin(&mut self) -> Result<Box<dyn WriteTransaction + '_>> {
        if !self.layout.owned {
            let catalog = self.catalog()?;
            self.acquire_restore_lock()?;
            return match adopted::AdoptedWrite::begin(
                &mut self.client,
                &self.names,
                &self.layout,
                catalog,
            ) {
                Ok(tx) => Ok(Box::new(tx)),
                Err(e) => Err(e),
            };
        }
        self.acquire_restore_lock()?;
        if let Err(e) = self.client.batch_execute("BEGIN") {
            self.release_restore_lock();
            return Err(e.into());
        }
        Ok(Box::new(write::PgWrite {
            client: &mut self.client,
            names: &self.names,
            layout: &self.layout,
            done: false,
            vector_type: None,
            rebuild: None,
        }))
    }
}
