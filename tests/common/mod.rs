//! Helpers shared by the integration tests: a temporary workspace with its own database, a way
//! to run the real `goldset` binary in it, and fingerprints of what a database holds.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The sample dataset shipped in `examples/`.
pub fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/golden_dataset.json")
}

/// A backup written by the older Python implementation (copied from the team's fixtures).
pub fn python_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/python")
        .join(name)
}

pub mod embedding_server;
pub mod openai;

/// The databases a store-level test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file in the workspace.
    Sqlite,
    /// A fresh schema in the PostgreSQL server named by `GOLDSET_TEST_PG_URL`.
    Postgres,
}

/// One test per store: `store_test! { fn name(backend) { … } }` defines `name::in_sqlite` and
/// `name::in_postgres`, each running the body with `backend` set, so a PostgreSQL failure
/// carries a PostgreSQL test's name. The PostgreSQL test is `#[ignore]`d: plain `cargo test`
/// lists it as ignored (with the reason) instead of passing it without running it;
/// `scripts/test` runs it (`--include-ignored`), and then a missing server is a failure.
/// `#[needs_model]` first marks a test that also needs the real model (`model_dir`): its tests
/// are `name::in_sqlite_with_model` and `name::in_postgres_with_model`, both ignored.
macro_rules! store_test {
    ($(#[doc = $doc:literal])* #[needs_model] fn $name:ident($backend:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[cfg_attr(not(feature = "local"), allow(dead_code))]
            fn run($backend: $crate::common::Backend) $body

            #[cfg(feature = "local")]
            #[test]
            #[ignore = "needs the model: scripts/test, or GOLDSET_TEST_MODEL_DIR=… cargo test -- --include-ignored"]
            fn in_sqlite_with_model() {
                run($crate::common::Backend::Sqlite)
            }

            #[cfg(all(feature = "postgres", feature = "local"))]
            #[test]
            #[ignore = "needs PostgreSQL and the model: scripts/test, or GOLDSET_TEST_PG_URL=… GOLDSET_TEST_MODEL_DIR=… cargo test -- --include-ignored"]
            fn in_postgres_with_model() {
                run($crate::common::Backend::Postgres)
            }
        }
    };
    ($(#[doc = $doc:literal])* fn $name:ident($backend:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($backend: $crate::common::Backend) $body

            #[test]
            fn in_sqlite() {
                run($crate::common::Backend::Sqlite)
            }

            #[cfg(feature = "postgres")]
            #[test]
            #[ignore = "needs PostgreSQL: scripts/test, or GOLDSET_TEST_PG_URL=… cargo test -- --include-ignored"]
            fn in_postgres() {
                run($crate::common::Backend::Postgres)
            }
        }
    };
}

/// A test of what only PostgreSQL has: `pg_test! { fn name() { … } }` defines
/// `name::in_postgres`, ignored like the PostgreSQL half of [`store_test!`].
macro_rules! pg_test {
    ($(#[doc = $doc:literal])* fn $name:ident() $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[cfg(feature = "postgres")]
            #[test]
            #[ignore = "needs PostgreSQL: scripts/test, or GOLDSET_TEST_PG_URL=… cargo test -- --include-ignored"]
            fn in_postgres() $body
        }
    };
}

/// A test that needs the real model: `model_test! { fn name() { … } }` defines `name::with_model`,
/// ignored unless `--include-ignored` (`scripts/test` installs the model and runs it).
macro_rules! model_test {
    ($(#[doc = $doc:literal])* fn $name:ident() $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[cfg(feature = "local")]
            #[test]
            #[ignore = "needs the model: scripts/test, or GOLDSET_TEST_MODEL_DIR=… cargo test -- --include-ignored"]
            fn with_model() $body
        }
    };
}

/// The test PostgreSQL server. Only PostgreSQL tests ask, and they are ignored unless included
/// on purpose: without a server they fail rather than pass untested.
pub fn pg_url() -> String {
    std::env::var("GOLDSET_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("this PostgreSQL test needs GOLDSET_TEST_PG_URL (scripts/test starts a server)")
}

/// A temporary folder with a database of its own.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pub backend: Backend,
    /// PostgreSQL schema of this workspace (unique per workspace).
    pub schema: String,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.backend == Backend::Postgres {
            if let Ok(mut client) = postgres::Client::connect(&self.database_url, postgres::NoTls) {
                let _ =
                    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
            }
        }
    }
}

impl Workspace {
    /// A workspace whose database is an SQLite file inside it.
    pub fn new() -> Self {
        Self::on(Backend::Sqlite)
    }

