//! The `openai:` embedder against a real HTTP server started by the tests (loopback only),
//! serving real vectors (computed with `HashEmbedder`): concurrency, model names, base URLs,
//! answers it refuses (malformed, wrong counts, dimensions or model names), refused keys,
//! unknown models, bad and too large requests, redirects, and the CLI through it. Retries are
//! in `openai_retries.rs`, the error bodies and routes of particular servers in
//! `openai_servers.rs`.

use crate::common::embedding_server::{self, EmbeddingServer, Reply};
use crate::common::openai::{
    connect, connect_error, embed_error, goldset, refs, settings, succeeded, texts, KEY,
};
use crate::common::{sample, Workspace};
use goldset::embed::{from_spec, EmbedderSettings};
use std::process::Command;
use std::time::Duration;

/// The requests after the dimension probe (always request 0).
fn after_probe(server: &EmbeddingServer) -> Vec<embedding_server::Seen> {
    server.seen().into_iter().filter(|s| s.n > 0).collect()
}

#[test]
fn returns_the_servers_vectors_in_order_over_bounded_concurrent_requests() {
    // Answers are held until two requests are in flight: the client's concurrency is observed,
    // not hoped for.
    let server = EmbeddingServer::start_overlapping(48, 2, |_| Reply::Vectors);
    let embedder = connect(
        "test-model",
        &EmbedderSettings {
            openai_batch_size: Some(7),
            openai_max_in_flight: Some(3),
            ..settings(&server)
        },
    );
    assert_eq!(embedder.model_id(), "openai:test-model");
    assert_eq!(embedder.dimension(), 48);
    assert_eq!(embedder.preferred_batch_size(), 21);
    assert!(embedder.worth_caching());

    let all = texts(200);
    let vectors = embedder.embed(&refs(&all)).unwrap();
    assert_eq!(vectors.len(), all.len());
    for (text, vector) in all.iter().zip(&vectors) {
        assert_eq!(vector, &server.vector(text), "{text}");
    }
    assert!(embedder.embed(&[]).unwrap().is_empty());

    // Two callers at once still share the three slots.
    std::thread::scope(|s| {
        for half in all.chunks(100) {
            let embedder = &embedder;
            let server = &server;
            s.spawn(move || {
                let v = embedder.embed(&refs(half)).unwrap();
                assert_eq!(v[99], server.vector(&half[99]));
            });
        }
    });

    let seen = after_probe(&server);
    assert!(seen.iter().all(|s| s.inputs.len() <= 7));
    assert_eq!(seen.iter().map(|s| s.inputs.len()).sum::<usize>(), 400);
    for s in server.seen() {
        assert_eq!(s.authorization.as_deref(), Some(&*format!("Bearer {KEY}")));
        assert_eq!(s.body["model"], "test-model");
        assert_eq!(s.body["encoding_format"], "float");
    }
    let most = server.max_in_flight();
    assert!((2..=3).contains(&most), "{most} requests in flight at most");
}

