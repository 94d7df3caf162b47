//! The `openai:` embedder against a real HTTP server started by the tests (loopback only),
//! serving real vectors (computed with `HashEmbedder`) and, on script, every failure mode a
//! remote embedding service has: slow answers, 429 with Retry-After, 5xx, dropped connections,
//! malformed bodies, wrong counts and dimensions, refused keys, unknown models.
//!
//! Over 600 lines on purpose: one short, self-contained scenario per failure mode of one client,
//! sharing the helpers at the top; split by failure mode they would only scatter those helpers.

use crate::common::embedding_server::{self, EmbeddingServer, Reply};
use crate::common::{sample, Workspace};
use goldset::embed::{from_spec, ApiKey, Embedder, EmbedderSettings};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A distinctive fake key: no message may contain it.
const KEY: &str = "sk-test-0123456789-SECRET-abcdef";

/// Settings for `server`: fast retries, a short timeout, the test key.
fn settings(server: &EmbeddingServer) -> EmbedderSettings {
    EmbedderSettings {
        openai_base_url: Some(server.base_url()),
        openai_api_key: Some(ApiKey::new(KEY)),
        openai_timeout: Some(Duration::from_secs(5)),
        openai_max_attempts: Some(4),
        openai_retry_base: Some(Duration::from_millis(5)),
        ..Default::default()
    }
}

fn connect(model: &str, settings: &EmbedderSettings) -> Box<dyn Embedder> {
    match from_spec(&format!("openai:{model}"), settings) {
        Ok(e) => e,
        Err(e) => panic!("openai:{model}: {e}"),
    }
}

/// The error of building the embedder, as shown to users; checked to hold no key.
fn connect_error(model: &str, settings: &EmbedderSettings) -> String {
    match from_spec(&format!("openai:{model}"), settings) {
        Ok(_) => panic!("openai:{model} connected"),
        Err(e) => no_key(e),
    }
}

/// The error of embedding `texts`, as shown to users; checked to hold no key.
fn embed_error(embedder: &dyn Embedder, texts: &[&str]) -> String {
    match embedder.embed(texts) {
        Ok(_) => panic!("embedding succeeded"),
        Err(e) => no_key(e),
    }
}

fn no_key(e: impl std::error::Error) -> String {
    let shown = e.to_string();
    assert!(!shown.contains(KEY), "the key is in the message: {shown}");
    assert!(
        !format!("{e:?}").contains(KEY),
        "the key is in the Debug output"
    );
    shown
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("chunk {i} about topic {} and more words {}", i % 13, i * 7))
        .collect()
}

fn refs(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

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
fn slow_answers_within_the_timeout_succeed() {
    let server = EmbeddingServer::start(8, |s| {
        if s.n == 0 {
            Reply::Vectors
        } else {
            Reply::VectorsAfter(Duration::from_millis(400))
        }
    });
    // A timeout far above the answer's 400 ms: only a real timeout bug can make this fail.
    let embedder = connect(
        "m",
        &EmbedderSettings {
            openai_timeout: Some(Duration::from_secs(60)),
            ..settings(&server)
        },
    );
    assert_eq!(embedder.embed(&["slow"]).unwrap()[0], server.vector("slow"));
    assert_eq!(server.count(), 2, "no retry");
}

#[test]
fn answers_slower_than_the_timeout_are_retried_then_reported() {
    // The first answer never comes (the server holds it): it is retried and the second attempt
    // succeeds. The timeout is 1 s, so that the immediate answers beat it on a loaded machine.
    let server = EmbeddingServer::start(8, |s| match s.n {
        1 => Reply::Hang,
        _ => Reply::Vectors,
    });
    let short = |server: &EmbeddingServer| EmbedderSettings {
        openai_timeout: Some(Duration::from_secs(1)),
        openai_max_attempts: Some(3),
        ..settings(server)
    };
    let embedder = connect("m", &short(&server));
    assert_eq!(embedder.embed(&["a"]).unwrap()[0], server.vector("a"));
    assert_eq!(server.count(), 3);

    // …a server that never answers is given up on, with a clear reason, long before the minute
    // the server would hold the connection.
    let server = EmbeddingServer::start(8, |s| match s.n {
        0 => Reply::Vectors,
        _ => Reply::Hang,
    });
    let embedder = connect("m", &short(&server));
    let started = Instant::now();
    let e = embed_error(embedder.as_ref(), &["a"]);
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "{:?}",
        started.elapsed()
    );
    assert!(e.contains("gave up after 3 attempts"), "{e}");
    assert!(
        e.contains("within 1 s") && e.contains("--embed-timeout"),
        "{e}"
    );
    assert_eq!(server.count(), 4);
}

