//! Command-line conventions and what a newcomer trips over: completions and the man page from
//! the one definition, `-` for stdin/stdout, `--no-progress`, dry runs that read as plans,
//! inputs checked before a database is created, clear messages, log lines, `--help`.

use crate::common::{sample, without_created_at, Backend, Workspace};
use std::io::Write;
use std::process::{Output, Stdio};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `goldset ARGS` in `ws` with `input` on stdin.
fn run_with_stdin(ws: &Workspace, args: &[&str], input: &[u8]) -> Output {
    let mut child = ws
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("goldset starts");
    // A command that refuses its arguments exits without reading: a closed pipe is no failure.
    if let Err(e) = child.stdin.take().unwrap().write_all(input) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn restore_sample(ws: &Workspace) {
    ws.ok(&[
        "--embedder",
        "hash",
        "restore",
        "-q",
        "--file",
        sample().to_str().unwrap(),
    ]);
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definition() {
    let ws = Workspace::new();
    // A broken configuration file does not stand in their way.
    std::fs::write(ws.path("goldset.toml"), "no_such_key = 1\n").unwrap();
    let bash = ws.ok(&["completions", "bash"]);
    for command in ["backup", "restore", "verify", "completions", "man"] {
        assert!(bash.contains(command), "bash completion lacks {command}");
    }
    assert!(bash.contains("--database-url") && bash.contains("complete -F"));
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        assert!(
            ws.ok(&["completions", shell]).contains("restore"),
            "{shell}"
        );
    }
    assert_eq!(ws.run(&["completions", "tcsh"]).status.code(), Some(2));

    let page = ws.ok(&["man"]);
    assert!(page.contains(".TH goldset 1"), "{page}");
    assert!(page.contains("restore") && page.contains("database\\-url"));
    let dir = ws.path("man");
    std::fs::create_dir(&dir).unwrap();
    ws.ok(&["man", "--dir", dir.to_str().unwrap()]);
    let restore = std::fs::read_to_string(dir.join("goldset-restore.1")).unwrap();
    assert!(restore.contains(".TH goldset-restore 1") && restore.contains("on\\-conflict"));
    let pages = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        pages, 17,
        "goldset.1 and one page per visible command, `help` and `generate` left out"
    );
    assert!(!dir.join("goldset-generate.1").exists() && !dir.join("goldset-help.1").exists());
}

