//! A restore or a backup killed with SIGKILL half-way loses nothing: the database and the
//! previous backup file are exactly as they were.

mod common;

use common::{sample, Workspace};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn spawn(ws: &Workspace, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_goldset"))
        .args(args)
        .current_dir(ws.dir.path())
        .env("DATABASE_URL", &ws.database_url)
        .spawn()
        .unwrap()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
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
    let ws = Workspace::new();
    ws.load(&sample());
    let before = ws.fingerprint();
    ws.ok(&[
        "generate",
        "-q",
        "--file",
        "big.json",
        "--analyses",
        "3000",
        "--chunks-per-analysis",
        "10",
    ]);

    let db = ws.path("golden.db");
    let journal = ws.path("golden.db-journal");
    let start_size = size(&db);
    let child = spawn(&ws, &["restore", "--replace", "-q", "--file", "big.json"]);
    // Half-way: the transaction has deleted the old rows and spilled many new pages to disk.
    kill_when(child, "restore", || {
        journal.exists() && size(&db) > start_size + 8 * 1024 * 1024
    });
    assert!(
        journal.exists(),
        "the kill came in the middle of the transaction"
    );

    assert_eq!(ws.fingerprint(), before, "the previous data is intact");
    ws.ok(&["verify", "--file", sample().to_str().unwrap()]);
    assert!(!journal.exists(), "the hot journal was rolled back");
}

#[test]
fn backup_killed_half_way_keeps_the_previous_file() {
    let ws = Workspace::new();
    ws.load(&sample());
    ws.ok(&["backup", "-q"]);
    let file = ws.path("data/golden_dataset_backup.json");
    let previous = std::fs::read(&file).unwrap();

    ws.ok(&[
        "generate",
        "-q",
        "--file",
        "big.json",
        "--analyses",
        "3000",
        "--chunks-per-analysis",
        "10",
    ]);
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
