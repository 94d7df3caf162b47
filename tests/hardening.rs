//! What an adversarial run broke (issue 14), each kept fixed: backups of rows no backup can hold,
//! out-of-range timestamps, a stale metadata file, device/FIFO/symlink targets, temp files of
//! killed runs, and a full disk (injected as a file-size limit: `ulimit -f`, with SIGXFSZ
//! ignored, so that writes fail with EFBIG as they would with ENOSPC).

use crate::common::{sample, stderr, Backend, Workspace};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn sample_ids() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(sample()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["analyses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["chunks"][0]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The `.goldset-*` temp files left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".goldset-") || n.ends_with("-journal"))
        .collect()
}

store_test! {
    /// Rows that SQL wrote and no backup can hold: `backup` refuses with exit 1, names every
    /// record and what is wrong, and leaves the old backup byte for byte.
    fn backup_refuses_rows_it_could_not_write_back(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        ws.ok(&["backup", "-q", "--file", "b.json"]);
        let before = std::fs::read(ws.path("b.json")).unwrap();
        let ids = sample_ids();
        let a = |i: usize| ids[i].0.as_str();
        let c = |i: usize| ids[i].1.as_str();
        let mut damage = vec![
            format!("UPDATE analyses SET url = '' WHERE id = '{}'", a(2)),
            format!("UPDATE chunks SET chunk_index = 9 WHERE id = '{}'", c(4)),
            format!("UPDATE chunks SET chunk_index = -1 WHERE id = '{}'", c(5)),
        ];
        match backend {
            Backend::Sqlite => damage.extend([
                format!("UPDATE analyses SET findings = json_set(findings, '$[0].confidence', 7) WHERE id = '{}'", a(3)),
                format!("UPDATE chunks SET content = 'a' || char(0) || 'b' WHERE id = '{}'", c(6)),
            ]),
            Backend::Postgres => damage.extend([
                format!("UPDATE analyses SET findings = jsonb_set(findings, '{{0,confidence}}', '7') WHERE id = '{}'", a(3)),
            ]),
        }
        ws.sql(&damage.join(";\n"));
        let out = ws.run(&["backup", "--file", "b.json"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        let named: &[usize] = if backend == Backend::Sqlite { &[2, 3, 4, 5, 6] } else { &[2, 3, 4, 5] };
        for &i in named {
            assert!(err.contains(a(i)), "analysis {} not named:\n{err}", a(i));
        }
        for reason in [
            "url \"\"",
            "confidence 7 is outside 0..1",
            "chunk_index 9 is outside 0..3",
            "chunk_index -1 is outside",
            "b.json was not written (left as it was)",
        ] {
            assert!(err.contains(reason), "{reason:?} missing:\n{err}");
        }
        if backend == Backend::Sqlite {
            assert!(err.contains("content contains a NUL character"), "{err}");
        }
        assert_eq!(std::fs::read(ws.path("b.json")).unwrap(), before);
        assert_eq!(leftovers(ws.path("").as_path()), Vec::<String>::new());
        // The other readers see the rows as changes, without a panic: verify fails naming the
        // analyses, diff shows them, status counts.
        for args in [
            &["verify", "--file", "b.json"][..],
            &["diff", "b.json", "db:"][..],
            &["backup", "--check", "--file", "b.json"][..],
        ] {
            let out = ws.run(args);
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
            assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
            assert!(!text.contains("panicked"), "{args:?}: {text}");
            assert!(text.contains(a(2)) || text.contains("db_content"), "{args:?}: {text}");
        }
        ws.ok(&["status"]);
        // The same with --format json: one JSON object naming the checks.
        let out = ws.run(&["backup", "--file", "b.json", "--format", "json"]);
        assert_eq!(out.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], false);
        assert!(v["checks"].to_string().contains(a(3)), "{v}");
    }
}

store_test! {
    /// A stored time outside 0001–9999 (after its offset) is refused by backup with the row
    /// named, and the old backup kept.
    fn backup_refuses_times_outside_the_backup_range(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        ws.ok(&["backup", "-q", "--file", "b.json"]);
        let before = std::fs::read(ws.path("b.json")).unwrap();
        let ids = sample_ids();
        let damages = match backend {
            // 0000-12-31T23:30:00Z (0001-01-01T00:00:00+00:30) and 10000-01-01T00:00:00Z.
            Backend::Sqlite => [
                "UPDATE analyses SET created_at = -62135598600000000 WHERE id = '{}'",
                "UPDATE analyses SET created_at = 253402300800000000 WHERE id = '{}'",
            ],
            Backend::Postgres => [
                "UPDATE analyses SET created_at = '0001-01-01 00:00:00+00:30' WHERE id = '{}'",
                "UPDATE analyses SET created_at = '9999-12-31 23:59:59-01:00' WHERE id = '{}'",
            ],
        };
        for (i, damage) in damages.iter().enumerate() {
            let id = &ids[i].0;
            ws.sql(&damage.replace("{}", id));
            let out = ws.run(&["backup", "--file", "b.json"]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains(id.as_str()) && err.contains("created_at"), "{err}");
            assert!(!err.contains("panicked"), "{err}");
            assert_eq!(std::fs::read(ws.path("b.json")).unwrap(), before);
            ws.load(&sample());
        }
    }
}

store_test! {
    /// What a backup cannot write, a restore does not take: a time that leaves 0001–9999 once
    /// its offset is applied.
    fn restore_refuses_times_outside_the_backup_range(backend) {
        let ws = Workspace::on(backend);
        let text = std::fs::read_to_string(sample()).unwrap();
        let first = &sample_ids()[0].0;
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let stamp = doc["analyses"][0]["created_at"].as_str().unwrap();
        for (bad, shows) in [
            ("0001-01-01T00:00:00+00:30", "0001-01-01T00:00:00+00:30"),
            ("9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59-01:00"),
        ] {
            std::fs::write(ws.path("x.json"), text.replacen(stamp, bad, 1)).unwrap();
            std::fs::remove_file(ws.path("x_metadata.json")).ok();
            let out = ws.run(&["restore", "--file", "x.json"]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains(first) && err.contains(shows) && err.contains("outside"), "{err}");
            let out = ws.run(&["verify", "--file-only", "--file", "x.json"]);
            assert_eq!(out.status.code(), Some(1));
        }
        let counts = ws.rows("SELECT CAST(count(*) AS TEXT) FROM analyses", "SELECT count(*)::text FROM analyses");
        assert_eq!(counts, ["0"]);
    }
}

store_test! {
    /// A kill between the backup's rename and its metadata file's leaves the new backup beside
    /// the old metadata file: restore warns, names the counts that differ, and restores.
    fn a_stale_metadata_file_does_not_block_a_restore(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        ws.ok(&["backup", "-q", "--file", "b.json"]);
        let old_metadata = std::fs::read(ws.path("b_metadata.json")).unwrap();
        let victim = &sample_ids()[0].0;
        let fk = if backend == Backend::Sqlite { "PRAGMA foreign_keys = ON; " } else { "" };
        ws.sql(&format!("{fk}DELETE FROM analyses WHERE id = '{victim}'"));
        ws.ok(&["backup", "-q", "--file", "b.json"]);
        // The pair as a kill between the two renames leaves it.
        std::fs::write(ws.path("b_metadata.json"), old_metadata).unwrap();
        let target = Workspace::on(backend);
        let file = ws.path("b.json");
        let out = target.run(&["restore", "--file", file.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("warning: ") && err.contains("total_analyses 20 ≠ 19"), "{err}");
        assert!(err.contains("stale, ignored"), "{err}");
        let counts = target.rows("SELECT CAST(count(*) AS TEXT) FROM analyses", "SELECT count(*)::text FROM analyses");
        assert_eq!(counts, ["19"]);
        // verify still says the pair disagrees.
        let out = ws.run(&["verify", "--file-only", "--file", "b.json"]);
        assert_eq!(out.status.code(), Some(1));
    }
}

/// Waits for `cmd` at most `limit`; a command still running then is killed and the test fails.
fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[cfg(unix)]
#[test]
fn targets_that_are_not_regular_files_are_refused() {
    use std::os::unix::fs::FileTypeExt;
    let ws = Workspace::new();
    ws.load(&sample());
    let fifo = ws.path("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let limit = Duration::from_secs(20);
    for args in [
        &["backup", "--file", "/dev/null"][..],
        &["backup", "--file", "fifo"][..],
        &["backup", "--file", "b.json", "--metadata-file", "fifo"][..],
        &["backup", "--file", "b.json", "--metadata-file", "/dev/null"][..],
        &["dump", "--file", "/dev/null"][..],
        &["dump", "--file", "fifo"][..],
    ] {
        let out = run_within(ws.command(args), limit);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
    }
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(leftovers(ws.path("").as_path()), Vec::<String>::new());
}

#[cfg(unix)]
#[test]
fn a_symlinked_backup_is_followed_and_a_dangling_one_refused() {
    let ws = Workspace::new();
    ws.load(&sample());
    std::fs::create_dir(ws.path("real")).unwrap();
    std::fs::write(ws.path("real/b.json"), b"old").unwrap();
    std::os::unix::fs::symlink("real/b.json", ws.path("b.json")).unwrap();
    ws.ok(&["backup", "-q", "--file", "b.json"]);
    let link = std::fs::symlink_metadata(ws.path("b.json")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    ws.ok(&["verify", "--file-only", "--file", "real/b.json"]);
    std::os::unix::fs::symlink("nowhere/x.json", ws.path("d.json")).unwrap();
    let out = ws.run(&["backup", "--file", "d.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
}

#[test]
fn temp_files_of_killed_runs_are_removed_by_the_next() {
    let ws = Workspace::new();
    ws.load(&sample());
    // Names as killed runs leave them: a pid above Linux's pid_max is never alive.
    let dead = [
        ".goldset-4194304-a1b2c3.tmp",
        ".goldset-4194304-a1b2c3.tmp-journal",
        ".goldset-load-4194304-d4e5f6.tmp",
    ];
    for name in dead {
        std::fs::write(ws.path(name), vec![0u8; 4096]).unwrap();
    }
    ws.ok(&["backup", "-q", "--file", "b.json"]);
    if cfg!(target_os = "linux") {
        assert_eq!(leftovers(ws.path("").as_path()), Vec::<String>::new());
    }
}

/// `goldset ARGS` with writes beyond `kib` KiB failing (RLIMIT_FSIZE; SIGXFSZ ignored, so the
/// write returns EFBIG): a full disk, injected.
fn with_file_size_limit(ws: &Workspace, kib: u64, args: &[&str]) -> Output {
    let inner = ws.command(args);
    let mut cmd = Command::new("sh");
    // POSIX sh counts `ulimit -f` in 512-byte blocks.
    cmd.arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {} && exec \"$0\" \"$@\"",
            kib * 2
        ))
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(inner.get_current_dir().unwrap());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.output().unwrap()
}

#[cfg(unix)]
#[test]
fn a_full_disk_changes_nothing_and_leaves_nothing() {
    let ws = Workspace::new();
    ws.load(&sample());
    ws.generate("big.json", 300);
    ws.ok(&["backup", "-q", "--file", "b.json"]);
    let backup_before = std::fs::read(ws.path("b.json")).unwrap();
    let db_before = ws.fingerprint();
    let db_size = std::fs::metadata(ws.path("golden.db")).unwrap().len();

    // restore: the database may not grow by more than 64 KiB.
    let out = with_file_size_limit(&ws, db_size / 1024 + 64, &["restore", "--file", "big.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is the disk full, or a file-size limit reached?"),
        "SQLite's \"disk I/O error\" comes with its likely cause: {}",
        stderr(&out)
    );
    assert!(
        !ws.path("golden.db-journal").exists(),
        "a hot journal was left"
    );
    let check = ws.rows("PRAGMA integrity_check", "");
    assert_eq!(check, ["ok"]);
    assert_eq!(ws.fingerprint(), db_before);
    assert_eq!(
        std::fs::metadata(ws.path("golden.db")).unwrap().len(),
        db_size
    );

    // backup: the new file cannot be written.
    ws.ok(&["restore", "-q", "--file", "big.json"]);
    let out = with_file_size_limit(&ws, 64, &["backup", "--file", "b.json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert_eq!(std::fs::read(ws.path("b.json")).unwrap(), backup_before);

    // dump: the real cause and the file, not "not an error"; no temp file or journal left.
    let out = with_file_size_limit(&ws, 64, &["dump", "--file", "snap.db"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("File too large") && err.contains(".goldset-"),
        "{err}"
    );
    assert!(!err.contains("not an error"), "{err}");
    assert!(!ws.path("snap.db").exists());
    assert_eq!(leftovers(ws.path("").as_path()), Vec::<String>::new());

    // load: the copy beside the database cannot be written; the database stays as it was.
    ws.ok(&["dump", "-q", "--file", "snap.db"]);
    ws.ok(&["restore", "-q", "--replace", "--file", "b.json"]);
    let before = ws.fingerprint();
    let out = with_file_size_limit(&ws, 64, &["load", "--replace", "--file", "snap.db"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert_eq!(ws.fingerprint(), before);
    assert_eq!(leftovers(ws.path("").as_path()), Vec::<String>::new());
}

/// Runs goldset where permissions stop it: as `nobody` (through `setpriv`) when the tests run as
/// root, whom permissions do not stop, else as the current user. The binary is copied into the
/// workspace, which is opened to others, so that `nobody` can run it wherever the checkout is.
fn without_permission(ws: &Workspace, database: &str, args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let open = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(ws.path("").as_path(), 0o755);
    let binary = ws.path("goldset-bin");
    if !binary.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_goldset"), &binary).unwrap();
        open(&binary, 0o755);
    }
    let uid = Command::new("id").arg("-u").output().unwrap();
    let root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary);
        c
    } else {
        Command::new(&binary)
    };
    cmd.args(args)
        .current_dir(ws.path(""))
        .env("DATABASE_URL", database)
        .env("GOLDSET_EMBEDDER", "hash")
        .env("RUST_BACKTRACE", "1")
        .env_remove("GOLDSET_CONFIG")
        .env_remove("GOLDSET_LOG");
    let out = cmd.output().expect("setpriv (util-linux) runs");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    out
}

/// Read-only targets, for a user whom permissions stop: `backup`, `dump` into a folder it may not
/// write, `restore` and `load` into a database file it may not write. Each fails with exit 2
/// naming the file and the cause, and changes and leaves nothing.
#[test]
fn read_only_targets_are_refused_and_keep_their_content() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let ws = Workspace::on(Backend::Sqlite);
    ws.load(&sample());
    std::fs::create_dir(ws.path("ro")).unwrap();
    ws.ok(&["backup", "-q", "--file", "ro/b.json"]);
    ws.ok(&["dump", "-q", "--file", "snap.db"]);
    std::fs::copy(ws.path("golden.db"), ws.path("ro/golden.db")).unwrap();
    for file in ["ro/b.json", "ro/b_metadata.json", "ro/golden.db"] {
        mode(&ws.path(file), 0o444);
    }
    mode(&ws.path("ro"), 0o555);
    mode(&ws.path("snap.db"), 0o644);
    let before: Vec<Vec<u8>> = ["ro/b.json", "ro/golden.db"]
        .iter()
        .map(|f| std::fs::read(ws.path(f)).unwrap())
        .collect();
    let writable = format!("sqlite:{}", ws.path("golden.db").display());
    let read_only = format!("sqlite:{}", ws.path("ro/golden.db").display());
    mode(&ws.path("golden.db"), 0o644);
    let sample = sample();
    let cases: [(&str, &[&str]); 4] = [
        (&writable, &["backup", "--file", "ro/b.json"]),
        (&writable, &["dump", "--file", "ro/snap.db"]),
        (
            &read_only,
            &[
                "restore",
                "--replace",
                "--bulk",
                "--file",
                sample.to_str().unwrap(),
            ],
        ),
        (&read_only, &["load", "--replace", "--file", "snap.db"]),
    ];
    for (database, args) in cases {
        let out = without_permission(&ws, database, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("Permission denied")
                || err.contains("readonly")
                || err.contains("read-only"),
            "{args:?}: the cause is named: {err}"
        );
        assert!(err.contains("ro/"), "{args:?}: the file is named: {err}");
        let now: Vec<Vec<u8>> = ["ro/b.json", "ro/golden.db"]
            .iter()
            .map(|f| std::fs::read(ws.path(f)).unwrap())
            .collect();
        assert!(now == before, "{args:?} changed a read-only file");
        assert_eq!(leftovers(&ws.path("ro")), Vec::<String>::new(), "{args:?}");
    }
}
