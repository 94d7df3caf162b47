//! What only PostgreSQL has: the same file as SQLite, the restore lock, connection strings and
//! secrets, snapshot consistency under concurrent writers. Ignored by plain `cargo test`;
//! `scripts/test` starts a server and runs them.

use crate::common::{
    pg_sessions, python_fixture, sample, stderr, stdout, wait_for, without_created_at, Backend,
    Workspace,
};
use std::process::{Command, Stdio};

/// A PostgreSQL workspace (the test fails when no server is configured).
fn pg() -> Workspace {
    Workspace::on(Backend::Postgres)
}

fn client(ws: &Workspace) -> postgres::Client {
    postgres::Client::connect(&ws.database_url, postgres::NoTls).unwrap()
}

pg_test! {
    fn the_same_data_gives_the_same_file_on_both_stores() {
        let pg = pg();
        let lite = Workspace::on(Backend::Sqlite);
        for file in [
            sample(),
            python_fixture("python_tiny_backup.json"),
            python_fixture("python_generated_backup.json"),
        ] {
            for ws in [&pg, &lite] {
                ws.load(&file);
                ws.ok(&["backup", "-q", "--status", "all", "--file", "out.json"]);
            }
            let read = |ws: &Workspace| {
                without_created_at(&std::fs::read_to_string(ws.path("out.json")).unwrap())
            };
            assert_eq!(read(&pg), read(&lite), "{}", file.display());
        }
    }
}

pg_test! {
    fn a_second_restore_waits_or_fails_naming_the_lock_holder() {
        let ws = pg();
        ws.ok(&["init", "-q"]);
        let mut holder = client(&ws);
        let key = goldset::store::postgres::lock_key(&ws.schema);
        holder
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .unwrap();
        let pid: i32 = holder
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);

        let out = ws.run(&["restore", "--no-wait", "--file", sample().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(
            err.contains("another restore") && err.contains(&format!("pid {pid}")),
            "{err}"
        );

        // With --wait (the default) it blocks until the holder lets go, then restores.
        let app = format!("goldset-waiting-{}", ws.schema);
        let mut waiting = Command::new(env!("CARGO_BIN_EXE_goldset"))
            .args(["restore", "-q", "--file", sample().to_str().unwrap()])
            .env("DATABASE_URL", &ws.database_url)
            .env("GOLDSET_SCHEMA", &ws.schema)
            .env("PGAPPNAME", &app)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // It is queued behind the holder: its session waits for the advisory lock.
        wait_for("the second restore to wait for the lock", || {
            pg_sessions(
                &ws,
                &app,
                "pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)",
            ) == 1
        });
        assert!(
            waiting.try_wait().unwrap().is_none(),
            "the second restore waits"
        );
        holder
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .unwrap();
        let out = waiting.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("waiting for another restore"),
            "{}",
            stderr(&out)
        );
        ws.ok(&["verify", "--file", sample().to_str().unwrap()]);
    }
}

pg_test! {
    fn passwords_never_appear_in_output() {
        let ws = pg();
        let url = ws.database_url.replacen(
            "postgres://postgres@",
            "postgres://postgres:hunter2secret@",
            1,
        );
        assert_ne!(url, ws.database_url);
        // Works (the test server trusts local connections), and says nothing of the password.
        let out = Command::new(env!("CARGO_BIN_EXE_goldset"))
            .args([
                "-vv",
                "restore",
                "--file",
                sample().to_str().unwrap(),
                "--format",
                "json",
            ])
            .env("DATABASE_URL", &url)
            .env("GOLDSET_SCHEMA", &ws.schema)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains("hunter2secret"), "{all}");
        // A failing connection names the server, not the password.
        let bad = "postgres://postgres:hunter2secret@127.0.0.1:1/nowhere";
        let out = Command::new(env!("CARGO_BIN_EXE_goldset"))
            .args(["status"])
            .env("DATABASE_URL", bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(
            err.contains("cannot connect to postgres://postgres:***@127.0.0.1:1/nowhere"),
            "{err}"
        );
        assert!(!err.contains("hunter2secret"), "{err}");
    }
}