#[test]
fn rate_limits_wait_as_long_as_retry_after_says() {
    let server = EmbeddingServer::start(8, |s| match s.n {
        1 => Reply::Status {
            status: 429,
            headers: vec![("Retry-After".into(), "1".into())],
            body: r#"{"error":{"message":"Rate limit reached"}}"#.into(),
        },
        2 => Reply::Status {
            status: 503,
            headers: vec![("retry-after-ms".into(), "300".into())],
            body: String::new(),
        },
        _ => Reply::Vectors,
    });
    let embedder = connect("m", &settings(&server));
    assert_eq!(embedder.embed(&["r"]).unwrap()[0], server.vector("r"));
    assert_eq!(server.count(), 4);
    // The waits, as the server saw them between the requests: at least what it asked for, and
    // nowhere near the 60 s cap (the upper bound is generous: it catches a misread unit, not a
    // slow machine).
    let seen = server.seen();
    let after_429 = seen[2].at - seen[1].at;
    let after_503 = seen[3].at - seen[2].at;
    assert!(
        after_429 >= Duration::from_secs(1),
        "waited {after_429:?} for Retry-After: 1"
    );
    assert!(
        after_503 >= Duration::from_millis(300),
        "waited {after_503:?} for retry-after-ms: 300"
    );
    assert!(
        after_429 + after_503 < Duration::from_secs(20),
        "waited {:?} for Retry-After 1 s + 300 ms",
        after_429 + after_503
    );
}

#[test]
fn server_errors_and_dropped_connections_are_retried() {
    let server = EmbeddingServer::start(8, |s| match s.n {
        1 => Reply::Drop,
        2 => Reply::error(500, "boom"),
        3 => Reply::error(502, "bad gateway"),
        _ => Reply::Vectors,
    });
    let embedder = connect(
        "m",
        &EmbedderSettings {
            openai_max_attempts: Some(6),
            ..settings(&server)
        },
    );
    assert_eq!(embedder.embed(&["e"]).unwrap()[0], server.vector("e"));
    assert_eq!(server.count(), 5);
}

#[test]
fn server_errors_forever_exhaust_the_retry_budget() {
    let server = EmbeddingServer::start(8, |s| match s.n {
        0 => Reply::Vectors,
        _ => Reply::error(500, "the model crashed"),
    });
    let embedder = connect("m", &settings(&server));
    let e = embed_error(embedder.as_ref(), &["e"]);
    assert!(e.contains("gave up after 4 attempts"), "{e}");
    assert!(e.contains("500") && e.contains("the model crashed"), "{e}");
    assert_eq!(server.count(), 5);
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
fn an_unreachable_server_is_retried_then_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let e = match from_spec(
        "openai:m",
        &EmbedderSettings {
            openai_base_url: Some(format!("http://{addr}/v1")),
            openai_api_key: Some(ApiKey::new(KEY)),
            openai_max_attempts: Some(2),
            openai_retry_base: Some(Duration::from_millis(5)),
            ..Default::default()
        },
    ) {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => no_key(e),
    };
    assert!(
        e.contains(&addr.to_string()) && e.contains("gave up after 2 attempts"),
        "{e}"
    );
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

/// Runs the goldset binary in `ws` with the `openai:` settings in the environment.
fn goldset(ws: &Workspace, server: &EmbeddingServer, key: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_goldset"));
    command
        .args(args)
        .current_dir(ws.dir.path())
        .env("DATABASE_URL", &ws.database_url)
        .env("GOLDSET_SCHEMA", &ws.schema)
        .env("GOLDSET_EMBEDDER", "openai:test-model")
        .env("OPENAI_BASE_URL", server.base_url())
        .env("OPENAI_API_KEY", key)
        .env_remove("GOLDSET_LOG");
    for variable in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env_remove(variable);
    }
    command.output().expect("goldset runs")
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
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
