//! `verify` proves the database against the backup: content, coverage, orphans, embeddings.

mod common;

use common::{python_fixture, sample, stdout, Workspace};
use serde_json::Value;

fn sqlite(ws: &Workspace) -> rusqlite::Connection {
    rusqlite::Connection::open(ws.path("golden.db")).unwrap()
}

fn report(ws: &Workspace, args: &[&str]) -> (i32, Value) {
    let mut all = vec![
        "verify",
        "--format",
        "json",
        "--file",
        "data/golden_dataset_backup.json",
    ];
    all.extend_from_slice(args);
    let out = ws.run(&all);
    (
        out.status.code().unwrap(),
        serde_json::from_str(&stdout(&out)).unwrap(),
    )
}

fn check<'v>(report: &'v Value, name: &str) -> &'v Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap()
}

fn prepared() -> Workspace {
    let ws = Workspace::new();
    ws.load(&sample());
    ws.ok(&["backup", "-q"]);
    ws
}

#[test]
fn a_faithful_database_passes() {
    let ws = prepared();
    let (code, r) = report(&ws, &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["ok"], true);
    assert_eq!(r["counts"]["total_chunks"], 86);
    for c in r["checks"].as_array().unwrap() {
        assert!(c["verdict"] == "ok" || c["verdict"] == "skipped", "{c}");
    }
}

#[test]
fn changed_content_is_found() {
    let ws = prepared();
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(sample()).unwrap()).unwrap();
    let analysis = doc["analyses"][7]["id"].as_str().unwrap();
    let chunk = doc["analyses"][7]["chunks"][1]["id"].as_str().unwrap();
    sqlite(&ws)
        .execute(
            "UPDATE chunks SET content = content || '!' WHERE id = ?1",
            [chunk],
        )
        .unwrap();
    let (code, r) = report(&ws, &[]);
    assert_eq!(code, 1);
    let c = check(&r, "db_content");
    assert_eq!(c["verdict"], "fail");
    assert!(c["examples"][0].as_str().unwrap().contains(analysis), "{c}");
    // The file itself is still fine.
    let (code, _) = report(&ws, &["--file-only"]);
    assert_eq!(code, 0);
}

#[test]
fn missing_and_extra_analyses_are_found_but_other_statuses_are_not_errors() {
    let ws = prepared();
    let mut doc: Value = serde_json::from_str(
        &std::fs::read_to_string(python_fixture("python_tiny_backup.json")).unwrap(),
    )
    .unwrap();
    for a in doc["analyses"].as_array_mut().unwrap() {
        a["status"] = "pending".into();
    }
    std::fs::write(
        ws.path("pending.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    ws.ok(&["restore", "-q", "--file", "pending.json"]);
    let (code, r) = report(&ws, &[]);
    assert_eq!(
        code, 0,
        "analyses of statuses the backup does not cover are not errors: {r}"
    );

    ws.ok(&[
        "restore",
        "-q",
        "--file",
        python_fixture("python_generated_backup.json")
            .to_str()
            .unwrap(),
    ]);
    let (code, r) = report(&ws, &[]);
    assert_eq!(code, 1);
    assert_eq!(check(&r, "db_extra")["problems"], 12);

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(sample()).unwrap()).unwrap();
    let gone = doc["analyses"][0]["id"].as_str().unwrap();
    sqlite(&ws)
        .execute("DELETE FROM analyses WHERE id = ?1", [gone])
        .unwrap();
    let (_, r) = report(&ws, &[]);
    let c = check(&r, "db_content");
    assert!(c["examples"][0].as_str().unwrap().contains(gone), "{c}");
}

#[test]
fn orphans_are_found() {
    let ws = prepared();
    let conn = sqlite(&ws);
    conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
    conn.execute(
        "INSERT INTO chunks (id, analysis_id, chunk_index, content, content_type) VALUES
         ('6f0f7a52-6f1e-4c1e-9d55-000000000001', '6f0f7a52-6f1e-4c1e-9d55-0000000000aa', 0, 'x', 'text')",
        [],
    )
    .unwrap();
    let (code, r) = report(&ws, &[]);
    assert_eq!(code, 1);
    assert_eq!(check(&r, "db_orphans")["problems"], 1);
}

#[test]
fn embeddings_must_come_from_the_configured_model() {
    let ws = prepared();
    let (code, r) = report(&ws, &["--embedder", "hash:128"]);
    assert_eq!(code, 1);
    assert_eq!(check(&r, "db_embeddings")["problems"], 86);

    sqlite(&ws)
        .execute(
            "UPDATE chunks SET embedding = NULL WHERE chunk_index = 0",
            [],
        )
        .unwrap();
    let (code, r) = report(&ws, &[]);
    assert_eq!(code, 1);
    let c = check(&r, "db_embeddings");
    assert_eq!(c["problems"], 20);
    assert!(
        c["examples"][0].as_str().unwrap().contains("no embedding"),
        "{c}"
    );

    sqlite(&ws).execute("UPDATE chunks SET embedding = zeroblob(12), embedding_model = 'goldset-hash-v1-384' WHERE chunk_index = 0", []).unwrap();
    let (_, r) = report(&ws, &[]);
    assert!(
        check(&r, "db_embeddings")["examples"][0]
            .as_str()
            .unwrap()
            .contains("dimension 3"),
        "{r}"
    );
}

#[test]
fn text_report_has_one_line_per_check() {
    let ws = prepared();
    let text = ws.ok(&["verify"]);
    for name in [
        "json",
        "unique_ids",
        "chunk_index",
        "urls",
        "metadata_counts",
        "metadata_file",
        "db_content",
        "db_embeddings",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "{name} missing:\n{text}"
        );
    }
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("verify: OK"),
        "{text}"
    );
}

#[test]
fn duplicate_urls_are_warnings() {
    let ws = Workspace::new();
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(sample()).unwrap()).unwrap();
    doc["analyses"][5]["url"] = doc["analyses"][2]["url"].clone();
    std::fs::write(
        ws.path("dup.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    let out = ws.run(&[
        "verify",
        "--file-only",
        "--format",
        "json",
        "--file",
        "dup.json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(check(&r, "duplicate_urls")["verdict"], "warning");
    ws.ok(&["restore", "-q", "--file", "dup.json"]);
}

#[test]
fn url_deny_list_is_configurable() {
    let ws = Workspace::new();
    let out = ws.run(&[
        "verify",
        "--file-only",
        "--deny-host",
        "sqlite.org",
        "--file",
        sample().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("host www.sqlite.org is a placeholder"),
        "{}",
        stdout(&out)
    );
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(sample()).unwrap()).unwrap();
    doc["analyses"][0]["url"] = "http://localhost:8080/docs".into();
    std::fs::write(
        ws.path("local.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    assert_eq!(
        ws.run(&["verify", "--file-only", "--file", "local.json"])
            .status
            .code(),
        Some(1)
    );
    ws.ok(&[
        "verify",
        "--file-only",
        "--no-default-deny",
        "--file",
        "local.json",
    ]);
}
