//! Unit tests of the command line: its definition, parsing, and the exit contract of `execute`.

use super::*;

#[test]
fn the_command_line_definition_is_consistent() {
    command().debug_assert();
}

fn parse(args: &[&str]) -> Cli {
    parse_from(std::iter::once("goldset").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// `--wait`/`--no-wait` on every command that takes the write lock; the last one wins.
#[test]
fn lock_flags_pair_up_on_every_writing_command() {
    let lock = |args: &[&str]| match parse(args).command {
        Command::Restore(a) => a.lock.wait(),
        Command::Reembed(a) => a.lock.wait(),
        Command::Load(a) => a.lock.wait(),
        Command::Cache(a) => a.lock.wait(),
        other => panic!("{other:?} takes no lock flags"),
    };
    for command in ["restore", "reembed", "load", "cache"] {
        assert!(lock(&[command]), "{command} waits by default");
        assert!(lock(&[command, "--wait"]), "{command} --wait");
        assert!(!lock(&[command, "--no-wait"]), "{command} --no-wait");
        assert!(
            lock(&[command, "--no-wait", "--wait"]),
            "{command}: last wins"
        );
        assert!(
            !lock(&[command, "--wait", "--no-wait"]),
            "{command}: last wins"
        );
    }
}

/// The shared groups keep each flag's spelling and default on every command that has it.
#[test]
fn shared_flags_keep_their_defaults() {
    use goldset::format::DEFAULT_BACKUP_PATH;
    use goldset::model::StatusFilter;
    let completed = StatusFilter::Only(vec!["completed".into()]);
    match parse(&["backup"]).command {
        Command::Backup(a) => {
            assert_eq!(a.file.file, PathBuf::from(DEFAULT_BACKUP_PATH));
            assert_eq!(a.status.filter(), completed);
        }
        other => panic!("{other:?}"),
    }
    match parse(&["verify", "-f", "x.json", "--status", "a,all"]).command {
        Command::Verify(a) => {
            assert_eq!(a.file.file, PathBuf::from("x.json"));
            assert_eq!(a.status.filter(), StatusFilter::All);
        }
        other => panic!("{other:?}"),
    }
    match parse(&["restore", "--no-cache", "--metadata-file", "m.json"]).command {
        Command::Restore(a) => {
            assert!(!a.cache.use_cache());
            assert_eq!(a.metadata.metadata_file, Some(PathBuf::from("m.json")));
        }
        other => panic!("{other:?}"),
    }
    match parse(&["reembed"]).command {
        Command::Reembed(a) => assert!(a.cache.use_cache()),
        other => panic!("{other:?}"),
    }
}

/// Runs `args` in a fresh folder (with an empty configuration file) into `stdout`.
fn execute_into(dir: &std::path::Path, args: &[&str], stdout: stdout::Stdout) -> i32 {
    let config = dir.join("goldset.toml");
    std::fs::write(&config, "").unwrap();
    let mut argv = vec!["goldset", "--config", config.to_str().unwrap()];
    argv.extend(args);
    let cli = parse_from(&argv).unwrap();
    execute(cli, &Output::with_stdout(Format::Text, false, stdout))
}

/// A closed pipe ends output quietly and keeps the command's exit code; a full device is an
/// I/O error (exit 2). Neither panics.
#[test]
fn stdout_failures_map_to_the_exit_contract() {
    use stdout::tests::{enospc, epipe, failing};
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (a, b) = (file("a.json"), file("b.json"));
    let generate = |path: &str, seed: &str| {
        let (out, written, _) = failing(usize::MAX, epipe);
        let args = ["generate", "-f", path, "--analyses", "3", "--seed", seed];
        assert_eq!(execute_into(dir.path(), &args, out), 0);
        assert!(String::from_utf8_lossy(&written.borrow()).starts_with("generate: "));
    };
    generate(&a, "1");
    generate(&b, "2");
    let diff = ["diff", a.as_str(), b.as_str()];
    let (out, written, _) = failing(0, epipe);
    assert_eq!(execute_into(dir.path(), &diff, out), 1, "diff's own code");
    assert!(written.borrow().is_empty());
    let (out, _, attempts) = failing(10, epipe);
    assert_eq!(execute_into(dir.path(), &diff, out), 1, "diff's own code");
    assert_eq!(*attempts.borrow(), 2, "no write after the pipe closed");
    let (out, _, _) = failing(0, enospc);
    assert_eq!(execute_into(dir.path(), &diff, out), 2, "a full device");
    let same = ["diff", a.as_str(), a.as_str()];
    let (out, _, _) = failing(0, epipe);
    assert_eq!(execute_into(dir.path(), &same, out), 0);
    let (out, _, _) = failing(0, enospc);
    assert_eq!(execute_into(dir.path(), &same, out), 2);
    let missing = ["verify", "--file-only", "-f", &file("missing.json")];
    let (out, _, _) = failing(0, epipe);
    assert_eq!(
        execute_into(dir.path(), &missing, out),
        2,
        "verify's own error"
    );
}

#[test]
fn logs_are_coloured_only_on_a_terminal_without_no_color() {
    use std::ffi::OsStr;
    assert!(log_colour(true, None));
    assert!(log_colour(true, Some(OsStr::new(""))));
    assert!(!log_colour(true, Some(OsStr::new("1"))));
    assert!(!log_colour(false, None));
}

#[test]
fn retry_window_and_model_alias_flags_parse() {
    let cli = parse(&["--embedder-retry-window", "90s", "embed", "x"]);
    assert_eq!(
        cli.global.embedder_retry_window,
        Some(std::time::Duration::from_secs(90))
    );
    assert!(!cli.global.embedder_allow_model_alias);
    let cli = parse(&[
        "restore",
        "--embedder-retry-window",
        "2m",
        "--embedder-allow-model-alias",
    ]);
    assert_eq!(
        cli.global.embedder_retry_window,
        Some(std::time::Duration::from_secs(120))
    );
    assert!(cli.global.embedder_allow_model_alias);
}

/// Hiding the embedder options from a command's help leaves its other flags working.
#[test]
fn flags_still_parse_where_embedder_options_are_hidden() {
    assert!(parse(&["status", "-q"]).global.quiet);
    let cli = parse(&["backup", "-q", "-f", "x.json", "--embedder", "hash"]);
    assert!(cli.global.quiet);
    assert_eq!(cli.global.embedder.as_deref(), Some("hash"));
    match cli.command {
        Command::Backup(a) => assert_eq!(a.file.file, PathBuf::from("x.json")),
        other => panic!("{other:?}"),
    }
}

/// Commands that never write keep refusing the lock flags.
#[test]
fn read_only_commands_take_no_lock_flags() {
    for command in ["status", "backup", "diff a b", "dump", "verify"] {
        let mut args = vec!["goldset"];
        args.extend(command.split(' '));
        args.push("--no-wait");
        assert!(parse_from(&args).is_err(), "{command} --no-wait");
    }
}
