//! A restore or a backup killed with SIGKILL half-way loses nothing: the database and the
//! previous backup file are exactly as they were.
//!
//! "Half-way" is checked, not hoped for: the restore reads its file through a pipe that never
//! delivers the end, so it cannot commit however slow the machine is; the backup is frozen
//! (SIGSTOP) and only killed once its half-written temporary file is seen.

use crate::common::{freeze, pg_sessions, sample, wait_for, Backend, Workspace};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};

fn spawn(ws: &Workspace, args: &[&str], application_name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_goldset"))
        .args(args)
        .current_dir(ws.dir.path())
        .env("DATABASE_URL", &ws.database_url)
        .env("GOLDSET_SCHEMA", &ws.schema)
        .env("PGAPPNAME", application_name)
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

/// Fails if `child` has exited (it was meant to be blocked or running).
fn still_running(child: &mut Child, what: &str) -> bool {
    if let Some(status) = child.try_wait().unwrap() {
        panic!("{what} exited ({status}) before it could be killed");
    }
    true
}

store_test! {
    fn restore_killed_half_way_leaves_the_previous_data(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        let before = ws.fingerprint();
        ws.generate("big.json", 3000);
        let big = std::fs::read(ws.path("big.json")).unwrap();

        // The restore reads a named pipe that the test fills with all but the file's last bytes
        // and keeps open: the restore writes every analysis it has, then waits for an end of
        // file that never comes. It cannot commit, so the kill lands inside the transaction.
        let fifo = ws.path("big.fifo");
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success(), "mkfifo");
        let journal = ws.path("golden.db-journal");
        let start_size = stored_bytes(&ws);
        let app = format!("goldset-crash-{}", ws.schema);
        let mut child = spawn(&ws, &["restore", "--replace", "-q", "--file", "big.fifo"], &app);
        let feeder = std::thread::spawn({
            let head = big[..big.len() - 16].to_vec();
            move || -> std::io::Result<std::fs::File> {
                let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo)?;
                pipe.write_all(&head)?;
                Ok(pipe) // kept open: no end of file
            }
        });
        // Half-way: the transaction has deleted the old rows and written many new ones to disk.
        let in_transaction = || match backend {
            Backend::Sqlite => journal.exists(),
            Backend::Postgres => pg_sessions(&ws, &app, "backend_xid IS NOT NULL") == 1,
        };
        wait_for("the restore to write 8 MiB inside its transaction", || {
            still_running(&mut child, "restore")
                && stored_bytes(&ws) > start_size + 8 * 1024 * 1024
                && in_transaction()
        });
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        drop(feeder.join().unwrap()); // the pipe: written, or broken by the kill
        if backend == Backend::Sqlite {
            assert!(
                journal.exists(),
                "the kill came in the middle of the transaction"
            );
        }

        assert_eq!(ws.fingerprint(), before, "the previous data is intact");
        ws.ok(&["verify", "--file", sample().to_str().unwrap()]);
        assert!(!journal.exists(), "no journal is left behind");
    }
}

store_test! {
    fn backup_killed_half_way_keeps_the_previous_file(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        ws.ok(&["backup", "-q"]);
        let file = ws.path("data/golden_dataset_backup.json");

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
        // Freeze the backup once its temporary file holds 4 MiB, then look: if it is still
        // running and the temporary file is still there, it has not replaced the backup yet, and
        // it never will. A backup that raced to the end before the freeze (a machine so loaded
        // that the poll missed 20 MiB of writing) proves nothing: that attempt is repeated.
        let mut caught = None;
        for attempt in 1..=3 {
            let previous = std::fs::read(&file).unwrap();
            let mut child = spawn(&ws, &["backup", "-q"], "goldset-backup");
            wait_for("the backup to write 4 MiB", || {
                temp_size() > 4 * 1024 * 1024 || child.try_wait().unwrap().is_some()
            });
            freeze(&child);
            let half_way = child.try_wait().unwrap().is_none() && temp_size() > 4 * 1024 * 1024;
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            if half_way {
                caught = Some(previous);
                break;
            }
            eprintln!("attempt {attempt}: the backup finished before it was frozen; again");
        }
        let previous = caught.expect("three backups all finished before they could be frozen");

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
