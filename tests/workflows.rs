//! The CI story, tested without GitHub: the workflows' shell steps in a temporary git
//! repository, the git-friendly layout (one edited chunk, a two-line diff), `backup --check`,
//! `diff` and `log`.

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
