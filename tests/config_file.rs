//! The configuration file (`goldset.toml`, or `--config`/`GOLDSET_CONFIG`): it supplies the
//! global options that neither a flag nor the environment sets, and a wrong key is refused with
//! its line.

use crate::common::{sample, stderr, Workspace};
use serde_json::Value;

fn model_of(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["summary"]["model"].as_str().unwrap().to_owned()
}

#[test]
fn the_file_sets_what_flags_and_environment_leave_open() {
    let ws = Workspace::new();
    std::fs::write(
        ws.path("goldset.toml"),
        "# goldset defaults\ndatabase_url = \"sqlite:from_config.db\"\nembedder = \"hash:32\"\n",
    )
    .unwrap();
    let file = sample();
    let file = file.to_str().unwrap();
    let out = ws
        .command(&["--format", "json", "restore", "--file", file])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(model_of(&out), "goldset-hash-v1-32");
    assert!(ws.path("from_config.db").is_file());
    assert!(!ws.path("golden.db").exists());

    // The environment (DATABASE_URL of the workspace) and flags win over the file.
    let out = ws.run(&[
        "--embedder",
        "hash:16",
        "--format",
        "json",
        "restore",
        "--file",
        file,
    ]);
    assert_eq!(model_of(&out), "goldset-hash-v1-16");
    assert!(ws.path("golden.db").is_file());

    // --config names another file.
    std::fs::write(ws.path("other.toml"), "embedder = \"hash:8\"\n").unwrap();
    let out = ws.run(&[
        "--config",
        "other.toml",
        "--format",
        "json",
        "restore",
        "--replace",
        "--file",
        file,
    ]);
    assert_eq!(model_of(&out), "goldset-hash-v1-8");
}

#[test]
fn a_bad_configuration_is_refused_with_its_place() {
    let ws = Workspace::new();
    std::fs::write(
        ws.path("goldset.toml"),
        "schema = \"golden\"\ndatabse_url = \"sqlite:x.db\"\n",
    )
    .unwrap();
    let out = ws.run(&["status"]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("goldset.toml:2:1") && e.contains("databse_url"),
        "{e}"
    );

    let out = ws.run(&["--config", "missing.toml", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
}
