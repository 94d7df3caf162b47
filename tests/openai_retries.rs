//! The `openai:` embedder's retries against a real HTTP server started by the tests: timeouts,
//! 429 and 503 with `Retry-After`, 5xx, dropped connections, an unreachable or restarting
//! server, the retry window, and a failed request stopping the others' waits. Backoffs are
//! milliseconds; what is asserted is counted (requests, waits the server saw), and the few
//! bounds on elapsed time are far above any machine's slowness, set only to tell a wait that
//! was cut short from one that was not.

use crate::common::embedding_server::{EmbeddingServer, Reply};
use crate::common::openai::{connect, embed_error, no_key, settings, KEY};
use goldset::embed::{from_spec, ApiKey, EmbedderSettings};
use std::time::{Duration, Instant};

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

/// Settings whose retries are bounded by a short window of short backoffs, not by a count.
fn windowed(server_url: String, window: Duration) -> EmbedderSettings {
    EmbedderSettings {
        openai_base_url: Some(server_url),
        openai_api_key: Some(ApiKey::new(KEY)),
        openai_timeout: Some(Duration::from_secs(5)),
        openai_retry_base: Some(Duration::from_millis(2)),
        openai_retry_max_delay: Some(Duration::from_millis(10)),
        openai_retry_window: Some(window),
        ..Default::default()
    }
}

#[test]
fn a_server_restarting_mid_run_is_waited_for() {
    // Refused or unanswered for 12 requests (dropped connections, then 503 while the model
    // loads), then back: the request rides it out within the window.
    let server = EmbeddingServer::start(8, |s| match s.n {
        0 => Reply::Vectors,
        1..=6 => Reply::Drop,
        7..=12 => Reply::error(503, "model is loading"),
        _ => Reply::Vectors,
    });
    let embedder = connect("m", &windowed(server.base_url(), Duration::from_secs(20)));
    assert_eq!(embedder.embed(&["r"]).unwrap()[0], server.vector("r"));
    assert_eq!(server.count(), 14);
}

#[test]
fn a_server_coming_back_on_its_port_is_reached() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    // The server comes back 300 ms after the client starts: the client's first attempts are
    // refused. The window (time waited between attempts) is far longer than any delay in
    // starting the server on a loaded machine.
    let (starting, started) = std::sync::mpsc::channel();
    let restart = std::thread::spawn(move || {
        started.recv().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        EmbeddingServer::start_on(addr, 8, |_| Reply::Vectors)
    });
    starting.send(()).unwrap();
    let embedder = connect(
        "m",
        &windowed(format!("http://{addr}/v1"), Duration::from_secs(120)),
    );
    let server = restart.join().unwrap();
    assert_eq!(
        server.count(),
        1,
        "the probe reached the server that came back"
    );
    assert_eq!(embedder.embed(&["back"]).unwrap()[0], server.vector("back"));
}

#[test]
fn the_retry_window_bounds_the_wait() {
    let server = EmbeddingServer::start(8, |s| match s.n {
        0 => Reply::Vectors,
        _ => Reply::error(503, "down for good"),
    });
    let window = Duration::from_millis(200);
    let embedder = connect("m", &windowed(server.base_url(), window));
    let started = Instant::now();
    let e = embed_error(embedder.as_ref(), &["r"]);
    let took = started.elapsed();
    // The window counts the time waited, not the requests' own time: at least the window went
    // by. The upper bound only tells this window from the default one (2 minutes).
    assert!(took >= window && took < Duration::from_secs(60), "{took:?}");
    assert!(
        e.contains("gave up after") && e.contains("down for good"),
        "{e}"
    );
    // Waits of at most 20 ms (10 ms and jitter) fill the 200 ms window: over 10 retries,
    // however slow the machine.
    assert!(server.count() > 10, "{} requests", server.count());
}

#[test]
fn a_failure_stops_the_other_requests_waiting_to_retry() {
    let server = EmbeddingServer::start(8, |s| {
        if s.inputs.iter().any(|t| t == "fatal") {
            Reply::vllm(400, "unsupported input")
        } else if s.inputs.iter().any(|t| t == "slow") {
            Reply::Status {
                status: 503,
                headers: vec![("Retry-After".into(), "60".into())],
                body: String::new(),
            }
        } else {
            Reply::Vectors
        }
    });
    let embedder = connect(
        "m",
        &EmbedderSettings {
            openai_batch_size: Some(1),
            openai_max_in_flight: Some(2),
            ..settings(&server)
        },
    );
    let started = Instant::now();
    let e = embed_error(embedder.as_ref(), &["slow", "fatal"]);
    assert!(e.contains("(400): unsupported input"), "{e}");
    // Not stopped, the call would wait the full minute of Retry-After: half of it tells the
    // two apart on any machine.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited {:?} for a Retry-After of a call that had already failed",
        started.elapsed()
    );
}
