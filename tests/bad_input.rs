//! Every kind of bad backup file is refused with a message that says what and where, a non-zero
//! exit, no panic, and a database left exactly as it was — even with `--replace`.

use crate::common::{sample, stderr, stdout, Workspace};
use serde_json::Value;

fn sample_text() -> String {
    std::fs::read_to_string(sample()).unwrap()
}

fn sample_doc() -> Value {
    serde_json::from_str(&sample_text()).unwrap()
}

fn pretty(doc: &Value) -> Vec<u8> {
    serde_json::to_string_pretty(doc).unwrap().into_bytes()
}

/// Edits the sample as a JSON value.
fn edited(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut doc = sample_doc();
    edit(&mut doc);
    pretty(&doc)
}

fn last_index(doc: &Value) -> usize {
    doc["analyses"].as_array().unwrap().len() - 1
}

/// (name, file content, text the error must contain).
pub(crate) fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let text = sample_text();
    let mut invalid_utf8 = text.clone().into_bytes();
    let at = text.find("\"content\": \"").unwrap() + 13;
    invalid_utf8[at] = 0xff;
    vec![
        ("empty file", Vec::new(), "unexpected end of file"),
        (
            "truncated file",
            text.as_bytes()[..text.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "not JSON",
            b"this is not a backup\n".to_vec(),
            "expected a JSON object",
        ),
        (
            "wrong top-level type",
            b"[1, 2, 3]\n".to_vec(),
            "expected a JSON object",
        ),
        (
            "invalid UTF-8",
            invalid_utf8,
            "analyses[0].findings[0].content: invalid unicode code point",
        ),
        (
            "NaN",
            text.replacen("\"confidence\": 0.", "\"confidence\": NaN, \"x\": 0.", 1)
                .into_bytes(),
            "analyses[0].findings[0].confidence",
        ),
        (
            "unknown version",
            text.replacen("\"version\": \"1.0\"", "\"version\": \"2.0\"", 1)
                .into_bytes(),
            "unsupported format version \"2.0\"",
        ),
        (
            "missing key",
            edited(|d| {
                d["analyses"][3].as_object_mut().unwrap().remove("url");
            }),
            "analyses[3]: missing field `url`",
        ),
        (
            "missing top-level analyses",
            edited(|d| {
                d.as_object_mut().unwrap().remove("analyses");
            }),
            "missing field `analyses`",
        ),
        (
            "wrong field type",
            edited(|d| d["analyses"][2]["chunks"][1]["chunk_index"] = "1".into()),
            "analyses[2].chunks[1].chunk_index: invalid type",
        ),
        (
            "unknown field",
            edited(|d| d["analyses"][4]["chunks"][0]["score"] = 1.into()),
            "unknown field `score`",
        ),
        (
            "duplicate chunk id within an analysis",
            edited(|d| {
                let first = d["analyses"][5]["chunks"][0]["id"].clone();
                d["analyses"][5]["chunks"][1]["id"] = first;
            }),
            "chunk id repeats",
        ),
        (
            "duplicate chunk id across analyses",
            edited(|d| {
                let first = d["analyses"][0]["chunks"][0]["id"].clone();
                d["analyses"][7]["chunks"][2]["id"] = first;
            }),
            "chunk id repeats",
        ),
        (
            "duplicate analysis id",
            edited(|d| {
                let first = d["analyses"][0]["id"].clone();
                d["analyses"][9]["id"] = first;
            }),
            "analysis id repeats",
        ),
        (
            "bad UUID",
            edited(|d| d["analyses"][6]["chunks"][0]["id"] = "not-a-uuid".into()),
            "\"not-a-uuid\" is not a UUID",
        ),
        (
            "bad timestamp",
            edited(|d| d["analyses"][8]["created_at"] = "2025-13-45T99:00:00Z".into()),
            "created_at: invalid timestamp",
        ),
        (
            "negative chunk_index",
            edited(|d| d["analyses"][1]["chunks"][0]["chunk_index"] = (-1).into()),
            "chunk_index -1 is outside",
        ),
        (
            "repeated chunk_index",
            edited(|d| d["analyses"][1]["chunks"][1]["chunk_index"] = 0.into()),
            "chunk_index 0 repeats",
        ),
        (
            "confidence out of range",
            edited(|d| d["analyses"][1]["findings"][0]["confidence"] = 1.5.into()),
            "confidence 1.5 is outside 0..1",
        ),
        (
            "NUL character",
            edited(|d| d["analyses"][2]["chunks"][0]["content"] = "a\u{0}b".into()),
            "contains a NUL character",
        ),
        (
            "placeholder URL",
            edited(|d| d["analyses"][3]["url"] = "https://example.com/doc".into()),
            "is a placeholder",
        ),
        (
            "metadata counts disagree",
            edited(|d| d["metadata"]["total_chunks"] = 999.into()),
            "metadata says",
        ),
        (
            "defect in the very last record",
            edited(|d| {
                let last = last_index(d);
                let n = d["analyses"][last]["chunks"].as_array().unwrap().len();
                d["analyses"][last]["chunks"][n - 1]["chunk_index"] = 42.into();
            }),
            "chunk_index 42 is outside",
        ),
    ]
}

