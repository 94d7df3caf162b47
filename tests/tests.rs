//! goldset's integration tests, one binary (as ripgrep does): each file beside this one is a
//! module, so the test build links candle, tokenizers and postgres once, not once per file.
//!
//! Tests that need PostgreSQL (`…::in_postgres`) or the real model (`…::with_model`, and
//! `store_test!`s marked `#[needs_model]`) are `#[ignore]`d with the reason: plain `cargo test`
//! lists them as ignored instead of passing them untested. `scripts/test` provides both and runs
//! everything with `--include-ignored`; a test included without its service fails.

#[macro_use]
mod common;

mod adopt;
mod bad_input;
mod config_file;
mod crash_safety;
mod embeddings;
mod format_bytes;
mod format_fuzz;
mod hardening;
mod local_embedder;
mod openai_embedder;
mod openai_retries;
mod openai_servers;
mod postgres;
mod restore_modes;
mod round_trip;
mod round_trip_property;
mod snapshots;
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