    /// A workspace on `backend`, with an empty database of its own.
    pub fn on(backend: Backend) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = tempfile::tempdir().expect("temp dir");
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let schema = format!("goldset_test_{}_{n}", std::process::id());
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite:{}", dir.path().join("golden.db").display()),
            Backend::Postgres => pg_url(),
        };
        Workspace {
            dir,
            database_url,
            backend,
            schema,
        }
    }

    /// The rows of a query as text, one string per row (columns joined with `|`).
    pub fn rows(&self, sqlite_query: &str, postgres_query: &str) -> Vec<String> {
        match self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(self.path("golden.db")).unwrap();
                let mut stmt = conn.prepare(sqlite_query).unwrap();
                let n = stmt.column_count();
                stmt.query_map([], |r| {
                    Ok((0..n)
                        .map(|i| r.get::<_, Option<String>>(i).unwrap().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join("|"))
                })
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
            }
            Backend::Postgres => {
                let mut client =
                    postgres::Client::connect(&self.database_url, postgres::NoTls).unwrap();
                client
                    .batch_execute(&format!("SET search_path = {}, public", self.schema))
                    .unwrap();
                client
                    .query(postgres_query, &[])
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
                            .collect::<Vec<_>>()
                            .join("|")
                    })
                    .collect()
            }
        }
    }

    /// Every chunk's embedding, exactly (hex of the SQLite BLOB, pgvector's text form).
    pub fn embeddings(&self) -> Vec<String> {
        self.rows(
            "SELECT id, hex(embedding), embedding_model FROM chunks ORDER BY id",
            "SELECT id::text, embedding::text, embedding_model FROM chunks ORDER BY id",
        )
    }

    /// Runs SQL against the workspace's database (its schema first on the search path).
    pub fn sql(&self, statements: &str) {
        match self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(self.path("golden.db")).unwrap();
                conn.execute_batch(statements).unwrap();
            }
            Backend::Postgres => {
                let mut client =
                    postgres::Client::connect(&self.database_url, postgres::NoTls).unwrap();
                client
                    .batch_execute(&format!(
                        "SET search_path = {}, public; {statements}",
                        self.schema
                    ))
                    .unwrap();
            }
        }
    }

    /// A path inside the workspace.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `goldset ARGS` in the workspace against its database, ready to run. The Hugging Face
    /// cache is the workspace's own (empty unless a test fills it).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_goldset"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("DATABASE_URL", &self.database_url)
            .env("GOLDSET_SCHEMA", &self.schema)
            .env("HF_HOME", self.path("hf"))
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("HF_HUB_CACHE")
            .env_remove("GOLDSET_EMBEDDER")
            .env_remove("GOLDSET_LOG");
        cmd
    }

    /// Runs `goldset ARGS` in the workspace against its database.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("goldset runs")
    }

    /// Runs `goldset ARGS` and insists that it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "goldset {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Writes a generated dataset of `analyses` × 10 chunks to `name` in the workspace.
    pub fn generate(&self, name: &str, analyses: u32) {
        let n = analyses.to_string();
        self.ok(&[
            "generate",
            "-q",
            "--file",
            name,
            "--analyses",
            &n,
            "--chunks-per-analysis",
            "10",
        ]);
    }

    /// Restores `file` with `--replace`.
    pub fn load(&self, file: &Path) {
        self.ok(&[
            "restore",
            "--replace",
            "--file",
            file.to_str().unwrap(),
            "-q",
        ]);
    }

    /// Everything the database holds, as text: a backup of every status (without its
    /// `created_at` line) and the counts per status. Equal fingerprints, equal databases.
    pub fn fingerprint(&self) -> String {
        let file = self.path("fingerprint.json");
        self.ok(&[
            "backup",
            "--status",
            "all",
            "--allow-empty",
            "-q",
            "--file",
            file.to_str().unwrap(),
            "--metadata-file",
            self.path("fingerprint_metadata.json").to_str().unwrap(),
        ]);
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        let status = self.ok(&["status", "--format", "json"]);
        format!("{}\n{status}", without_created_at(&text))
    }
}

/// A backup's text without its top-level `created_at` line (line 3).
pub fn without_created_at(text: &str) -> String {
    text.lines()
        .enumerate()
        .filter(|(i, l)| !(*i == 2 && l.starts_with("  \"created_at\": ")))
        .map(|(_, l)| format!("{l}\n"))
        .collect()
}

/// The folder of the real model the tests use (all-MiniLM-L6-v2 from PyPI, installed by
/// scripts/test-model). Only model tests ask, and they are ignored unless included on purpose:
/// without the model they fail rather than pass untested.
pub fn model_dir() -> PathBuf {
    std::env::var_os("GOLDSET_TEST_MODEL_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .expect(
            "this test needs the model in GOLDSET_TEST_MODEL_DIR (scripts/test-model installs it)",
        )
}

/// How long a test waits for something it expects to happen (a file to grow, a row to appear):
/// generous, because the bound only turns a hung test into a failure and measures nothing.
pub const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// Polls `done` every 10 ms until it holds; fails naming `what` after [`WAIT_LIMIT`].
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_LIMIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "waited {WAIT_LIMIT:?} for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops `child` with SIGSTOP: it stays exactly where it is (files, open transaction) while the
/// test looks at what it has done, until it is killed. Freezing first is what makes a kill
/// "half-way" a fact the test checks rather than a race it hopes to win.
pub fn freeze(child: &Child) {
    let status = Command::new("kill")
        .args(["-STOP", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -STOP {}", child.id());
}

/// The number of PostgreSQL sessions named `application_name` (goldset names its sessions after
/// `PGAPPNAME`, so a test can watch the one child it started).
pub fn pg_sessions(ws: &Workspace, application_name: &str, condition: &str) -> i64 {
    let mut client = postgres::Client::connect(&ws.database_url, postgres::NoTls).unwrap();
    client
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND ({condition})"
            ),
            &[&application_name],
        )
        .unwrap()
        .get(0)
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
