//! Stale embeddings and `verify` without a model: every stored embedding records the SHA-256 of
//! the text it was made from; `verify` names the chunks whose text changed since (and needs no
//! embedder for any of it), `reembed --stale` embeds exactly those again. A restore whose texts
//! are all in the embedding cache never contacts the `openai:` server.

use crate::common::{sample, stderr, stdout, Backend, Workspace};
use serde_json::Value;
use std::collections::BTreeMap;

/// `verify --format json` against `data/golden_dataset_backup.json` (or the file in `args`).
fn verify(ws: &Workspace, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["verify", "--format", "json"];
    all.extend_from_slice(args);
    let out = ws.run(&all);
    let report = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap(), report)
}

fn check<'v>(report: &'v Value, name: &str) -> &'v Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}

/// The sample restored with `embedder`, and backed up to the default file.
fn restored(backend: Backend, embedder: &str) -> Workspace {
    let ws = Workspace::on(backend);
    ws.ok(&[
        "--embedder",
        embedder,
        "restore",
        "-q",
        "--file",
        sample().to_str().unwrap(),
    ]);
    ws.ok(&["backup", "-q"]);
    ws
}

/// Every chunk's stored embedding (exact text of the stored bytes), by chunk id.
fn embeddings(ws: &Workspace) -> BTreeMap<String, String> {
    ws.embeddings()
        .into_iter()
        .map(|row| {
            let (id, rest) = row.split_once('|').unwrap();
            (id.to_owned(), rest.to_owned())
        })
        .collect()
}

/// The first `n` chunk ids of the sample, sorted.
fn chunk_ids(ws: &Workspace, n: usize) -> Vec<String> {
    let mut ids: Vec<String> = embeddings(ws).into_keys().collect();
    // Every third chunk, so that the edited ones are spread over several analyses.
    ids = ids.into_iter().step_by(3).take(n).collect();
    ids.sort();
    ids
}

fn edit(ws: &Workspace, ids: &[String]) {
    let list: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    ws.sql(&format!(
        "UPDATE chunks SET content = content || ' (edited by SQL)' WHERE id IN ({})",
        list.join(", ")
    ));
}

