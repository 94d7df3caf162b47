//! The CI story, tested without GitHub: the workflows' shell steps in a temporary git
//! repository (the weekly job's push against a bare remote that refuses force pushes, the pull
//! request's drift report), every workflow file linted by actionlint, the git-friendly layout
//! (one edited chunk, a two-line diff), `backup --check`, `diff` and `log`.

use crate::common::{sample, stderr, stdout, Workspace};
use std::path::Path;
use std::process::{Command, Output};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Runs one of the workflow scripts in `dir`, with the built goldset first on PATH.
fn script(ws: &Workspace, name: &str) -> Output {
    script_with(ws, name, &[])
}

/// [`script`] with more environment variables.
fn script_with(ws: &Workspace, name: &str, vars: &[(&str, &str)]) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_goldset")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/github-actions/scripts")
        .join(name);
    Command::new("bash")
        .arg(script)
        .current_dir(ws.dir.path())
        .env("PATH", path)
        .env("DATABASE_URL", &ws.database_url)
        .env("GOLDSET_SCHEMA", &ws.schema)
        .env_remove("GOLDSET_EMBEDDER")
        .env_remove("GITHUB_STEP_SUMMARY")
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

fn commits(dir: &Path) -> usize {
    git(dir, &["rev-list", "--count", "HEAD"])
        .trim()
        .parse()
        .unwrap()
}

fn repository_with_sample() -> Workspace {
    let ws = Workspace::new();
    let dir = ws.dir.path();
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["config", "user.name", "test"]);
    git(dir, &["config", "user.email", "test@localhost"]);
    std::fs::write(dir.join(".gitignore"), "golden.db*\n").unwrap();
    git(dir, &["add", ".gitignore"]);
    git(dir, &["commit", "-q", "-m", "start"]);
    ws.load(&sample());
    ws
}

#[test]
fn scheduled_runs_commit_only_real_changes_and_git_diff_shows_only_them() {
    let ws = repository_with_sample();
    let dir = ws.dir.path();

    let first = script(&ws, "backup-and-commit.sh");
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(commits(dir), 2, "the first run commits the backup");

    // A week without changes: green, and no commit.
    let idle = script(&ws, "backup-and-commit.sh");
    assert!(idle.status.success(), "{}", stderr(&idle));
    assert!(
        stdout(&idle).contains("nothing to commit"),
        "{}",
        stdout(&idle)
    );
    assert_eq!(commits(dir), 2);
    assert_eq!(git(dir, &["status", "--porcelain", "data"]), "");

    // One chunk edited in the database: the next run commits, and git sees two changed lines —
    // that chunk's content and the backup's created_at.
    ws.sql("UPDATE chunks SET content = content || ' (revised)' WHERE id = (SELECT id FROM chunks ORDER BY id LIMIT 1)");
    let changed = script(&ws, "backup-and-commit.sh");
    assert!(changed.status.success(), "{}", stderr(&changed));
    assert_eq!(commits(dir), 3);
    let numstat = git(
        dir,
        &[
            "diff",
            "--numstat",
            "HEAD~1",
            "HEAD",
            "--",
            "data/golden_dataset_backup.json",
        ],
    );
    assert_eq!(
        numstat.split_whitespace().take(2).collect::<Vec<_>>(),
        ["2", "2"],
        "{numstat}"
    );
    let patch = git(
        dir,
        &[
            "diff",
            "-U0",
            "HEAD~1",
            "HEAD",
            "--",
            "data/golden_dataset_backup.json",
        ],
    );
    let changed_lines: Vec<&str> = patch
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert!(
        changed_lines.iter().any(|l| l.contains("(revised)")),
        "{patch}"
    );
    assert!(
        changed_lines
            .iter()
            .filter(|l| l.contains("\"created_at\""))
            .count()
            == 2,
        "{patch}"
    );
    // The metadata file did not change (same counts).
    assert_eq!(
        git(
            dir,
            &[
                "diff",
                "--numstat",
                "HEAD~1",
                "HEAD",
                "--",
                "data/golden_dataset_metadata.json"
            ]
        ),
        ""
    );

    // goldset log: one line per commit, newest first, with counts and changes.
    let log = ws.ok(&["log"]);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("20 analyses, 86 chunks, 18 artifacts"),
        "{log}"
    );
    assert!(lines[0].contains("chunks +0 −0 ~1"), "{log}");
    assert!(lines[1].contains("analyses +20 −0 ~0"), "{log}");
}

