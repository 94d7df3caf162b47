//! The `openai:` embedder as the tests drive it against an [`EmbeddingServer`]: the test key
//! (no message may contain it), settings with fast retries, errors checked to hold no key, and
//! the goldset binary run with the `openai:` settings in its environment.

use super::embedding_server::EmbeddingServer;
use super::Workspace;
use goldset::embed::{from_spec, ApiKey, Embedder, EmbedderSettings};
use std::process::{Command, Output};
use std::time::Duration;

/// A distinctive fake key: no message may contain it.
pub const KEY: &str = "sk-test-0123456789-SECRET-abcdef";

/// Settings for `server`: fast retries, a short timeout, the test key.
pub fn settings(server: &EmbeddingServer) -> EmbedderSettings {
    EmbedderSettings {
        openai_base_url: Some(server.base_url()),
        openai_api_key: Some(ApiKey::new(KEY)),
        openai_timeout: Some(Duration::from_secs(5)),
        openai_max_attempts: Some(4),
        openai_retry_base: Some(Duration::from_millis(5)),
        ..Default::default()
    }
}

/// The `openai:MODEL` embedder on `settings`; fails the test if it cannot connect.
pub fn connect(model: &str, settings: &EmbedderSettings) -> Box<dyn Embedder> {
    match from_spec(&format!("openai:{model}"), settings) {
        Ok(e) => e,
        Err(e) => panic!("openai:{model}: {e}"),
    }
}

/// The error of building the embedder, as shown to users; checked to hold no key.
pub fn connect_error(model: &str, settings: &EmbedderSettings) -> String {
    match from_spec(&format!("openai:{model}"), settings) {
        Ok(_) => panic!("openai:{model} connected"),
        Err(e) => no_key(e),
    }
}

/// The error of embedding `texts`, as shown to users; checked to hold no key.
pub fn embed_error(embedder: &dyn Embedder, texts: &[&str]) -> String {
    match embedder.embed(texts) {
        Ok(_) => panic!("embedding succeeded"),
        Err(e) => no_key(e),
    }
}

/// `e` as shown to users, after checking that neither it nor its `Debug` form holds the key.
pub fn no_key(e: impl std::error::Error) -> String {
    let shown = e.to_string();
    assert!(!shown.contains(KEY), "the key is in the message: {shown}");
    assert!(
        !format!("{e:?}").contains(KEY),
        "the key is in the Debug output"
    );
    shown
}

/// `n` distinct chunk-like texts.
pub fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("chunk {i} about topic {} and more words {}", i % 13, i * 7))
        .collect()
}

/// `texts` as the `&str`s `Embedder::embed` takes.
pub fn refs(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

/// Runs the goldset binary in `ws` with the `openai:` settings in the environment.
pub fn goldset(ws: &Workspace, server: &EmbeddingServer, key: &str, args: &[&str]) -> Output {
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

/// stdout of a goldset run that must have succeeded.
pub fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}