store_test! {
    /// A chunk whose text changed by SQL keeps its old vector: `verify` fails naming it (the first
    /// five, and the count), `reembed --stale` embeds exactly those again — every other stored
    /// embedding byte for byte as it was — and the new vectors are the ones a fresh restore of
    /// the edited text makes.
    fn text_changed_by_sql_is_stale_until_reembed_stale(backend) {
        let ws = restored(backend, "hash:64");
        let (code, r) = verify(&ws, &[]);
        assert_eq!(code, 0, "{r}");
        assert_eq!(check(&r, "db_stale_embeddings")["verdict"], "ok");

        let before = embeddings(&ws);
        let victims = chunk_ids(&ws, 7);
        edit(&ws, &victims);
        let (code, r) = verify(&ws, &[]);
        assert_eq!(code, 1, "{r}");
        let stale = check(&r, "db_stale_embeddings");
        assert_eq!(stale["verdict"], "fail", "{stale}");
        assert_eq!(stale["problems"], 7, "{stale}");
        let examples: Vec<&str> = stale["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert_eq!(examples.len(), 5);
        for (example, id) in examples.iter().zip(&victims) {
            assert!(example.contains(id.as_str()), "{example} should name {id}");
        }
        // The same in text, on a terminal or in a log.
        let text = stdout(&ws.run(&["verify"]));
        assert!(
            text.lines().any(|l| l.contains("db_stale_embeddings") && l.contains("7")),
            "{text}"
        );
        assert!(text.contains(victims[0].as_str()), "{text}");

        // --stale needs the model of the other embeddings.
        let wrong = ws.run(&["--embedder", "hash:32", "reembed", "--stale"]);
        assert_ne!(wrong.status.code(), Some(0));
        assert!(stderr(&wrong).contains("goldset-hash-v1-64"), "{}", stderr(&wrong));
        assert_eq!(embeddings(&ws), before, "a refused reembed changes nothing");

        let out = ws.ok(&["--embedder", "hash:64", "reembed", "--stale", "--format", "json"]);
        let summary: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(summary["summary"]["embedded"], 7, "{summary}");
        assert_eq!(summary["summary"]["up_to_date"], 79, "{summary}");
        let after = embeddings(&ws);
        for (id, stored) in &before {
            if victims.contains(id) {
                assert_ne!(&after[id], stored, "chunk {id} was embedded again");
            } else {
                assert_eq!(&after[id], stored, "chunk {id} was left alone");
            }
        }
        let (_, r) = verify(&ws, &[]);
        assert_eq!(check(&r, "db_stale_embeddings")["verdict"], "ok", "{r}");
        let again: Value = serde_json::from_str(&ws.ok(&[
            "--embedder", "hash:64", "reembed", "--stale", "--format", "json",
        ]))
        .unwrap();
        assert_eq!(again["summary"]["embedded"], 0, "{again}");

        // The vectors are those of the new text: a fresh restore of it gives the same bytes.
        ws.ok(&["backup", "-q", "--file", "edited.json"]);
        let (code, r) = verify(&ws, &["--file", "edited.json"]);
        assert_eq!(code, 0, "{r}");
        let fresh = Workspace::on(backend);
        fresh.ok(&[
            "--embedder",
            "hash:64",
            "restore",
            "-q",
            "--file",
            ws.path("edited.json").to_str().unwrap(),
        ]);
        assert_eq!(embeddings(&fresh), after);
    }
}

store_test! {
    /// `verify` loads no model and asks no server: without `--embedder` it checks that every
    /// chunk has an embedding of one model and dimension, whichever the restore used; with
    /// `--embedder X` it demands X.
    fn verify_needs_no_embedder_and_demands_one_when_given(backend) {
        let ws = restored(backend, "hash:64");
        let (code, r) = verify(&ws, &[]);
        assert_eq!(code, 0, "{r}");
        let note = check(&r, "db_embeddings")["note"].as_str().unwrap().to_owned();
        assert!(note.contains("86 chunks embedded by goldset-hash-v1-64 (64 dimensions)"), "{note}");
        let (code, r) = verify(&ws, &["--embedder", "hash:64"]);
        assert_eq!(code, 0, "{r}");

        let (code, r) = verify(&ws, &["--embedder", "hash"]);
        assert_eq!(code, 1, "{r}");
        let c = check(&r, "db_embeddings");
        assert_eq!(c["problems"], 86);
        assert!(
            c["examples"][0].as_str().unwrap().contains("expected \"goldset-hash-v1-384\""),
            "{c}"
        );
        // Demanding a model names it only: no server is asked, no model loaded.
        #[cfg(feature = "openai")]
        {
            let out = ws
                .command(&["--embedder", "openai:m", "verify", "--format", "json"])
                .env("OPENAI_BASE_URL", "http://goldset-no-server.invalid:9/v1")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            assert!(stdout(&out).contains("expected \\\"openai:m\\\""), "{}", stdout(&out));
        }
        #[cfg(feature = "local")]
        {
            let (code, r) = verify(&ws, &["--embedder", "local:acme/not-downloaded"]);
            assert_eq!(code, 1, "{r}");
            assert!(
                check(&r, "db_embeddings")["examples"][0]
                    .as_str()
                    .unwrap()
                    .contains("acme/not-downloaded"),
                "{r}"
            );
        }

        // Two models in one database fail without any demand.
        let one = chunk_ids(&ws, 1);
        ws.sql(&format!("UPDATE chunks SET embedding_model = 'another' WHERE id = '{}'", one[0]));
        let (code, r) = verify(&ws, &[]);
        assert_eq!(code, 1, "{r}");
        let c = check(&r, "db_embeddings");
        let all = c["examples"].to_string();
        assert!(all.contains(&one[0]) && all.contains("from 2 models"), "{c}");
    }
}

store_test! {
    /// Embeddings written before goldset recorded their text (a database of schema version 3)
    /// are of unknown provenance: a warning, not a failure, and not stale; `reembed` records it.
    fn embeddings_of_unknown_provenance_are_a_warning(backend) {
        let ws = restored(backend, "hash:64");
        // Back to schema version 3, as an older goldset left it.
        ws.sql(match backend {
            Backend::Sqlite => "ALTER TABLE chunks DROP COLUMN embedding_sha256; PRAGMA user_version = 3;",
            Backend::Postgres => {
                "ALTER TABLE chunks DROP COLUMN embedding_sha256;
                 DELETE FROM goldset_migrations WHERE version = 4;"
            }
        });
        let before = embeddings(&ws);
        let (code, r) = verify(&ws, &[]);
        assert_eq!(code, 0, "{r}");
        let c = check(&r, "db_stale_embeddings");
        assert_eq!(c["verdict"], "warning", "{c}");
        assert!(c["examples"][0].as_str().unwrap().contains("86 chunks of unknown provenance"), "{c}");
        let stale: Value = serde_json::from_str(&ws.ok(&[
            "--embedder", "hash:64", "reembed", "--stale", "--format", "json",
        ]))
        .unwrap();
        assert_eq!(stale["summary"]["embedded"], 0, "unknown is not stale: {stale}");
        let all: Value = serde_json::from_str(&ws.ok(&[
            "--embedder", "hash:64", "reembed", "--format", "json",
        ]))
        .unwrap();
        assert_eq!(all["summary"]["embedded"], 86, "{all}");
        // Same model, same text: the same vectors, now with their text recorded.
        assert_eq!(embeddings(&ws), before);
        let (code, r) = verify(&ws, &[]);
        assert_eq!(code, 0, "{r}");
        assert_eq!(check(&r, "db_stale_embeddings")["verdict"], "ok", "{r}");
    }
}

store_test! {
    /// Chunks added by an additive restore and rewritten by `--on-conflict update` record their
    /// text too; `restore --replace` makes stale chunks fresh.
    fn every_restore_records_the_text(backend) {
        let ws = restored(backend, "hash:64");
        let victims = chunk_ids(&ws, 2);
        edit(&ws, &victims);
        let (code, _) = verify(&ws, &[]);
        assert_eq!(code, 1);
        ws.ok(&["--embedder", "hash:64", "restore", "-q", "--on-conflict", "update",
                "--file", "data/golden_dataset_backup.json"]);
        let (code, r) = verify(&ws, &[]);
        assert_eq!(code, 0, "{r}");
        edit(&ws, &victims);
        ws.ok(&["--embedder", "hash:64", "restore", "-q", "--replace",
                "--file", "data/golden_dataset_backup.json"]);
        let (code, r) = verify(&ws, &[]);
        assert_eq!(code, 0, "{r}");
    }
}

/// The stale ids as a program sees them: `Store::stale_chunk_ids`, on both stores.
mod store_api {
    use super::*;
    use goldset::store::{open, OpenOptions};

    store_test! {
        fn stale_chunk_ids_names_exactly_the_stale_chunks(backend) {
            let ws = restored(backend, "hash:64");
            let options = OpenOptions {
                schema: ws.schema.clone(),
                ..OpenOptions::default()
            };
            let mut store = open(&ws.database_url, &options).unwrap();
            assert!(store.stale_chunk_ids().unwrap().is_empty());
            drop(store);
            let victims = chunk_ids(&ws, 7);
            edit(&ws, &victims);
            let mut store = open(&ws.database_url, &options).unwrap();
            assert_eq!(store.stale_chunk_ids().unwrap(), victims);
        }
    }
}

/// The `openai:` embedder meets its server only for a text the cache does not hold.
#[cfg(feature = "openai")]
mod lazy_embedder {
    use super::*;
    use crate::common::embedding_server::{EmbeddingServer, Reply};
    use crate::common::openai::goldset;

    /// A host that does not exist: the server is absent.
    const ABSENT: &str = "http://goldset-no-server.invalid:9/v1";

    fn restore_with(ws: &Workspace, base_url: &str, file: &str) -> std::process::Output {
        ws.command(&[
            "--embedder",
            "openai:test-model",
            "restore",
            "--replace",
            "--bulk",
            "--file",
            file,
        ])
        .env("OPENAI_BASE_URL", base_url)
        .output()
        .unwrap()
    }

    store_test! {
        fn a_cached_restore_never_contacts_the_server(backend) {
            let ws = Workspace::on(backend);
            let server = EmbeddingServer::healthy(16);
            let file = sample();
            let file = file.to_str().unwrap();
            let out = goldset(&ws, &server, "k", &["restore", "-q", "--file", file]);
            assert!(out.status.success(), "{}", stderr(&out));
            let asked = server.count();
            assert!(asked > 0);
            let first = embeddings(&ws);

            // Again, with the server still there: not one request.
            // (A bulk load: every chunk is written again, each vector from the cache.)
            let out = goldset(&ws, &server, "k", &["restore", "--replace", "--bulk", "--format", "json", "--file", file]);
            assert!(out.status.success(), "{}", stderr(&out));
            let summary: Value = serde_json::from_str(&stdout(&out)).unwrap();
            assert_eq!(summary["summary"]["from_cache"], 86, "{summary}");
            assert_eq!(server.count(), asked, "the cached restore asked the server");

            // And with no server at all: in bulk (every vector from the cache) and applying the
            // difference (nothing to embed; the dimension comes from the database).
            let out = restore_with(&ws, ABSENT, file);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert_eq!(embeddings(&ws), first);
            let out = ws
                .command(&["--embedder", "openai:test-model", "restore", "--replace", "--file", file])
                .env("OPENAI_BASE_URL", ABSENT)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert!(stdout(&out).contains("only the difference: 20 analyses unchanged"), "{}", stdout(&out));
            assert!(!stderr(&out).contains("error"), "{}", stderr(&out));
            assert_eq!(embeddings(&ws), first);
            // `verify` neither, with or without the model demanded.
            ws.ok(&["backup", "-q"]);
            let out = ws
                .command(&["--embedder", "openai:test-model", "verify"])
                .env("OPENAI_BASE_URL", ABSENT)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));

            // A text the cache lacks needs the server. One that refuses (not retried, unlike an
            // absent one, which is waited for two minutes): the restore fails with its reason
            // and changes nothing — and a cached restore never asked it.
            let refusing = EmbeddingServer::start(16, |_| Reply::error(401, "the server is stopped"));
            let out = restore_with(&ws, &refusing.base_url(), file);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert_eq!(refusing.count(), 0);
            let mut doc: Value =
                serde_json::from_str(&std::fs::read_to_string(sample()).unwrap()).unwrap();
            doc["analyses"][0]["chunks"][0]["content"] = "a text no cache holds".into();
            std::fs::write(ws.path("new.json"), doc.to_string()).unwrap();
            let out = restore_with(&ws, &refusing.base_url(), "new.json");
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            let e = stderr(&out);
            assert!(e.contains("the server is stopped"), "{e}");
            assert_eq!(refusing.count(), 1, "one probe, refused");
            assert_eq!(embeddings(&ws), first);
        }
    }
}
