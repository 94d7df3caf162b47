//! The `openai:` embedder against imitations of particular servers: infinity mounted at the root
//! and its FastAPI 422s, text-embeddings-inference, vLLM and Ollama error bodies. The reasons
//! they give are shown, the texts they echo are not, and a refusal for size is split.

use crate::common::embedding_server::{EmbeddingServer, Reply};
use crate::common::openai::{connect, connect_error, embed_error, refs, settings, texts};
use goldset::embed::EmbedderSettings;

fn paths(server: &EmbeddingServer) -> Vec<String> {
    server.seen().into_iter().map(|s| s.path).collect()
}

#[test]
fn a_bare_host_falls_back_to_infinitys_root_route_and_stays_there() {
    let server = EmbeddingServer::root_mounted(8, |_| Reply::Vectors);
    let embedder = connect(
        "m",
        &EmbedderSettings {
            openai_base_url: Some(server.origin()),
            ..settings(&server)
        },
    );
    assert_eq!(embedder.embed(&["x"]).unwrap()[0], server.vector("x"));
    assert_eq!(
        paths(&server),
        ["/v1/embeddings", "/embeddings", "/embeddings"],
        "one 404 on /v1, then the root route only"
    );

    // A full URL pasted as is goes there directly.
    let server = EmbeddingServer::root_mounted(8, |_| Reply::Vectors);
    let embedder = connect(
        "m",
        &EmbedderSettings {
            openai_base_url: Some(format!("{}/embeddings", server.origin())),
            ..settings(&server)
        },
    );
    embedder.embed(&["y"]).unwrap();
    assert_eq!(paths(&server), ["/embeddings", "/embeddings"]);

    // A bare host of a /v1 server never tries the root.
    let server = EmbeddingServer::healthy(8);
    let embedder = connect(
        "m",
        &EmbedderSettings {
            openai_base_url: Some(server.origin()),
            ..settings(&server)
        },
    );
    embedder.embed(&["z"]).unwrap();
    assert_eq!(paths(&server), ["/v1/embeddings", "/v1/embeddings"]);
}

#[test]
fn a_bare_host_where_neither_route_answers_names_both() {
    // Ollama answers 404 for a model it does not have, on the right route.
    let server = EmbeddingServer::start(8, |s| {
        Reply::ollama(
            404,
            &format!(
                "model \"{}\" not found, try pulling it first",
                s.body["model"].as_str().unwrap()
            ),
        )
    });
    let e = connect_error(
        "nomic-embed-text",
        &EmbedderSettings {
            openai_base_url: Some(server.origin()),
            ..settings(&server)
        },
    );
    let origin = server.origin();
    assert!(
        e.contains(&format!("{origin}/v1/embeddings answered 404"))
            && e.contains("model \"nomic-embed-text\" not found, try pulling it first")
            && e.contains(&format!("also tried {origin}/embeddings: 404")),
        "{e}"
    );
    assert_eq!(paths(&server), ["/v1/embeddings", "/embeddings"]);
}

#[test]
fn infinitys_422_for_too_many_texts_is_split_like_a_413() {
    let server = EmbeddingServer::root_mounted(8, |s| {
        if s.inputs.len() > 4 {
            Reply::infinity_too_many(&s.inputs, 4)
        } else {
            Reply::Vectors
        }
    });
    let embedder = connect(
        "m",
        &EmbedderSettings {
            openai_base_url: Some(format!("{}/embeddings", server.origin())),
            openai_batch_size: Some(16),
            openai_max_in_flight: Some(1),
            ..settings(&server)
        },
    );
    let all = texts(32);
    let vectors = embedder.embed(&refs(&all)).unwrap();
    for (text, vector) in all.iter().zip(&vectors) {
        assert_eq!(vector, &server.vector(text));
    }
    assert_eq!(embedder.preferred_batch_size(), 4);
}

#[test]
fn infinitys_422_for_a_text_too_long_shows_the_reason_not_the_text() {
    let long = format!("{} the end", "a very long chunk ".repeat(100));
    let server = EmbeddingServer::root_mounted(8, |s| {
        let too_long: Vec<String> = s.inputs.iter().filter(|t| t.len() > 100).cloned().collect();
        if too_long.is_empty() {
            Reply::Vectors
        } else {
            Reply::infinity_too_long(&too_long, 100)
        }
    });
    let embedder = connect(
        "m",
        &EmbedderSettings {
            openai_base_url: Some(format!("{}/embeddings", server.origin())),
            ..settings(&server)
        },
    );
    let e = embed_error(
        embedder.as_ref(),
        &["short one", &long, "short two", "short three"],
    );
    assert!(
        e.contains("rejected the request (422)")
            && e.contains("a single text is too large")
            && e.contains("input.0: String should have at most 100 characters"),
        "{e}"
    );
    assert!(!e.contains("a very long chunk"), "the input is echoed: {e}");
    // Probe; 4 texts; the half with the long text; its short text; the long text alone. The
    // other half was never needed.
    assert_eq!(server.count(), 5);
}

#[test]
fn text_embeddings_inference_errors_split_or_show_their_reason() {
    let server = EmbeddingServer::start(8, |s| {
        if s.inputs.iter().any(|t| t.contains("huge")) {
            Reply::tei(
                422,
                "Validation",
                "Input validation error: `inputs` must have less than 512 tokens. Given: 600",
            )
        } else if s.inputs.len() > 3 {
            Reply::tei(
                413,
                "Validation",
                &format!(
                    "batch size {} > maximum allowed batch size 3",
                    s.inputs.len()
                ),
            )
        } else {
            Reply::Vectors
        }
    });
    let embedder = connect(
        "m",
        &EmbedderSettings {
            openai_batch_size: Some(8),
            openai_max_in_flight: Some(1),
            ..settings(&server)
        },
    );
    let all = texts(12);
    let vectors = embedder.embed(&refs(&all)).unwrap();
    assert_eq!(vectors[11], server.vector(&all[11]));
    let e = embed_error(embedder.as_ref(), &["huge text"]);
    assert!(
        e.contains("(422)") && e.contains("must have less than 512 tokens. Given: 600"),
        "{e}"
    );
}

#[test]
fn vllm_and_ollama_error_bodies_show_their_message() {
    let server = EmbeddingServer::start(8, |s| match s.n {
        0 => Reply::Vectors,
        _ => Reply::vllm(
            400,
            "This model's maximum context length is 512 tokens. However, you requested 900 tokens.",
        ),
    });
    let embedder = connect("m", &settings(&server));
    let e = embed_error(embedder.as_ref(), &["a"]);
    assert!(
        e.contains("rejected the request (400): This model's maximum context length is 512 tokens"),
        "{e}"
    );
    assert_eq!(server.count(), 2, "a 400 is neither retried nor split");

    let server = EmbeddingServer::start(8, |_| {
        Reply::ollama(500, "llama runner process has terminated: exit status 2")
    });
    let e = connect_error(
        "m",
        &EmbedderSettings {
            openai_max_attempts: Some(2),
            ..settings(&server)
        },
    );
    assert!(
        e.contains("gave up after 2 attempts")
            && e.contains("500 Internal Server Error: llama runner process has terminated"),
        "{e}"
    );
}
