//! Native snapshots: `dump` → `load` is an exact replica (same JSON backup, bit-identical
//! embeddings) on both stores; manifests are checked; a bad snapshot changes nothing.

use crate::common::{sample, stderr, without_created_at, Backend, Workspace};

/// The server's own client tools (the test server's), if known.
fn tools() -> Vec<String> {
    match std::env::var("GOLDSET_PG_BIN") {
        Ok(dir) if !dir.is_empty() => vec!["--pg-bin".into(), dir],
        _ => Vec::new(),
    }
}

fn with_tools<'a>(args: &[&'a str], tools: &'a [String]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(tools.iter().map(String::as_str));
    all
}

fn backup_text(ws: &Workspace) -> String {
    ws.ok(&[
        "backup",
        "-q",
        "--status",
        "all",
        "--allow-empty",
        "--file",
        "replica.json",
    ]);
    without_created_at(&std::fs::read_to_string(ws.path("replica.json")).unwrap())
}

store_test! {
    fn dump_then_load_is_an_exact_replica(backend) {
        let tools = tools();
        let source = Workspace::on(backend);
        source.load(&sample());
        let snapshot = source.path("golden.snapshot");
        let snapshot = snapshot.to_str().unwrap();
        source.ok(&with_tools(&["dump", "-q", "--file", snapshot], &tools));
        source.ok(&with_tools(&["verify", "--snapshot", snapshot], &tools));

        let before = (backup_text(&source), source.embeddings());
        assert_eq!(before.1.len(), 86);
        let replica = match backend {
            Backend::Sqlite => Workspace::on(backend),
            // A PostgreSQL archive restores into the schema it came from: move the source away
            // and load into a fresh schema of the same name.
            Backend::Postgres => {
                source.sql(&format!("DROP SCHEMA {} CASCADE", source.schema));
                source
            }
        };
        replica.ok(&with_tools(&["load", "-q", "--file", snapshot], &tools));
        assert_eq!(backup_text(&replica), before.0, "the same JSON backup");
        assert_eq!(replica.embeddings(), before.1, "bit-identical embeddings");
    }
}

store_test! {
    fn a_snapshot_that_does_not_match_its_manifest_is_refused_and_changes_nothing(backend) {
        let tools = tools();
        let ws = Workspace::on(backend);
        ws.load(&sample());
        ws.ok(&with_tools(&["dump", "-q", "--file", "s.snapshot"], &tools));
        let before = ws.fingerprint();

        let mut bytes = std::fs::read(ws.path("s.snapshot")).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(ws.path("s.snapshot"), &bytes).unwrap();
        let out = ws.run(&with_tools(&["verify", "--snapshot", "s.snapshot"], &tools));
        assert_eq!(out.status.code(), Some(1));
        assert!(
            crate::common::stdout(&out).contains("snapshot_checksum"),
            "{}",
            crate::common::stdout(&out)
        );
        let out = ws.run(&with_tools(
            &["load", "--replace", "--file", "s.snapshot"],
            &tools,
        ));
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("does not match its manifest"),
            "{}",
            stderr(&out)
        );
        assert_eq!(ws.fingerprint(), before);

        // Damaged but with a manifest that agrees (as if damaged before the checksum): the
        // database's own checks refuse it, and a failed load changes nothing.
        let manifest_path = ws.path("s.snapshot.manifest.json");
        let mut manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
        let truncated = &bytes[..bytes.len() * 2 / 3];
        std::fs::write(ws.path("s.snapshot"), truncated).unwrap();
        manifest["bytes"] = truncated.len().into();
        manifest["sha256"] = sha256_hex(truncated).into();
        std::fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();
        let out = ws.run(&with_tools(
            &["load", "--replace", "--file", "s.snapshot"],
            &tools,
        ));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"));
        assert_eq!(ws.fingerprint(), before, "a failed load changes nothing");
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

store_test! {
    fn load_refuses_to_overwrite_data_without_replace_and_names_a_model_change(backend) {
        let tools = tools();
        let ws = Workspace::on(backend);
        ws.load(&sample());
        ws.ok(&with_tools(&["dump", "-q", "--file", "s.snapshot"], &tools));
        let out = ws.run(&with_tools(&["load", "--file", "s.snapshot"], &tools));
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("pass --replace"), "{}", stderr(&out));
        let out = ws.run(&with_tools(
            &[
                "--embedder",
                "hash:32",
                "load",
                "--replace",
                "--file",
                "s.snapshot",
            ],
            &tools,
        ));
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("configured for goldset-hash-v1-32"),
            "{}",
            stderr(&out)
        );
    }
}

pg_test! {
    /// Client tools older than the server are refused before they run. The older `pg_dump` is a
    /// stand-in that reports version 16 (all goldset asks of it before refusing), so the test
    /// runs on every machine, with or without an older PostgreSQL client installed.
    fn postgres_tools_older_than_the_server_are_refused() {
        let ws = Workspace::on(Backend::Postgres);
        ws.load(&sample());
        let old = ws.path("old-pg-bin");
        std::fs::create_dir(&old).unwrap();
        for tool in ["pg_dump", "pg_restore"] {
            let path = old.join(tool);
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho '{tool} (PostgreSQL) 16.4'\n"),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let out = ws.run(&["dump", "--file", "s.snapshot", "--pg-bin", old.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("older than the PostgreSQL"),
            "{}",
            stderr(&out)
        );
        assert!(!ws.path("s.snapshot").exists());
    }
}
