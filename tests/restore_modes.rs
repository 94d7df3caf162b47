//! Additive restore and its conflict policies, `--replace` reporting what it removed, and
//! `--dry-run` writing nothing.

use crate::common::{python_fixture, sample, stderr, Workspace};
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap()
}

store_test! {
    fn existing_ids_fail_by_default_and_are_listed(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        let before = ws.fingerprint();
        let out = ws.run(&["restore", "--file", sample().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains("already exist"), "{err}");
        let first = json(&std::fs::read_to_string(sample()).unwrap())["analyses"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            err.contains(&first),
            "the first conflicting id is listed:\n{err}"
        );
        assert!(err.contains("and ") && err.contains("more"), "{err}");
        assert_eq!(ws.fingerprint(), before);

        let out = ws.run(&[
            "restore",
            "--format",
            "json",
            "--file",
            sample().to_str().unwrap(),
        ]);
        let v = json(&crate::common::stdout(&out));
        assert_eq!(v["ok"], false);
        // 20 analyses + 86 chunks + 18 artifacts already exist.
        assert!(
            v["error"].as_str().unwrap().starts_with("124 records"),
            "{v}"
        );
    }
}

store_test! {
    fn skip_keeps_existing_analyses_and_adds_new_ones(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        let tiny = python_fixture("python_tiny_backup.json");
        let out = json(&ws.ok(&[
            "restore",
            "--on-conflict",
            "skip",
            "--format",
            "json",
            "--file",
            tiny.to_str().unwrap(),
        ]));
        assert_eq!(out["summary"]["restored"]["total_analyses"], 5);
        let out = json(&ws.ok(&[
            "restore",
            "--on-conflict",
            "skip",
            "--format",
            "json",
            "--file",
            sample().to_str().unwrap(),
        ]));
        assert_eq!(out["summary"]["restored"]["total_analyses"], 0);
        assert_eq!(out["summary"]["skipped"]["total_analyses"], 20);
        assert_eq!(
            out["summary"]["after"]["analyses_by_status"]["completed"],
            25
        );
    }
}

store_test! {
    fn update_replaces_existing_analyses_with_the_files(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        let mut doc = json(&std::fs::read_to_string(sample()).unwrap());
        doc["analyses"][3]["chunks"][0]["content"] = "Rewritten chunk text.".into();
        doc["analyses"][3]["artifact"] = Value::Null;
        doc["metadata"]["total_artifacts"] = 17.into();
        std::fs::write(
            ws.path("edited.json"),
            serde_json::to_string_pretty(&doc).unwrap(),
        )
        .unwrap();
        let out = json(&ws.ok(&[
            "restore",
            "--on-conflict",
            "update",
            "--format",
            "json",
            "--file",
            "edited.json",
        ]));
        assert_eq!(out["summary"]["updated"], 20);
        ws.ok(&["backup", "-q", "--file", "after.json"]);
        let after = json(&std::fs::read_to_string(ws.path("after.json")).unwrap());
        assert_eq!(
            after["analyses"][3]["chunks"][0]["content"],
            "Rewritten chunk text."
        );
        assert_eq!(after["analyses"][3]["artifact"], Value::Null);
        assert_eq!(after["metadata"]["total_artifacts"], 17);
        ws.ok(&["verify", "--file", "edited.json"]);
    }
}

store_test! {
    fn a_chunk_id_owned_by_another_analysis_is_always_a_conflict(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        let before = ws.fingerprint();
        let sample_doc = json(&std::fs::read_to_string(sample()).unwrap());
        let mut doc =
            json(&std::fs::read_to_string(python_fixture("python_tiny_backup.json")).unwrap());
        doc["analyses"][0]["chunks"][0]["id"] =
            sample_doc["analyses"][2]["chunks"][0]["id"].clone();
        std::fs::write(
            ws.path("steal.json"),
            serde_json::to_string_pretty(&doc).unwrap(),
        )
        .unwrap();
        for policy in ["skip", "update"] {
            let out = ws.run(&["restore", "--on-conflict", policy, "--file", "steal.json"]);
            assert_eq!(out.status.code(), Some(1), "{policy}");
            assert!(stderr(&out).contains("chunk "), "{}", stderr(&out));
        }
        assert_eq!(ws.fingerprint(), before);
    }
}

store_test! {
    fn replace_reports_what_it_removed_including_other_statuses(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        let mut doc =
            json(&std::fs::read_to_string(python_fixture("python_tiny_backup.json")).unwrap());
        doc["analyses"][0]["status"] = "in_progress".into();
        std::fs::write(
            ws.path("wip.json"),
            serde_json::to_string_pretty(&doc).unwrap(),
        )
        .unwrap();
        ws.ok(&["restore", "-q", "--file", "wip.json"]);

        let dry = json(&ws.ok(&[
            "restore",
            "--replace",
            "--bulk",
            "--dry-run",
            "--format",
            "json",
            "--file",
            sample().to_str().unwrap(),
        ]));
        assert_eq!(dry["summary"]["dry_run"], true);
        assert_eq!(
            dry["summary"]["removed"]["analyses_by_status"]["in_progress"],
            1
        );
        assert_eq!(
            dry["summary"]["removed"]["analyses_by_status"]["completed"],
            24
        );
        assert_eq!(
            dry["summary"]["after"]["analyses_by_status"]["completed"],
            20
        );
        // A dry run wrote nothing.
        let status = json(&ws.ok(&["status", "--format", "json"]));
        assert_eq!(status["inventory"]["analyses_by_status"]["in_progress"], 1);

        let text = ws.ok(&["restore", "--replace", "--bulk", "--file", sample().to_str().unwrap()]);
        assert!(
            text.contains("replaced 25 analyses (24 completed, 1 in_progress)"),
            "{text}"
        );
        let status = json(&ws.ok(&["status", "--format", "json"]));
        assert_eq!(
            status["inventory"]["analyses_by_status"],
            serde_json::json!({"completed": 20})
        );
        assert_eq!(status["inventory"]["chunks"], 86);
    }
}

store_test! {
    fn dry_run_on_a_new_database_creates_nothing(backend) {
        let ws = Workspace::on(backend);
        let out = ws.run(&["restore", "--dry-run", "--file", sample().to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "there is no database to dry-run against"
        );
        assert!(!ws.path("golden.db").exists());
        ws.ok(&["init", "-q"]);
        let text = ws.ok(&["restore", "--dry-run", "--file", sample().to_str().unwrap()]);
        assert!(text.contains("dry run"), "{text}");
        let status = json(&ws.ok(&["status", "--format", "json"]));
        assert_eq!(status["inventory"]["chunks"], 0);
    }
}

store_test! {
    fn every_restored_chunk_is_embedded_by_the_configured_model(backend) {
        let ws = Workspace::on(backend);
        let out = json(&ws.ok(&[
            "--embedder",
            "hash:64",
            "restore",
            "--format",
            "json",
            "--file",
            sample().to_str().unwrap(),
        ]));
        assert_eq!(out["summary"]["embedded"], 86);
        assert_eq!(out["summary"]["model"], "goldset-hash-v1-64");
        ws.ok(&[
            "--embedder",
            "hash:64",
            "verify",
            "--file",
            sample().to_str().unwrap(),
        ]);
        // Without --embedder, verify demands no model (issue 15): one model throughout is
        // enough. Demanding another one fails.
        ws.ok(&["verify", "--file", sample().to_str().unwrap()]);
        let out = ws.run(&["--embedder", "hash", "verify", "--file", sample().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "hash is another model than hash:64");
    }
}

store_test! {
    /// `--replace` on goldset's own tables, when every stored chunk was embedded by this model,
    /// applies only the difference: unchanged rows keep their row and vector, an edited chunk is
    /// rewritten and embedded again, reordered chunks are renumbered in place keeping their
    /// vectors, and an analysis the file lacks is deleted (whatever its status). `--bulk`
    /// deletes and loads everything instead; both end with the file's content.
    fn replace_on_own_tables_applies_only_the_difference(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        let rows = || {
            ws.rows(
                "SELECT id, CAST(rowid AS TEXT), hex(embedding) FROM chunks ORDER BY id",
                "SELECT id::text, ctid::text, embedding::text FROM chunks ORDER BY id",
            )
        };
        let before = rows();
        let mut doc = json(&std::fs::read_to_string(sample()).unwrap());
        let analyses = doc["analyses"].as_array_mut().unwrap();
        let edited_chunk = analyses[0]["chunks"][1]["id"].as_str().unwrap().to_owned();
        analyses[0]["chunks"][1]["content"] = "A revised text for this chunk.".into();
        let chunks = analyses[1]["chunks"].as_array_mut().unwrap();
        chunks.reverse();
        for (i, chunk) in chunks.iter_mut().enumerate() {
            chunk["chunk_index"] = i.into();
        }
        let moved: Vec<String> = chunks.iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
        let gone = analyses.remove(2);
        let gone_chunks = gone["chunks"].as_array().unwrap().len() as u64;
        let metadata = &mut doc["metadata"];
        metadata["total_analyses"] = (metadata["total_analyses"].as_u64().unwrap() - 1).into();
        metadata["total_chunks"] = (metadata["total_chunks"].as_u64().unwrap() - gone_chunks).into();
        metadata["total_artifacts"] = (metadata["total_artifacts"].as_u64().unwrap()
            - u64::from(!gone["artifact"].is_null()))
        .into();
        std::fs::write(ws.path("edited.json"), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        // An analysis of another status, which the file does not hold, goes too (unlike on an
        // application's tables): the database ends up holding exactly the file.
        let mut wip = json(&std::fs::read_to_string(python_fixture("python_tiny_backup.json")).unwrap());
        wip["analyses"][0]["status"] = "in_progress".into();
        std::fs::write(ws.path("wip.json"), serde_json::to_string_pretty(&wip).unwrap()).unwrap();
        ws.ok(&["restore", "-q", "--file", "wip.json"]);

        let out = ws.ok(&["restore", "--replace", "--file", "edited.json"]);
        assert!(
            out.contains("only the difference: 17 analyses unchanged, 2 changed"),
            "{out}"
        );
        assert!(out.contains("deleted 6 analyses"), "{out}");
        let after = rows();
        let find = |all: &[String], id: &str| all.iter().find(|r| r.starts_with(id)).cloned();
        for row in &before {
            let id = row.split('|').next().unwrap();
            let now = find(&after, id);
            if gone["chunks"].as_array().unwrap().iter().any(|c| c["id"] == id) {
                assert_eq!(now, None, "{id} was deleted");
            } else if id == edited_chunk {
                let now = now.unwrap();
                assert_ne!(now.rsplit('|').next(), row.rsplit('|').next(), "{id} re-embedded");
            } else if moved.iter().any(|m| m == id) {
                let now = now.unwrap();
                assert_eq!(now.rsplit('|').next(), row.rsplit('|').next(), "{id} kept its vector");
            } else {
                assert_eq!(now.as_ref(), Some(row), "{id}: same row, same vector");
            }
        }
        // Every vector written row by row records the digest of its text (none is of unknown
        // provenance, none stale), and verify compares every record of the file with the
        // database's.
        let unknown = ws.rows(
            "SELECT CAST(count(*) AS TEXT) FROM chunks WHERE embedding_sha256 IS NULL",
            "SELECT count(*)::text FROM chunks WHERE embedding_sha256 IS NULL",
        );
        assert_eq!(unknown, vec!["0"]);
        let recorded = ws.rows(
            &format!("SELECT lower(hex(embedding_sha256)) FROM chunks WHERE id = '{edited_chunk}'"),
            &format!("SELECT encode(embedding_sha256, 'hex') FROM chunks WHERE id = '{edited_chunk}'"),
        );
        use sha2::Digest;
        let expected: String = sha2::Sha256::digest("A revised text for this chunk.")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(recorded, vec![expected]);
        ws.ok(&["verify", "--file", "edited.json"]);
        let by_difference = ws.fingerprint();

        // The same restore in bulk ends in the same database.
        ws.load(&sample());
        let out = ws.ok(&["restore", "--replace", "--bulk", "--file", "edited.json"]);
        assert!(out.contains("replaced 20 analyses"), "{out}");
        assert_eq!(ws.fingerprint(), by_difference);
    }
}

store_test! {
    /// A chunk moved to another analysis (the same id) by difference: taken out of its old
    /// analysis before it is added to the new one, whichever comes first in the file.
    fn a_chunk_moved_to_another_analysis_is_replaced_by_difference(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        for (from, to) in [(1, 0), (0, 1)] {
            let mut doc = json(&std::fs::read_to_string(sample()).unwrap());
            let analyses = doc["analyses"].as_array_mut().unwrap();
            let mut chunk = analyses[from]["chunks"].as_array_mut().unwrap().pop().unwrap();
            let to_chunks = analyses[to]["chunks"].as_array_mut().unwrap();
            chunk["chunk_index"] = to_chunks.len().into();
            to_chunks.push(chunk);
            let name = format!("moved-{from}-{to}.json");
            std::fs::write(ws.path(&name), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
            let out = ws.ok(&["restore", "--replace", "--file", &name]);
            assert!(out.contains("changed (1 chunks rewritten"), "{out}");
            ws.ok(&["verify", "--file", &name]);
            ws.load(&sample());
        }
    }
}
