//! goldset's integration tests, one binary (as ripgrep does): each file beside this one is a
//! module, so the test build links candle, tokenizers and postgres once, not once per file.
//!
//! Tests that need PostgreSQL (`…::in_postgres`) or the real model (`…::with_model`, and
//! `store_test!`s marked `#[needs_model]`) are `#[ignore]`d with the reason: plain `cargo test`
//! lists them as ignored instead of passing them untested. `scripts/test` provides both and runs
//! everything with `--include-ignored`; a test included without its service fails.
//!
//! A build without a feature (`--no-default-features`: SQLite and `hash` only) leaves out the
//! tests of what it lacks: PostgreSQL's, the `local:` model's, the `openai:` embedder's.

#[macro_use]
mod common;

mod adopt;
mod bad_input;
mod config_file;
mod conventions;
mod crash_safety;
mod embeddings;
mod eval;
mod format_bytes;
mod format_fuzz;
mod hardening;
#[cfg(feature = "local")]
mod local_embedder;
#[cfg(feature = "openai")]
mod openai_embedder;
#[cfg(feature = "openai")]
mod openai_retries;
#[cfg(feature = "openai")]
mod openai_servers;
#[cfg(feature = "postgres")]
mod postgres;
mod restore_modes;
mod round_trip;
mod round_trip_property;
mod snapshots;
mod stale;
mod stored_rows;
mod verify_database;
mod workflows;

/// CI's promise (`GOLDSET_TEST_REQUIRE_PG=1`, `GOLDSET_TEST_REQUIRE_MODEL=1`, both set by
/// `scripts/test`): a run that was told to test PostgreSQL or the model fails when it has no
/// server or no model, even if the tests that need them were left out by mistake.
#[test]
fn required_services_are_configured() {
    let required = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if required("GOLDSET_TEST_REQUIRE_PG") {
        assert!(
            set("GOLDSET_TEST_PG_URL"),
            "GOLDSET_TEST_REQUIRE_PG=1 but GOLDSET_TEST_PG_URL is not set: start scripts/pg-test-server"
        );
    }
    if required("GOLDSET_TEST_REQUIRE_MODEL") {
        assert!(
            set("GOLDSET_TEST_MODEL_DIR"),
            "GOLDSET_TEST_REQUIRE_MODEL=1 but GOLDSET_TEST_MODEL_DIR is not set: run scripts/test-model"
        );
    }
}

/// A build without a feature names it when asked for what it left out (exit 2, nothing done).
#[cfg(not(all(feature = "postgres", feature = "local", feature = "openai")))]
#[test]
fn what_a_build_left_out_is_refused_with_the_feature_to_rebuild_with() {
    use common::{stderr, Workspace};
    let ws = Workspace::new();
    let mut asked: Vec<(Vec<&str>, &str)> = Vec::new();
    if cfg!(not(feature = "postgres")) {
        asked.push((
            vec!["--database-url", "postgres://u:secret@h/db", "status"],
            "postgres",
        ));
    }
    if cfg!(not(feature = "local")) {
        asked.push((vec!["--embedder", "local:acme/m", "embed", "x"], "local"));
    }
    if cfg!(not(feature = "openai")) {
        asked.push((vec!["--embedder", "openai:m", "embed", "x"], "openai"));
    }
    for (args, feature) in asked {
        let out = ws.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let e = stderr(&out);
        assert!(
            e.contains(&format!("rebuild with --features {feature}")) && !e.contains("secret"),
            "{args:?}: {e}"
        );
    }
}