store_test! {
    fn bad_files_are_refused_and_change_nothing(backend) {
        let ws = Workspace::on(backend);
        ws.load(&sample());
        ws.ok(&[
            "restore",
            "-q",
            "--on-conflict",
            "skip",
            "--file",
            crate::common::python_fixture("python_tiny_backup.json")
                .to_str()
                .unwrap(),
        ]);
        let before = ws.fingerprint();
        for (name, content, expected) in cases() {
            let file = ws.path("bad.json");
            std::fs::write(&file, &content).unwrap();
            for args in [
                vec!["restore", "--replace", "--file", "bad.json"],
                vec!["restore", "--file", "bad.json", "--on-conflict", "update"],
            ] {
                let out = ws.run(&args);
                let err = stderr(&out);
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{name}: {args:?} should exit 1\n{err}"
                );
                assert!(
                    err.contains(expected),
                    "{name}: expected {expected:?} in:\n{err}"
                );
                assert!(
                    err.contains("bad.json"),
                    "{name}: the message names the file:\n{err}"
                );
                assert!(!err.contains("panicked"), "{name}: panic\n{err}");
                assert!(err.contains("nothing was changed"), "{name}:\n{err}");
            }
            assert_eq!(ws.fingerprint(), before, "{name}: the database changed");

            let out = ws.run(&["verify", "--file-only", "--file", "bad.json"]);
            assert_eq!(out.status.code(), Some(1), "{name}: verify should exit 1");
            assert!(
                crate::common::stdout(&out).contains(expected),
                "{name}: verify report:\n{}",
                crate::common::stdout(&out)
            );
        }
    }
}

store_test! {
    fn errors_name_line_and_column_and_record(backend) {
        let ws = Workspace::on(backend);
        let doc = sample_doc();
        let id = doc["analyses"][4]["chunks"][2]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let text = sample_text().replacen(
            &format!("\"id\": \"{id}\""),
            &format!("\"id\": \"{id}x\""),
            1,
        );
        let line = text
            .lines()
            .position(|l| l.contains(&format!("{id}x")))
            .unwrap();
        std::fs::write(ws.path("bad.json"), text).unwrap();
        let out = ws.run(&["restore", "--file", "bad.json"]);
        let err = stderr(&out);
        let analysis = doc["analyses"][4]["id"].as_str().unwrap();
        // The analysis's own line is reported, with its id and the bad chunk id.
        assert!(err.contains(&format!("analysis {analysis}")), "{err}");
        assert!(err.contains(&format!("\"{id}x\" is not a UUID")), "{err}");
        assert!(err.contains("bad.json:"), "{err}");
        let reported: usize = err
            .split("bad.json:")
            .nth(1)
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            reported <= line + 1 && reported + 60 > line,
            "line {reported} vs {line}"
        );
    }
}

store_test! {
    fn metadata_file_must_agree(backend) {
        let ws = Workspace::on(backend);
        std::fs::copy(sample(), ws.path("s_backup.json")).unwrap();
        std::fs::write(
            ws.path("s_metadata.json"),
            r#"{"total_analyses": 1, "total_chunks": 2, "total_artifacts": 3}"#,
        )
        .unwrap();
        // verify reports the disagreement; restore (issue 14: a kill between the two renames of
        // a backup leaves a stale metadata file beside a good backup) warns and goes on.
        let out = ws.run(&["verify", "--file-only", "--file", "s_backup.json"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stdout(&out).contains("s_metadata.json: says 1 analyses"),
            "{}",
            stdout(&out)
        );
        let out = ws.run(&["restore", "--file", "s_backup.json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("warning: ") && stderr(&out).contains("s_metadata.json: says 1 analyses"),
            "{}",
            stderr(&out)
        );
    }
}

store_test! {
    fn usage_and_io_errors_exit_2(backend) {
        let ws = Workspace::on(backend);
        let out = ws.run(&["restore", "--file", "missing.json"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("missing.json"), "{}", stderr(&out));
        let out = ws.run(&["verify", "--file-only", "--file", "missing.json"]);
        assert_eq!(out.status.code(), Some(2));
        let out = ws.run(&["restore", "--on-conflict", "sometimes"]);
        assert_eq!(out.status.code(), Some(2));
        let out = ws.run(&[
            "--embedder",
            "word2vec",
            "restore",
            "--file",
            sample().to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("invalid embedder spec"),
            "{}",
            stderr(&out)
        );
    }
}
