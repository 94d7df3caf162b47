//! A restore or a backup killed with SIGKILL half-way loses nothing: the database and the
//! previous backup file are exactly as they were.

mod common;

use common::{backends, sample, Backend, Workspace};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn spawn(ws: &Workspace, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_goldset"))
        .args(args)
        .current_dir(ws.dir.path())
        .env("DATABASE_URL", &ws.database_url)
        .env("GOLDSET_SCHEMA", &ws.schema)
        .spawn()
        .unwrap()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Bytes the database has written, committed or not: the SQLite file's size, or PostgreSQL's
/// WAL position (uncommitted rows are WAL-logged too, and reading it takes no lock — a bulk
/// restore holds an exclusive lock on the tables until it commits).
fn stored_bytes(ws: &Workspace) -> u64 {
    match ws.backend {
        Backend::Sqlite => size(&ws.path("golden.db")),
        Backend::Postgres => {
            let mut client = postgres::Client::connect(&ws.database_url, postgres::NoTls).unwrap();
            let bytes: i64 = client
                .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[])
                .unwrap()
                .get(0);
            bytes as u64
        }
    }
}

/// Waits until `ready` holds, then kills the child with SIGKILL. Panics if it finished first.
fn kill_when(mut child: Child, what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} finished ({status}) before it could be killed: use a larger dataset");
        }
        assert!(Instant::now() < deadline, "{what} never got going");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn restore_killed_half_way_leaves_the_previous_data() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let ws = Workspace::on(backend);
        ws.load(&sample());
        let before = ws.fingerprint();
        ws.generate("big.json", 3000);

        let db = ws.path("golden.db");
        let journal = ws.path("golden.db-journal");
        let start_size = stored_bytes(&ws);
        let child = spawn(&ws, &["restore", "--replace", "-q", "--file", "big.json"]);
        // Half-way: the transaction has deleted the old rows and written many new ones to disk.
        kill_when(child, "restore", || {
            stored_bytes(&ws) > start_size + 8 * 1024 * 1024
        });
        if backend == Backend::Sqlite {
            assert!(
                journal.exists(),
                "the kill came in the middle of the transaction"
            );
        }

        assert_eq!(ws.fingerprint(), before, "the previous data is intact");
        ws.ok(&["verify", "--file", sample().to_str().unwrap()]);
        assert!(!journal.exists(), "no journal is left behind");
        let _ = db;
    }
}

#[test]
fn backup_killed_half_way_keeps_the_previous_file() {
    for backend in backends() {
        eprintln!("backend: {backend:?}");
        let ws = Workspace::on(backend);
        ws.load(&sample());
        ws.ok(&["backup", "-q"]);
        let file = ws.path("data/golden_dataset_backup.json");
        let previous = std::fs::read(&file).unwrap();

        ws.generate("big.json", 3000);
        ws.ok(&["restore", "--replace", "-q", "--file", "big.json"]);
        let temp_size = || -> u64 {
            std::fs::read_dir(ws.path("data"))
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(".goldset-"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        };
        let child = spawn(&ws, &["backup", "-q"]);
        kill_when(child, "backup", || temp_size() > 4 * 1024 * 1024);

        assert_eq!(
            std::fs::read(&file).unwrap(),
            previous,
            "the old backup is untouched"
        );
        // The next backup completes and replaces it.
        ws.ok(&["backup", "-q"]);
        ws.ok(&["verify", "--file-only"]);
        ws.ok(&["verify"]);
    }
}