pg_test! {
    fn libpq_environment_fills_what_the_url_leaves_out() {
        let ws = pg();
        let url = url_parts(&ws.database_url);
        let out = Command::new(env!("CARGO_BIN_EXE_goldset"))
            .args(["restore", "-q", "--file", sample().to_str().unwrap()])
            .env("DATABASE_URL", "postgresql://")
            .env("GOLDSET_SCHEMA", &ws.schema)
            .env("PGHOST", &url.0)
            .env("PGPORT", &url.1)
            .env("PGUSER", &url.2)
            .env("PGDATABASE", &url.3)
            .env("PGSSLMODE", "disable")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        ws.ok(&["verify", "--file", sample().to_str().unwrap()]);
        // sslmode=require against a server without TLS fails clearly.
        let out = ws.run(&[
            "--database-url",
            &format!("{}?sslmode=require", ws.database_url),
            "status",
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    }
}

/// (host, port, user, database) of `postgres://user@host:port/database`.
fn url_parts(url: &str) -> (String, String, String, String) {
    let rest = url.split("://").nth(1).unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let (hostport, db) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    (host.into(), port.into(), user.into(), db.into())
}

pg_test! {
    fn schemas_keep_datasets_apart() {
        let a = pg();
        let b = pg();
        a.load(&sample());
        b.load(&python_fixture("python_tiny_backup.json"));
        let count = |ws: &Workspace| -> serde_json::Value {
            serde_json::from_str::<serde_json::Value>(&ws.ok(&["status", "--format", "json"])).unwrap()
                ["inventory"]["chunks"]
                .clone()
        };
        assert_eq!(count(&a), 86);
        assert_eq!(count(&b), 8);
    }
}

pg_test! {
    fn writers_committing_during_a_backup_never_break_its_consistency() {
        let ws = pg();
        ws.generate("big.json", 1500);
        ws.load(&ws.path("big.json"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = {
            let stop = stop.clone();
            let commits = commits.clone();
            let url = ws.database_url.clone();
            let schema = ws.schema.clone();
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                c.batch_execute(&format!("SET search_path = {schema}, public"))
                    .unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Each commit adds a completed analysis with a chunk and removes another one.
                    c.batch_execute(
                        "BEGIN;
                         WITH a AS (INSERT INTO analyses VALUES (gen_random_uuid(), 'https://docs.rs/x', 'documentation', 'completed', now(), '[]') RETURNING id)
                         INSERT INTO chunks (id, analysis_id, chunk_index, content, content_type) SELECT gen_random_uuid(), id, 0, 'x', 'text' FROM a;
                         DELETE FROM analyses WHERE id = (SELECT id FROM analyses ORDER BY created_at LIMIT 1);
                         COMMIT;",
                    )
                    .unwrap();
                    commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        // Backups until at least two of them ran while the writer committed and the writer has
        // committed more than ten times: counted, not timed, so a slow machine only takes longer.
        let mut backups = 0;
        let mut overlapped = 0;
        wait_for("backups taken while the writer commits", || {
            assert!(!writer.is_finished(), "the writer stopped");
            let before = commits.load(std::sync::atomic::Ordering::SeqCst);
            ws.ok(&["backup", "-q", "--file", "snap.json"]);
            let during = commits.load(std::sync::atomic::Ordering::SeqCst) - before;
            let out = ws.run(&["verify", "--file-only", "--file", "snap.json"]);
            assert!(
                out.status.success(),
                "a backup taken under writes is inconsistent:\n{}",
                stdout(&out)
            );
            backups += 1;
            overlapped += usize::from(during > 0);
            backups >= 2 && overlapped >= 2 && commits.load(std::sync::atomic::Ordering::SeqCst) > 10
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        let commits = commits.load(std::sync::atomic::Ordering::SeqCst);
        assert!(commits > 10, "the writer committed only {commits} times");
    }
}

pg_test! {
    fn a_replace_bulk_load_rebuilds_every_index_and_constraint() {
        let ws = pg();
        ws.load(&sample());
        let shape = |ws: &Workspace| -> Vec<String> {
            let mut c = client(ws);
            c.query(
                "SELECT conrelid::regclass::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
                  WHERE connamespace = $1::text::regnamespace
                 UNION ALL
                 SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
                  WHERE t.relnamespace = $1::text::regnamespace
                 ORDER BY 1",
                &[&ws.schema],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        let before = shape(&ws);
        assert!(
            before.iter().any(|c| c.contains("FOREIGN KEY")),
            "{before:?}"
        );
        ws.load(&python_fixture("python_generated_backup.json"));
        assert_eq!(shape(&ws), before);
        // A duplicate that slipped past validation would be caught by the rebuilt constraints;
        // here the constraints still refuse one inserted by hand.
        let mut c = client(&ws);
        let dup = c.batch_execute(&format!(
            "INSERT INTO {s}.analyses SELECT * FROM {s}.analyses LIMIT 1",
            s = ws.schema
        ));
        assert!(dup.is_err(), "the primary key is back");
    }
}

/// Chunk ids of a backup file, in file order.
fn chunk_ids(file: &std::path::Path) -> Vec<String> {
    let backup: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    backup["analyses"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["chunks"].as_array().unwrap().iter())
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

pg_test! {
    fn a_bulk_load_streamed_over_many_batches_gives_back_the_same_file() {
        let ws = pg();
        ws.generate("many.json", 120);
        // Into an empty schema (additive) and over existing data (--replace): both stream.
        for replace in [false, true] {
            let mut args = vec![
                "restore",
                "-q",
                "--batch-chunks",
                "64",
                "--file",
                "many.json",
            ];
            if replace {
                args.push("--replace");
            }
            ws.ok(&args);
            ws.ok(&["backup", "-q", "--status", "all", "--file", "out.json"]);
            let read =
                |name: &str| without_created_at(&std::fs::read_to_string(ws.path(name)).unwrap());
            assert_eq!(read("out.json"), read("many.json"), "replace: {replace}");
        }
        let counts = ws.rows(
            "",
            "SELECT count(*)::text, count(embedding)::text FROM chunks",
        );
        assert_eq!(counts, ["1200|1200"]);
    }
}

pg_test! {
    fn a_server_error_in_the_middle_of_a_streamed_load_changes_nothing() {
        let ws = pg();
        ws.load(&sample());
        ws.generate("many.json", 120);
        // A constraint of the user's (a bulk load keeps CHECK constraints) refuses one chunk deep in
        // the file, long after the COPY of chunks started.
        let ids = chunk_ids(&ws.path("many.json"));
        let refused = &ids[ids.len() * 3 / 4];
        ws.sql(&format!(
            "ALTER TABLE chunks ADD CONSTRAINT not_this_chunk CHECK (id <> '{refused}')"
        ));
        let before = ws.fingerprint();
        let out = ws.run(&[
            "restore",
            "-q",
            "--replace",
            "--batch-chunks",
            "64",
            "--file",
            "many.json",
        ]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("not_this_chunk"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(ws.fingerprint(), before, "the failed load changed nothing");
    }
}
