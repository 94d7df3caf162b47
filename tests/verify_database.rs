//! `verify` proves the database against the backup: content, coverage, orphans, embeddings.

use crate::common::{python_fixture, sample, stdout, Backend, Workspace};
use serde_json::Value;

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

fn prepared(backend: Backend) -> Workspace {
    let ws = Workspace::on(backend);
    ws.load(&sample());
    ws.ok(&["backup", "-q"]);
    ws
}

store_test! {
    fn a_faithful_database_passes(backend) {
        let ws = prepared(backend);
        let (code, r) = report(&ws, &[]);
        assert_eq!(code, 0, "{r}");
        assert_eq!(r["ok"], true);
        assert_eq!(r["counts"]["total_chunks"], 86);
        for c in r["checks"].as_array().unwrap() {
            assert!(c["verdict"] == "ok" || c["verdict"] == "skipped", "{c}");
        }
    }
}

store_test! {
    fn changed_content_is_found(backend) {
        let ws = prepared(backend);
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(sample()).unwrap()).unwrap();
        let analysis = doc["analyses"][7]["id"].as_str().unwrap();
        let chunk = doc["analyses"][7]["chunks"][1]["id"].as_str().unwrap();
        ws.sql(&format!(
            "UPDATE chunks SET content = content || '!' WHERE id = '{chunk}'"
        ));
        let (code, r) = report(&ws, &[]);
        assert_eq!(code, 1);
        let c = check(&r, "db_content");
        assert_eq!(c["verdict"], "fail");
        assert!(c["examples"][0].as_str().unwrap().contains(analysis), "{c}");
        // The file itself is still fine.
        let (code, _) = report(&ws, &["--file-only"]);
        assert_eq!(code, 0);
    }
}

store_test! {
    fn missing_and_extra_analyses_are_found_but_other_statuses_are_not_errors(backend) {
        let ws = prepared(backend);
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
        ws.sql(&format!("DELETE FROM analyses WHERE id = '{gone}'"));
        let (_, r) = report(&ws, &[]);
        let c = check(&r, "db_content");
        assert!(c["examples"][0].as_str().unwrap().contains(gone), "{c}");
    }
}

store_test! {
    fn orphans_are_found(backend) {
        let ws = prepared(backend);
        // Bypass the foreign key, as a buggy writer or a manual edit might.
        let bypass = match backend {
            Backend::Sqlite => "PRAGMA foreign_keys = OFF;",
            Backend::Postgres => "SET session_replication_role = replica;",
        };
        ws.sql(&format!(
            "{bypass} INSERT INTO chunks (id, analysis_id, chunk_index, content, content_type) VALUES
             ('6f0f7a52-6f1e-4c1e-9d55-000000000001', '6f0f7a52-6f1e-4c1e-9d55-0000000000aa', 0, 'x', 'text')"
        ));
        let (code, r) = report(&ws, &[]);
        assert_eq!(code, 1);
        assert_eq!(check(&r, "db_orphans")["problems"], 1);
    }
}

store_test! {
    fn embeddings_must_come_from_the_configured_model(backend) {
        let ws = prepared(backend);
        let (code, r) = report(&ws, &["--embedder", "hash:128"]);
        assert_eq!(code, 1);
        assert_eq!(check(&r, "db_embeddings")["problems"], 86);

        ws.sql("UPDATE chunks SET embedding = NULL WHERE chunk_index = 0");
        let (code, r) = report(&ws, &[]);
        assert_eq!(code, 1);
        let c = check(&r, "db_embeddings");
        assert_eq!(c["problems"], 20);
        assert!(
            c["examples"][0].as_str().unwrap().contains("no embedding"),
            "{c}"
        );

        ws.sql(match backend {
            Backend::Sqlite => "UPDATE chunks SET embedding = zeroblob(12) WHERE chunk_index = 0",
            Backend::Postgres => {
                "ALTER TABLE chunks ALTER COLUMN embedding TYPE vector;
                 UPDATE chunks SET embedding = '[0,0,0]' WHERE chunk_index = 0"
            }
        });
        let (_, r) = report(&ws, &[]);
        assert!(
            check(&r, "db_embeddings")["examples"][0]
                .as_str()
                .unwrap()
                .contains("dimension 3"),
            "{r}"
        );
    }
}

store_test! {
    fn text_report_has_one_line_per_check(backend) {
        let ws = prepared(backend);
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
}

store_test! {
    fn duplicate_urls_are_warnings(backend) {
        let ws = Workspace::on(backend);
        let mut doc: Value =
            serde_json::from_str(&std::fs::read_to_string(sample()).unwrap()).unwrap();
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
}

store_test! {
    fn url_deny_list_is_configurable(backend) {
        let ws = Workspace::on(backend);
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
        let mut doc: Value =
            serde_json::from_str(&std::fs::read_to_string(sample()).unwrap()).unwrap();
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
}

store_test! {
    fn an_empty_backup_does_not_cover_up_a_full_database(backend) {
        let ws = prepared(backend);
        ws.ok(&[
            "backup",
            "-q",
            "--status",
            "archived",
            "--allow-empty",
            "--file",
            "empty.json",
        ]);
        let out = ws.run(&["verify", "--file", "empty.json", "--format", "json"]);
        assert_eq!(out.status.code(), Some(1));
        let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(check(&r, "db_extra")["problems"], 20, "{r}");
        // Verified against what it covers, it passes.
        ws.ok(&["verify", "--file", "empty.json", "--status", "archived"]);
    }
}
