//! Restore → backup gives back the same content: the sample, the Python fixtures, and the
//! determinism rules (same data, same bytes; an unchanged backup is left untouched).

use crate::common::{python_fixture, sample, stderr, without_created_at, Workspace};
use goldset::timestamp::Timestamp;
use serde_json::Value;

store_test! {
    fn sample_round_trips_byte_for_byte(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        ws.ok(&["backup", "-q"]);
        let original = std::fs::read_to_string(sample()).unwrap();
        let written = std::fs::read_to_string(ws.path("data/golden_dataset_backup.json")).unwrap();
        assert_eq!(without_created_at(&written), without_created_at(&original));
        let metadata =
            std::fs::read_to_string(ws.path("data/golden_dataset_metadata.json")).unwrap();
        let metadata: Value = serde_json::from_str(&metadata).unwrap();
        let file: Value = serde_json::from_str(&written).unwrap();
        assert_eq!(metadata, file["metadata"]);
        ws.ok(&["verify"]);
    }
}

/// The fixture's analyses with timestamps in canonical form, sorted as a backup sorts them.
fn canonical_content(text: &str) -> Value {
    let mut doc: Value = serde_json::from_str(text).unwrap();
    let analyses = doc["analyses"].as_array_mut().unwrap();
    for a in analyses.iter_mut() {
        let t = Timestamp::parse(a["created_at"].as_str().unwrap()).unwrap();
        a["created_at"] = Value::String(t.to_string());
    }
    analyses.sort_by_key(|a| {
        (
            Timestamp::parse(a["created_at"].as_str().unwrap()).unwrap(),
            a["id"].as_str().unwrap().to_owned(),
        )
    });
    serde_json::json!({"metadata": doc["metadata"], "analyses": doc["analyses"]})
}

store_test! {
    fn python_backups_restore_verify_and_round_trip(backend) {
        for name in ["python_tiny", "python_generated"] {
            let fixture = python_fixture(&format!("{name}_backup.json"));
            let ws = Workspace::on(backend);
            ws.load(&fixture);
            // The fixture verifies against the database it was restored into.
            ws.ok(&["verify", "--file", fixture.to_str().unwrap()]);
            ws.ok(&["backup", "-q", "--file", "first.json"]);
            let first = std::fs::read_to_string(ws.path("first.json")).unwrap();
            let original = std::fs::read_to_string(&fixture).unwrap();
            assert_eq!(
                canonical_content(&first),
                canonical_content(&original),
                "{name}: content changed"
            );

            // And what goldset wrote restores to the same bytes again.
            let again = Workspace::on(backend);
            again.load(&ws.path("first.json"));
            again.ok(&["backup", "-q", "--file", "second.json"]);
            let second = std::fs::read_to_string(again.path("second.json")).unwrap();
            assert_eq!(
                without_created_at(&first),
                without_created_at(&second),
                "{name}"
            );
        }
    }
}

store_test! {
    fn unchanged_backup_is_left_untouched(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        ws.ok(&["backup", "-q"]);
        let file = ws.path("data/golden_dataset_backup.json");
        let before = std::fs::read(&file).unwrap();
        // A known, older modification time: a rewrite of the file, however quick, would change it.
        let modified = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let out = ws.ok(&["backup"]);
        assert!(out.contains("unchanged"), "{out}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "the created_at line must not change either"
        );
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            modified
        );
        let json: Value = serde_json::from_str(&ws.ok(&["backup", "--format", "json"])).unwrap();
        assert_eq!(json["summary"]["unchanged"], true);
    }
}

store_test! {
    fn status_filter_chooses_what_is_backed_up(backend) {
        let ws = Workspace::on(backend);
        let mut doc: Value = serde_json::from_str(
            &std::fs::read_to_string(python_fixture("python_tiny_backup.json")).unwrap(),
        )
        .unwrap();
        doc["analyses"][1]["status"] = "in_progress".into();
        std::fs::write(
            ws.path("mixed.json"),
            serde_json::to_string_pretty(&doc).unwrap(),
        )
        .unwrap();
        ws.load(&ws.path("mixed.json"));

        let count = |args: &[&str]| -> u64 {
            let mut all = vec!["backup", "--format", "json", "--file", "b.json"];
            all.extend_from_slice(args);
            let v: Value = serde_json::from_str(&ws.ok(&all)).unwrap();
            v["summary"]["counts"]["total_analyses"].as_u64().unwrap()
        };
        assert_eq!(count(&[]), 4);
        assert_eq!(count(&["--status", "all"]), 5);
        assert_eq!(count(&["--status", "in_progress"]), 1);
        assert_eq!(count(&["--status", "completed,in_progress"]), 5);
    }
}

store_test! {
    fn refuses_to_replace_a_backup_with_an_empty_one(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        ws.ok(&["backup", "-q"]);
        let file = ws.path("data/golden_dataset_backup.json");
        let before = std::fs::read(&file).unwrap();
        let out = ws.run(&["backup", "--status", "archived"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("refusing to empty it"),
            "{}",
            stderr(&out)
        );
        assert_eq!(std::fs::read(&file).unwrap(), before);
        ws.ok(&["backup", "--status", "archived", "--allow-empty", "-q"]);
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(v["analyses"], serde_json::json!([]));
    }
}

store_test! {
    fn reading_commands_never_create_a_database(backend) {
        let ws = Workspace::on(backend);
        let out = ws.run(&["backup"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("goldset init"), "{}", stderr(&out));
        assert!(!ws.path("golden.db").exists());
        assert!(!ws.path("data").exists());
    }
}