#[test]
fn pull_request_check_restores_the_committed_backup_into_a_fresh_database() {
    let ws = repository_with_sample();
    assert!(script(&ws, "backup-and-commit.sh").status.success());
    let ok = script(&ws, "verify-committed-backup.sh");
    assert!(ok.status.success(), "{}\n{}", stdout(&ok), stderr(&ok));
    assert!(stdout(&ok).contains("verify: OK"), "{}", stdout(&ok));

    // GOLDSET_CHECK_DB keeps the restored database for later steps (`goldset eval --check`),
    // and only a fresh one is used.
    let kept = ws.path("check.db");
    let kept_var = kept.to_str().unwrap();
    let ok = script_with(
        &ws,
        "verify-committed-backup.sh",
        &[("GOLDSET_CHECK_DB", kept_var)],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let status = Command::new(env!("CARGO_BIN_EXE_goldset"))
        .args(["--database-url", &format!("sqlite:{kept_var}"), "status"])
        .current_dir(ws.dir.path())
        .output()
        .unwrap();
    assert!(stdout(&status).contains("86"), "{}", stdout(&status));
    let again = script_with(
        &ws,
        "verify-committed-backup.sh",
        &[("GOLDSET_CHECK_DB", kept_var)],
    );
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(stderr(&again).contains("needs a fresh database"));

    // A broken file in the pull request fails the check.
    let file = ws.path("data/golden_dataset_backup.json");
    let text = std::fs::read_to_string(&file).unwrap().replacen(
        "\"chunk_index\": 1",
        "\"chunk_index\": 0",
        1,
    );
    std::fs::write(&file, text).unwrap();
    let broken = script(&ws, "verify-committed-backup.sh");
    assert_eq!(broken.status.code(), Some(1), "{}", stderr(&broken));
}

/// A bare repository as `origin` of `dir`, holding `dir`'s main branch, that refuses
/// non-fast-forward pushes: a force push would fail against it.
fn bare_origin(dir: &Path) -> tempfile::TempDir {
    let remote = tempfile::tempdir().unwrap();
    git(remote.path(), &["init", "-q", "--bare", "-b", "main"]);
    git(
        remote.path(),
        &["config", "receive.denyNonFastForwards", "true"],
    );
    let url = remote.path().to_str().unwrap();
    git(dir, &["remote", "add", "origin", url]);
    git(dir, &["push", "-q", "-u", "origin", "main"]);
    remote
}

/// Subjects of the commits on `main` of `repo`, newest first.
fn subjects(repo: &Path) -> Vec<String> {
    git(repo, &["log", "--format=%s", "main"])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn weekly_push_rebases_onto_a_concurrent_push_and_never_forces() {
    let ws = repository_with_sample();
    let dir = ws.dir.path();
    let remote = bare_origin(dir);

    // Someone pushes while the job runs: the job's first push is rejected.
    let other = tempfile::tempdir().unwrap();
    let clone = other.path().join("clone");
    git(
        other.path(),
        &["clone", "-q", remote.path().to_str().unwrap(), "clone"],
    );
    std::fs::write(clone.join("NOTES.md"), "someone else's change\n").unwrap();
    git(&clone, &["add", "NOTES.md"]);
    git(
        &clone,
        &[
            "-c",
            "user.name=other",
            "-c",
            "user.email=other@localhost",
            "commit",
            "-q",
            "-m",
            "someone else's change",
        ],
    );
    git(&clone, &["push", "-q", "origin", "main"]);

    let out = script_with(&ws, "backup-and-commit.sh", &[("GOLDSET_PUSH", "1")]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("push rejected (try 1 of 3)"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("pushed to origin/main (try 2 of 3)"),
        "{}",
        stdout(&out)
    );
    // The remote has both changes, one after the other (a fast-forward: the remote refuses any
    // other), and the job's checkout is at the remote's head.
    let pushed = subjects(remote.path());
    assert_eq!(pushed.len(), 3, "{pushed:?}");
    assert!(
        pushed[0].starts_with("golden dataset backup ("),
        "{pushed:?}"
    );
    assert_eq!(pushed[1..], ["someone else's change", "start"]);
    assert_eq!(
        git(dir, &["rev-parse", "HEAD"]),
        git(remote.path(), &["rev-parse", "main"])
    );
    assert!(dir.join("NOTES.md").exists());

    // A week without changes pushes nothing.
    let idle = script_with(&ws, "backup-and-commit.sh", &[("GOLDSET_PUSH", "1")]);
    assert!(idle.status.success(), "{}", stderr(&idle));
    assert!(stdout(&idle).contains("nothing to commit"));
    assert_eq!(subjects(remote.path()).len(), 3);
}

#[test]
fn weekly_push_gives_up_after_its_tries() {
    let ws = repository_with_sample();
    let dir = ws.dir.path();
    let remote = bare_origin(dir);
    // A remote that refuses every push, counting them.
    let hook = remote.path().join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho attempt >> \"$GIT_DIR/attempts\"\necho 'refused by policy' >&2\nexit 1\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let out = script_with(
        &ws,
        "backup-and-commit.sh",
        &[("GOLDSET_PUSH", "1"), ("GOLDSET_PUSH_TRIES", "2")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("push rejected 2 times; giving up"),
        "{}",
        stderr(&out)
    );
    let attempts = std::fs::read_to_string(remote.path().join("attempts")).unwrap();
    assert_eq!(attempts.lines().count(), 2, "two pushes, no more");
    assert_eq!(subjects(remote.path()), ["start"]);
}

#[test]
fn pull_request_drift_report_is_information_in_the_step_summary() {
    let ws = repository_with_sample();
    assert!(script(&ws, "backup-and-commit.sh").status.success());
    let summary = ws.path("step-summary.md");
    let summary_var = summary.to_str().unwrap();

    let same = script_with(
        &ws,
        "report-drift.sh",
        &[("GITHUB_STEP_SUMMARY", summary_var)],
    );
    assert!(same.status.success(), "{}", stderr(&same));
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(text.contains("### Production matches"), "{text}");

    // Production moved on (or the pull request edits the data): reported, and still exit 0.
    ws.sql("UPDATE chunks SET content = content || ' (revised)' WHERE id = (SELECT id FROM chunks ORDER BY id LIMIT 1)");
    std::fs::remove_file(&summary).unwrap();
    let drift = script_with(
        &ws,
        "report-drift.sh",
        &[("GITHUB_STEP_SUMMARY", summary_var)],
    );
    assert_eq!(drift.status.code(), Some(0), "{}", stderr(&drift));
    assert!(
        stdout(&drift).contains("::notice title=golden dataset drift::"),
        "{}",
        stdout(&drift)
    );
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(
        text.contains("differs from `data/golden_dataset_backup.json`"),
        "{text}"
    );
    assert!(text.contains("chunks +0 −0 ~1"), "{text}");

    // A production database that cannot be read is a warning, not a red pull request.
    std::fs::remove_file(&summary).unwrap();
    let missing = format!("sqlite:{}", ws.path("no-such-dir/x.db").display());
    let down = script_with(
        &ws,
        "report-drift.sh",
        &[
            ("GITHUB_STEP_SUMMARY", summary_var),
            ("DATABASE_URL", &missing),
        ],
    );
    assert_eq!(down.status.code(), Some(0), "{}", stderr(&down));
    assert!(stdout(&down).contains("::warning"), "{}", stdout(&down));
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(text.contains("### Could not compare production"), "{text}");
}

/// Every workflow file — the release workflow and the shipped examples — passes actionlint,
/// with shellcheck on its `run:` scripts; actionlint also reports actions that run on a
/// deprecated Node.js runtime (shown on a copy pinned to `actions/checkout@v4`). The examples'
/// scripts pass shellcheck.
#[test]
#[ignore = "needs actionlint and shellcheck: scripts/test installs them (GOLDSET_TEST_ACTIONLINT_BIN, GOLDSET_TEST_SHELLCHECK_BIN)"]
fn every_workflow_passes_with_actionlint() {
    let tool = |var: &str| {
        std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/test"))
    };
    let (actionlint, shellcheck) = (
        tool("GOLDSET_TEST_ACTIONLINT_BIN"),
        tool("GOLDSET_TEST_SHELLCHECK_BIN"),
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files_in = |folder: &str, ext: &str| -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(root.join(folder))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        files.sort();
        files
    };
    let workflows = [
        files_in(".github/workflows", "yml"),
        files_in("examples/github-actions", "yml"),
    ]
    .concat();
    let names: Vec<_> = workflows
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    for expected in ["release.yml", "weekly-backup.yml", "pr-verify.yml"] {
        assert!(names.contains(&expected), "{expected} not among {names:?}");
    }
    let lint = |files: &[std::path::PathBuf]| {
        Command::new(&actionlint)
            .args(["-no-color", "-shellcheck", &shellcheck])
            .args(files)
            .current_dir(root)
            .output()
            .unwrap()
    };
    let out = lint(&workflows);
    assert!(
        out.status.success(),
        "actionlint:\n{}{}",
        stdout(&out),
        stderr(&out)
    );

    // The same check fails a workflow on the node20 runtime.
    let scratch = tempfile::tempdir().unwrap();
    let old = scratch.path().join("old-checkout.yml");
    let text =
        std::fs::read_to_string(root.join("examples/github-actions/weekly-backup.yml")).unwrap();
    assert!(text.contains("actions/checkout@v6"));
    std::fs::write(
        &old,
        text.replace("actions/checkout@v6", "actions/checkout@v4"),
    )
    .unwrap();
    let out = lint(&[old]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("\"node20\" is deprecated"),
        "{}",
        stdout(&out)
    );

    let scripts = files_in("examples/github-actions/scripts", "sh");
    assert!(scripts.len() >= 3, "{scripts:?}");
    let out = Command::new(&shellcheck)
        .args(&scripts)
        .arg(root.join("scripts/test-wheel"))
        .output()
        .unwrap();
    assert!(out.status.success(), "shellcheck:\n{}", stdout(&out));
}

store_test! {
    fn backup_check_and_diff_report_what_changed(backend) {
        backup_check_and_diff_on(Workspace::on(backend));
    }
}

fn backup_check_and_diff_on(ws: Workspace) {
    ws.load(&sample());
    ws.ok(&["backup", "-q"]);
    let before = std::fs::read(ws.path("data/golden_dataset_backup.json")).unwrap();
    let out = ws.ok(&["backup", "--check"]);
    assert!(out.contains("hold the same records"), "{out}");

    ws.sql("DELETE FROM analyses WHERE id = (SELECT id FROM analyses ORDER BY created_at LIMIT 1)");
    let out = ws.run(&["backup", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("analyses +0 −1 ~0"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read(ws.path("data/golden_dataset_backup.json")).unwrap(),
        before,
        "--check writes nothing"
    );

    ws.ok(&["backup", "-q", "--file", "after.json"]);
    let out = ws.run(&[
        "diff",
        "data/golden_dataset_backup.json",
        "after.json",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["diff"]["summary"]["analyses"]["removed"], 1);
    assert!(v["diff"]["summary"]["chunks"]["removed"].as_u64().unwrap() > 0);
    assert_eq!(v["diff"]["changes"][0]["change"], "removed");
    // Equal sides exit 0.
    let out = ws.run(&["diff", "after.json", "db:"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn diff_refuses_files_out_of_backup_order() {
    let ws = Workspace::new();
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sample()).unwrap()).unwrap();
    doc["analyses"].as_array_mut().unwrap().reverse();
    std::fs::write(
        ws.path("reversed.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    let out = ws.run(&["diff", sample().to_str().unwrap(), "reversed.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not in backup order"),
        "{}",
        stderr(&out)
    );
}
