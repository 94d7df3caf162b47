//! A stored row of a shape goldset cannot back up (written by SQL or by the application) is
//! reported by backup, verify and diff as an error naming table, row and column, with exit 1 —
//! never a panic — and nothing is written.

use crate::common::{sample, stderr, Backend, Workspace};

/// A sample database with one row damaged by `sqlite` / `postgres` SQL, then every reading
/// command run against it.
fn damaged_row_is_named(
    backend: Backend,
    damage: (&str, &str),
    table: &str,
    row: &str,
    column: &str,
    reason: &str,
) {
    let ws = Workspace::on(backend);
    ws.load(&sample());
    ws.ok(&["backup", "-q", "--file", "before.json"]);
    ws.sql(match backend {
        Backend::Sqlite => damage.0,
        Backend::Postgres => damage.1,
    });
    for args in [
        &["backup", "--file", "after.json"][..],
        &["verify", "--file", "before.json"][..],
        &["verify", "--file", "before.json", "--format", "json"][..],
        &["diff", "before.json", "db:"][..],
        &["backup", "--check", "--file", "before.json"][..],
    ] {
        let out = ws
            .command(args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        // With --format json the error is a JSON object on stdout.
        let err = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        for part in [table, row, column, reason] {
            assert!(err.contains(part), "{args:?}: {part:?} missing from: {err}");
        }
    }
    assert!(
        !ws.path("after.json").exists(),
        "a refused backup wrote a file"
    );
    // status only counts rows: it still works.
    ws.ok(&["status"]);
}

fn analysis_id() -> String {
    let text = std::fs::read_to_string(sample()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["analyses"][0]["id"].as_str().unwrap().to_owned()
}

fn artifact_id() -> String {
    let text = std::fs::read_to_string(sample()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["analyses"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a["artifact"]["id"].as_str())
        .unwrap()
        .to_owned()
}

store_test! {
    /// `findings` holding an object where a list of findings belongs.
    fn findings_object(backend) {
        let id = analysis_id();
        damaged_row_is_named(
            backend,
            (
                &format!("UPDATE analyses SET findings = '{{\"a\": 1}}' WHERE id = '{id}'"),
                &format!("UPDATE analyses SET findings = '{{\"a\": 1}}' WHERE id = '{id}'"),
            ),
            "analyses",
            &id,
            "findings",
            "unexpected JSON",
        );
    }
}

store_test! {
    /// A finding whose `confidence` is a string.
    fn finding_with_a_string_confidence(backend) {
        let id = analysis_id();
        let bad = r#"[{"agent": "a", "category": "c", "content": "x", "confidence": "high"}]"#;
        damaged_row_is_named(
            backend,
            (
                &format!("UPDATE analyses SET findings = '{bad}' WHERE id = '{id}'"),
                &format!("UPDATE analyses SET findings = '{bad}' WHERE id = '{id}'"),
            ),
            "analyses",
            &id,
            "findings",
            "confidence",
        );
    }
}

store_test! {
    /// An artifact's `metadata` holding a list where an object belongs.
    fn artifact_metadata_list(backend) {
        let id = artifact_id();
        damaged_row_is_named(
            backend,
            (
                &format!("UPDATE artifacts SET metadata = '[1,2]' WHERE id = '{id}'"),
                &format!("UPDATE artifacts SET metadata = '[1,2]' WHERE id = '{id}'"),
            ),
            "artifacts",
            &id,
            "metadata",
            "unexpected JSON",
        );
    }
}

store_test! {
    /// A time a backup cannot write: year 10000 on SQLite, `'infinity'` on PostgreSQL.
    fn time_outside_a_backup(backend) {
        let id = analysis_id();
        damaged_row_is_named(
            backend,
            (
                // Year 10000 in microseconds since the Unix epoch.
                &format!("UPDATE analyses SET created_at = 253402300800000000 WHERE id = '{id}'"),
                &format!("UPDATE analyses SET created_at = 'infinity' WHERE id = '{id}'"),
            ),
            "analyses",
            &id,
            "created_at",
            match backend {
                Backend::Sqlite => "0001–9999",
                Backend::Postgres => "infinity",
            },
        );
    }
}

store_test! {
    /// JSON nested 200 deep: past the JSON parser's recursion limit.
    fn deeply_nested_json(backend) {
        let id = artifact_id();
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        damaged_row_is_named(
            backend,
            (
                &format!("UPDATE artifacts SET key_findings = '{deep}' WHERE id = '{id}'"),
                &format!("UPDATE artifacts SET key_findings = '{deep}' WHERE id = '{id}'"),
            ),
            "artifacts",
            &id,
            "key_findings",
            "recursion limit",
        );
    }
}