#[test]
fn model_names_keep_colons_and_slashes_and_no_key_means_no_header() {
    let server = EmbeddingServer::healthy(8);
    for model in ["nomic-embed-text:latest", "BAAI/bge-small-en-v1.5"] {
        let embedder = connect(
            model,
            &EmbedderSettings {
                openai_api_key: None,
                ..settings(&server)
            },
        );
        assert_eq!(embedder.model_id(), format!("openai:{model}"));
        assert_eq!(embedder.embed(&["x y"]).unwrap()[0], server.vector("x y"));
        let last = server.seen().pop().unwrap();
        assert_eq!(last.body["model"], model);
        assert_eq!(last.authorization, None);
    }
    let e = match from_spec("openai:", &settings(&server)) {
        Ok(_) => panic!("openai: without a model"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("openai:MODEL"), "{e}");
}

#[test]
fn base_urls_are_accepted_as_users_paste_them() {
    let server = EmbeddingServer::healthy(8);
    for base in [
        server.origin(),
        format!("{}/", server.origin()),
        format!("{}/", server.base_url()),
        format!("{}/embeddings", server.base_url()),
    ] {
        let embedder = connect(
            "m",
            &EmbedderSettings {
                openai_base_url: Some(base.clone()),
                ..settings(&server)
            },
        );
        assert_eq!(embedder.dimension(), 8, "{base}");
    }
    assert!(server.seen().iter().all(|s| s.path == "/v1/embeddings"));

    let wrong = format!("{}/v2", server.origin());
    let e = connect_error(
        "m",
        &EmbedderSettings {
            openai_base_url: Some(wrong.clone()),
            ..settings(&server)
        },
    );
    assert!(
        e.contains("404") && e.contains(&format!("{wrong}/embeddings")),
        "{e}"
    );

    let e = connect_error(
        "m",
        &EmbedderSettings {
            openai_base_url: Some("localhost:11434".into()),
            ..settings(&server)
        },
    );
    assert!(e.contains("http://"), "{e}");
}

#[test]
fn malformed_answers_fail_at_once_naming_what_is_wrong() {
    for (body, expected) in [
        ("<html>upstream hiccup</html>", "not JSON"),
        (r#"{"object":"list"}"#, "missing field `data`"),
        (r#"{"data":[{"index":0}]}"#, "missing field `embedding`"),
        (
            r#"{"data":[{"index":0,"embedding":"AAAAAA=="}]}"#,
            "data[0].embedding",
        ),
        (
            r#"{"data":[{"index":3,"embedding":[0,0,0,1]}]}"#,
            "data[0].index is 3",
        ),
        (
            r#"{"data":[{"index":0,"embedding":[0,0,1e39,1]}]}"#,
            "data[0].embedding[2]",
        ),
    ] {
        let server = EmbeddingServer::start(4, move |s| match s.n {
            0 => Reply::Vectors,
            _ => Reply::body(body),
        });
        let embedder = connect("m", &settings(&server));
        let e = embed_error(embedder.as_ref(), &["one"]);
        assert!(
            e.contains("malformed answer") && e.contains(expected),
            "{body}: {e}"
        );
        assert_eq!(server.count(), 2, "{body}: not retried");
    }
}

#[test]
fn a_wrong_number_of_vectors_is_an_error() {
    let server = EmbeddingServer::start(8, |s| match s.n {
        0 => Reply::Vectors,
        _ => Reply::FirstVectors(s.inputs.len() - 1),
    });
    let embedder = connect("m", &settings(&server));
    let e = embed_error(embedder.as_ref(), &["a", "b", "c", "d", "e"]);
    assert!(e.contains("returned 4 vectors for 5 texts"), "{e}");
}

#[test]
fn a_dimension_that_changes_is_an_error() {
    let server = EmbeddingServer::start(32, |s| match s.n {
        0 | 1 => Reply::Vectors,
        _ => Reply::Dimension(16),
    });
    let embedder = connect("m", &settings(&server));
    assert_eq!(embedder.embed(&["a"]).unwrap()[0].len(), 32);
    let e = embed_error(embedder.as_ref(), &["b"]);
    assert!(e.contains("16 dimensions where 32 were expected"), "{e}");
}

#[test]
fn an_answer_for_another_model_is_refused_naming_both() {
    // A one-model server answering any name with its own (as TEI does).
    let server = EmbeddingServer::start(8, |_| Reply::Renamed("all-MiniLM-L6-v2".into()));
    let e = connect_error("nope", &settings(&server));
    assert!(
        e.contains("\"all-MiniLM-L6-v2\"") && e.contains("\"nope\"") && e.contains("no vectors"),
        "{e}"
    );
    assert_eq!(server.count(), 1, "not retried");

    // The same after the probe: the batch's vectors are not returned.
    let server = EmbeddingServer::start(8, |s| match s.n {
        0 => Reply::Vectors,
        _ => Reply::Renamed("other".into()),
    });
    let embedder = connect("m", &settings(&server));
    let e = embed_error(embedder.as_ref(), &["a", "b"]);
    assert!(e.contains("\"other\"") && e.contains("\"m\""), "{e}");

    // Names that mean the same model, an answer without a name, and allowed aliases pass.
    for (asked, reply) in [
        (
            "bge-small-en-v1.5",
            Reply::Renamed("BAAI/bge-small-en-v1.5".into()),
        ),
        (
            "nomic-embed-text",
            Reply::Renamed("nomic-embed-text:latest".into()),
        ),
        ("m", Reply::Unnamed),
    ] {
        let server = EmbeddingServer::start(8, move |_| reply.clone());
        let embedder = connect(asked, &settings(&server));
        assert_eq!(embedder.embed(&["q"]).unwrap()[0], server.vector("q"));
        assert_eq!(embedder.model_id(), format!("openai:{asked}"));
    }
    let server = EmbeddingServer::start(8, |_| Reply::Renamed("text-embedding-ada-002-v2".into()));
    let embedder = connect(
        "text-embedding-ada-002",
        &EmbedderSettings {
            openai_allow_model_alias: true,
            ..settings(&server)
        },
    );
    assert_eq!(embedder.embed(&["q"]).unwrap()[0], server.vector("q"));
    assert_eq!(embedder.model_id(), "openai:text-embedding-ada-002");
}

#[test]
fn a_refused_key_is_reported_without_showing_it() {
    for status in [401, 403] {
        // A careless server echoing the key: goldset still must not print it.
        let server = EmbeddingServer::start(8, move |s| {
            Reply::error(
                status,
                &format!("Incorrect API key provided: {:?}", s.authorization),
            )
        });
        let e = connect_error("m", &settings(&server));
        assert!(e.contains("refused the API key"), "{e}");
        assert!(
            e.contains("OPENAI_API_KEY") && e.contains("--openai-api-key"),
            "{e}"
        );
        assert!(e.contains(&status.to_string()), "{e}");
        assert_eq!(server.count(), 1, "not retried");
    }
    let server = EmbeddingServer::start(8, |_| Reply::error(401, "You didn't provide an API key"));
    let e = connect_error(
        "m",
        &EmbedderSettings {
            openai_api_key: None,
            ..settings(&server)
        },
    );
    assert!(e.contains("without an API key"), "{e}");
}

#[test]
fn an_unknown_model_names_model_and_url() {
    let server = EmbeddingServer::start(8, |s| {
        Reply::error(
            404,
            &format!(
                "model \"{}\" not found, try pulling it first",
                s.body["model"].as_str().unwrap()
            ),
        )
    });
    let e = connect_error("no-such-model", &settings(&server));
    assert!(e.contains("404") && e.contains("\"no-such-model\""), "{e}");
    assert!(
        e.contains(&format!("{}/embeddings", server.base_url())),
        "{e}"
    );
    assert!(e.contains("try pulling it first"), "{e}");
    assert_eq!(server.count(), 1);
}

#[test]
fn a_bad_request_shows_the_servers_message_shortened() {
    let long = format!(
        "This model's maximum context length is 8192 tokens. {}",
        "x".repeat(5000)
    );
    let server = EmbeddingServer::start(8, move |s| match s.n {
        0 => Reply::Vectors,
        _ => Reply::error(400, &long),
    });
    let embedder = connect("m", &settings(&server));
    let e = embed_error(embedder.as_ref(), &["long"]);
    assert!(e.contains("rejected the request (400)"), "{e}");
    assert!(
        e.contains("maximum context length is 8192 tokens") && e.ends_with('…'),
        "{e}"
    );
    assert!(e.len() < 1000, "{} characters", e.len());
    assert_eq!(server.count(), 2);
}

#[test]
fn requests_refused_as_too_large_are_halved() {
    let server = EmbeddingServer::start(8, |s| {
        if s.inputs.len() > 5 {
            Reply::error(413, "batch size too large")
        } else {
            Reply::Vectors
        }
    });
    let embedder = connect(
        "m",
        &EmbedderSettings {
            openai_batch_size: Some(16),
            openai_max_in_flight: Some(2),
            ..settings(&server)
        },
    );
    let all = texts(40);
    let vectors = embedder.embed(&refs(&all)).unwrap();
    for (text, vector) in all.iter().zip(&vectors) {
        assert_eq!(vector, &server.vector(text));
    }
    assert_eq!(
        embedder.preferred_batch_size(),
        8,
        "4 texts × 2 in flight from now on"
    );
    let before = server.count();
    embedder.embed(&refs(&all)).unwrap();
    assert_eq!(server.count() - before, 10, "no more 413s");
}

#[test]
fn redirects_are_not_followed() {
    let server = EmbeddingServer::start(8, |_| Reply::Status {
        status: 307,
        headers: vec![(
            "Location".into(),
            "https://elsewhere.example/v1/embeddings".into(),
        )],
        body: String::new(),
    });
    let e = connect_error("m", &settings(&server));
    assert!(
        e.contains("redirects (307) to https://elsewhere.example"),
        "{e}"
    );
    assert_eq!(server.count(), 1);
}

#[test]
fn cli_restore_and_embed_through_an_openai_compatible_server() {
    let server =
        EmbeddingServer::start_with_pause(32, Duration::from_millis(2), |_| Reply::Vectors);
    let ws = Workspace::new();
    let sample = sample();
    let out = goldset(
        &ws,
        &server,
        KEY,
        &[
            "restore",
            "-q",
            "--embed-batch-size",
            "10",
            "--file",
            sample.to_str().unwrap(),
        ],
    );
    succeeded(&out);

    // Every chunk holds the server's vector for its text, with the model id.
    let rows = ws.rows(
        "SELECT content, hex(embedding), embedding_model FROM chunks",
        "SELECT 1",
    );
    assert_eq!(rows.len(), 86);
    for row in rows {
        let mut parts = row.rsplitn(3, '|');
        let (model, hex, content) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert_eq!(model, "openai:test-model");
        let expected: String = server
            .vector(content)
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(hex, expected, "{content}");
    }
    let seen = server.seen();
    assert!(seen.iter().skip(1).all(|s| s.inputs.len() <= 10));
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_deref() == Some(&*format!("Bearer {KEY}"))));

    let out = goldset(
        &ws,
        &server,
        KEY,
        &["embed", "--embedder", "openai:test-model", "hello"],
    );
    let printed: Vec<f32> = serde_json::from_str(succeeded(&out).trim()).unwrap();
    assert_eq!(printed, server.vector("hello"));

    // --openai-base-url wins over the environment.
    let other = EmbeddingServer::healthy(32);
    let out = goldset(
        &ws,
        &server,
        KEY,
        &["embed", "--openai-base-url", &other.origin(), "world"],
    );
    succeeded(&out);
    assert_eq!(other.count(), 2);
}

#[test]
fn cli_refused_key_fails_before_restoring_and_does_not_print_the_key() {
    let server = EmbeddingServer::start(8, |_| Reply::error(401, "Incorrect API key"));
    let ws = Workspace::new();
    let sample = sample();
    let out = goldset(
        &ws,
        &server,
        KEY,
        &["restore", "--file", sample.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused the API key") && stderr.contains("OPENAI_API_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains(KEY) && !String::from_utf8_lossy(&out.stdout).contains(KEY));
    let help = Command::new(env!("CARGO_BIN_EXE_goldset"))
        .arg("--help")
        .env("OPENAI_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&help.stdout).contains(KEY),
        "--help shows the key"
    );
}

#[test]
fn cli_a_wrong_model_name_fails_before_anything_is_stored() {
    let server = EmbeddingServer::start(8, |_| Reply::Renamed("served-model".into()));
    let ws = Workspace::new();
    let out = goldset(
        &ws,
        &server,
        KEY,
        &["embed", "--embedder", "openai:nope", "hello"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no vector printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"served-model\"") && stderr.contains("\"nope\""),
        "{stderr}"
    );
}