#[test]
fn backup_to_stdout_writes_the_backup_and_no_files() {
    let ws = Workspace::new();
    restore_sample(&ws);
    let file = ws.path("b.json");
    ws.ok(&["backup", "-q", "--file", file.to_str().unwrap()]);
    let out = ws.run(&["backup", "--file", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        without_created_at(&stdout(&out)),
        without_created_at(&std::fs::read_to_string(&file).unwrap()),
        "stdout holds the backup, and nothing else"
    );
    assert!(stderr(&out).starts_with("backup: written to stdout (20 analyses"));
    assert!(!ws.path("-").exists() && !ws.path("-_metadata.json").exists());
    // -q: the backup alone; --metadata-file: written where it says.
    let meta = ws.path("m.json");
    let quiet = ws.run(&[
        "backup",
        "-q",
        "-f",
        "-",
        "--metadata-file",
        meta.to_str().unwrap(),
    ]);
    assert!(quiet.status.success() && quiet.stderr.is_empty());
    assert_eq!(
        json(&std::fs::read_to_string(&meta).unwrap())["total_analyses"],
        20
    );
    // Its summary would have to share stdout with the backup.
    assert_eq!(
        ws.run(&["--format", "json", "backup", "-f", "-"])
            .status
            .code(),
        Some(2)
    );
}

store_test! {
    fn restore_verify_diff_and_check_read_stdin(backend) {
    let ws = Workspace::on(backend);
    let text = std::fs::read(sample()).unwrap();
    let out = run_with_stdin(
        &ws,
        &["--embedder", "hash", "restore", "--file", "-"],
        &text,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("restore: restored 20 analyses"));
    assert!(stdout(&out).contains("from stdin;"), "{}", stdout(&out));
    let status = json(&ws.ok(&["status", "--format", "json"]));
    assert_eq!(status["inventory"]["chunks"], 86);

    let verify = run_with_stdin(&ws, &["--embedder", "hash", "verify", "-f", "-"], &text);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    let sample = sample();
    let diff = run_with_stdin(&ws, &["diff", "-", sample.to_str().unwrap()], &text);
    assert_eq!(diff.status.code(), Some(0), "{}", stderr(&diff));
    let check = run_with_stdin(&ws, &["backup", "--check", "-f", "-"], &text);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    // A changed input is seen as such.
    let changed =
        String::from_utf8(text.clone())
            .unwrap()
            .replacen("UUIDv7 prefixes", "UUIDv7 starts", 1);
    let check = run_with_stdin(&ws, &["backup", "--check", "-f", "-"], changed.as_bytes());
    assert_eq!(check.status.code(), Some(1), "{}", stdout(&check));
    let both = run_with_stdin(&ws, &["diff", "-", "-"], &text);
    assert_eq!(both.status.code(), Some(2));
    assert!(!ws.path("-").exists());
}
}

#[test]
fn no_progress_keeps_the_summary_and_quiet_drops_it() {
    let ws = Workspace::new();
    let file = sample();
    let file = file.to_str().unwrap();
    let out = ws.ok(&[
        "--embedder",
        "hash",
        "restore",
        "--no-progress",
        "--file",
        file,
    ]);
    assert!(out.starts_with("restore: restored 20 analyses"), "{out}");
    let out = ws.ok(&["backup", "--no-progress", "--file", "b.json"]);
    assert!(out.starts_with("backup: b.json written"), "{out}");
    assert_eq!(ws.ok(&["backup", "--quiet", "--file", "b.json"]), "");
}

store_test! {
    fn dry_runs_read_as_plans_and_change_nothing(backend) {
    let ws = Workspace::on(backend);
    restore_sample(&ws);
    let file = sample();
    let file = file.to_str().unwrap();
    let out = ws.ok(&[
        "--embedder",
        "hash",
        "restore",
        "--replace",
        "--bulk",
        "--dry-run",
        "-f",
        file,
    ]);
    assert!(out.contains("would replace 20 analyses"), "{out}");
    assert!(
        out.contains("the database would then hold 20 analyses"),
        "{out}"
    );
    assert!(
        !out.contains("replaced") && !out.contains("now holds"),
        "{out}"
    );

    // load --replace --dry-run: the snapshot is checked, nothing is loaded.
    ws.ok(&["dump", "-q", "--file", "snap.db"]);
    ws.generate("three.json", 3);
    ws.ok(&[
        "--embedder",
        "hash",
        "restore",
        "-q",
        "--replace",
        "-f",
        "three.json",
    ]);
    let before = ws.fingerprint();
    let out = ws.ok(&["load", "--replace", "--dry-run", "--file", "snap.db"]);
    assert!(out.starts_with("load (dry run, nothing loaded): snap.db matches its manifest"));
    assert!(out.contains("would replace 3 analyses"), "{out}");
    assert_eq!(ws.fingerprint(), before, "load --dry-run loaded");
    let refused = ws.run(&["load", "--dry-run", "--file", "snap.db"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("pass --replace"),
        "{}",
        stderr(&refused)
    );
    }
}

#[test]
fn cache_dry_runs_remove_nothing() {
    let ws = Workspace::new();
    ws.ok(&["init", "-q"]);
    // cache --prune/--clear --dry-run: what would go, and nothing goes.
    ws.sql(
        "INSERT INTO embedding_cache (model, content_sha256, embedding) \
         VALUES ('gone-model', X'00', X'0000803F'), ('gone-model', X'01', X'0000803F')",
    );
    let entries =
        || json(&ws.ok(&["cache", "--format", "json"]))["summary"]["models"][0]["entries"].clone();
    assert_eq!(entries(), 2);
    let out = ws.ok(&["cache", "--prune", "--dry-run"]);
    assert!(
        out.contains("would remove the entries no chunk uses: 2 of the 2"),
        "{out}"
    );
    let out = ws.ok(&["cache", "--clear", "--dry-run", "--format", "json"]);
    assert_eq!(json(&out)["would_remove"], 2);
    assert_eq!(entries(), 2, "a dry run removed entries");
    ws.ok(&["cache", "--prune", "-q"]);
    assert_eq!(
        entries(),
        serde_json::Value::Null,
        "the real prune removes them"
    );
}

#[test]
fn missing_inputs_create_nothing() {
    let ws = Workspace::new();
    // init does not create the folders above the database file.
    let url = format!("sqlite:{}", ws.path("no/such/dir/x.db").display());
    let out = ws
        .command(&["init"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!(
            "the folder {} does not exist",
            ws.path("no/such/dir").display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!ws.path("no").exists());

    // restore and load check their file before creating a database.
    let db = ws.path("golden.db");
    let out = ws.run(&["restore", "--file", "missing.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: missing.json: No such file"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("note:"),
        "no embedder notice for a missing file"
    );
    assert!(!db.exists(), "restore created the database");
    for args in [
        &["load", "--file", "nope"][..],
        &["verify", "--snapshot", "nope"],
    ] {
        let out = ws.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let e = stderr(&out);
        assert!(
            e.contains("nope: No such file") && !e.contains("manifest"),
            "{args:?}: {e}"
        );
    }
    assert!(!db.exists(), "load created the database");
}

#[test]
fn the_default_embedder_notice_comes_only_with_embedding() {
    let ws = Workspace::new();
    let empty = ws.path("empty.json");
    ws.ok(&["init", "-q"]);
    ws.ok(&[
        "backup",
        "-q",
        "--allow-empty",
        "--file",
        empty.to_str().unwrap(),
    ]);
    let out = ws.run(&["restore", "--file", empty.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "nothing embedded, no notice");
    let out = ws.run(&["restore", "--file", sample().to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        stderr(&out).starts_with("note: embedding with `hash`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn messages_say_what_is_wrong_in_the_users_words() {
    let ws = Workspace::new();
    // log outside a git repository.
    restore_sample(&ws);
    ws.ok(&["backup", "-q", "--file", "b.json"]);
    let out = ws
        .command(&["log", "--file", "b.json"])
        .env("GIT_CEILING_DIRECTORIES", ws.dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(e.contains("b.json is not in a git repository"), "{e}");
    assert!(!e.contains("rev-parse") && !e.contains("fatal"), "{e}");

    // A conflict names an analysis once.
    let out = ws.run(&[
        "--embedder",
        "hash",
        "restore",
        "--file",
        sample().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    let analysis = e
        .lines()
        .find(|l| l.trim_start().starts_with("analysis "))
        .expect(&e);
    assert!(analysis.ends_with("already exists"), "{analysis}");
    assert!(
        e.contains("(in analysis "),
        "a chunk still names its analysis: {e}"
    );

    // An empty database URL.
    let out = ws
        .command(&["status"])
        .env("DATABASE_URL", "")
        .arg("--database-url=")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the database URL is empty"),
        "{}",
        stderr(&out)
    );
}

store_test! {
    fn verbose_runs_log_connections_phases_and_counts_without_colour(backend) {
    let ws = Workspace::on(backend);
    let file = sample();
    let out = ws.run(&[
        "-v",
        "--embedder",
        "hash",
        "restore",
        "-q",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let e = stderr(&out);
    for line in [
        "opening the database",
        "database open",
        "embedder ready",
        "restore: transaction open",
        "restore: committed",
    ] {
        assert!(e.contains(line), "-v restore lacks {line:?}: {e}");
    }
    assert!(
        !e.contains('\u{1b}'),
        "colour in a log that is not a terminal: {e}"
    );
    let out = ws
        .command(&["status", "-q"])
        .env("GOLDSET_LOG", "debug")
        .output()
        .unwrap();
    let e = stderr(&out);
    let connection = match backend {
        Backend::Sqlite => "opening SQLite database",
        Backend::Postgres => "connecting to PostgreSQL",
    };
    assert!(e.contains(connection) && e.contains("database open"), "{e}");
    if backend == Backend::Postgres {
        assert!(e.contains("connected to PostgreSQL") && e.contains("server_version"), "{e}");
        assert!(!e.contains("password"), "{e}");
    }
    let out = ws.run(&["-v", "backup", "-q", "--file", "b.json"]);
    let e = stderr(&out);
    assert!(
        e.contains("backup: writing") && e.contains("backup: done"),
        "{e}"
    );
    let out = ws.run(&[
        "-v",
        "--embedder",
        "hash",
        "verify",
        "-q",
        "--file",
        "b.json",
    ]);
    let e = stderr(&out);
    assert!(
        e.contains("verify: file read") && e.contains("verify: checking the database"),
        "{e}"
    );
    // Without -v: nothing.
    assert_eq!(stderr(&ws.run(&["status", "-q"])), "");
}
}

#[test]
fn help_groups_options_and_shows_only_those_a_command_uses() {
    let ws = Workspace::new();
    let help = |args: &[&str]| {
        let out = ws
            .command(args)
            .env_remove("DATABASE_URL")
            .env_remove("GOLDSET_SCHEMA")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        stdout(&out)
    };
    let restore = help(&["restore", "--help"]);
    assert!(
        restore.contains("Global options:") && restore.contains("Embedder options:"),
        "{restore}"
    );
    assert!(restore.contains("--embedder-retry-window") && restore.contains("--openai-base-url"));
    let status = help(&["status", "--help"]);
    assert!(status.contains("Global options:") && status.contains("--database-url"));
    assert!(
        !status.contains("--embedder") && !status.contains("--openai"),
        "{status}"
    );
    let load = help(&["load", "--help"]);
    assert!(
        load.contains("--embedder ") && !load.contains("--openai"),
        "{load}"
    );
    let top = help(&["--help"]);
    for needed in [
        "Exit codes:",
        "PGPASSWORD",
        "HF_HUB_OFFLINE",
        "GOLDSET_LOG",
        "NO_COLOR",
    ] {
        assert!(top.contains(needed), "--help lacks {needed}");
    }
    for text in [&restore, &status, &top] {
        assert!(
            !text.contains("=]"),
            "an unset variable shown with an empty value: {text}"
        );
        assert!(text.contains("[env: DATABASE_URL]"));
    }
    // No command: the help, without the hidden `generate`.
    let out = ws.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("restore"), "{text}");
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("generate")),
        "{text}"
    );
}

#[cfg(feature = "openai")]
mod openai_flags {
    use super::*;
    use crate::common::embedding_server::{EmbeddingServer, Reply};

    fn embed(server: &EmbeddingServer, extra: &[&str]) -> Output {
        let ws = Workspace::new();
        let mut args = vec!["embed", "--embedder", "openai:m"];
        args.extend(extra);
        args.push("hello");
        ws.command(&args)
            .env("OPENAI_BASE_URL", server.base_url())
            .env_remove("OPENAI_API_KEY")
            .output()
            .unwrap()
    }

    #[test]
    fn the_retry_window_is_a_flag() {
        // The probe succeeds; every later request is a 503.
        let failing = || {
            EmbeddingServer::start(8, |s| match s.n {
                0 => Reply::Vectors,
                _ => Reply::error(503, "restarting"),
            })
        };
        let server = failing();
        let out = embed(&server, &["--embedder-retry-window", "0s"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert_eq!(server.count(), 2, "no retry within a window of 0 s");
        let server = failing();
        let out = embed(&server, &["--embedder-retry-window", "1s"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            server.count() >= 3,
            "retried within 1 s: {}",
            server.count()
        );
        let out = embed(&server, &["--embedder-retry-window", "soon"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("--embedder-retry-window"),
            "{}",
            stderr(&out)
        );
    }

    #[test]
    fn a_renamed_model_is_accepted_when_allowed() {
        let server = EmbeddingServer::start(8, |_| Reply::Renamed("served-model".into()));
        assert_eq!(embed(&server, &[]).status.code(), Some(2));
        let out = embed(&server, &["--embedder-allow-model-alias"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let printed: Vec<f32> = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(printed, server.vector("hello"));
    }
}
