//! goldset in place on an application's own tables: the three layouts of
//! `tests/fixtures/app-schemas/` (the seed application on SQLite and on PostgreSQL, another
//! application on PostgreSQL with findings in a table, naive times, its own status words and a
//! table that references chunks `ON DELETE CASCADE`). For each: `adopt` finds the mapping, a
//! dataset round-trips byte for byte, additive restores and every `--on-conflict` policy work,
//! `verify` and `diff db:` see an edit made by SQL, and bad input changes nothing.
//!
//! (Over 600 lines: every test here shares the `App` harness of the three layouts; split by
//! concern it would be three files importing one another's helpers.)

use crate::common::{pg_url, sample, stderr, stdout, without_created_at};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An application's layout, as its ORM creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
enum Layout {
    SeedSqlite,
    SeedPostgres,
    OtherPostgres,
}

impl Layout {
    fn schema_file(self) -> PathBuf {
        let name = match self {
            Layout::SeedSqlite => "seed_app.sqlite.sql",
            Layout::SeedPostgres => "seed_app.postgres.sql",
            Layout::OtherPostgres => "other_app.postgres.sql",
        };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/app-schemas")
            .join(name)
    }

    /// The embedder whose dimension the layout's vector column holds.
    fn embedder(self) -> &'static str {
        match self {
            Layout::SeedPostgres => "hash:1024",
            _ => "hash:384",
        }
    }

    /// The application's tables, each with the columns that identify a row.
    fn tables(self) -> &'static [&'static str] {
        match self {
            Layout::SeedSqlite | Layout::SeedPostgres => &["analyses", "chunks", "artifacts"],
            Layout::OtherPostgres => &[
                "app.documents",
                "app.document_findings",
                "app.passages",
                "app.summaries",
                "app.retrieval_judgements",
            ],
        }
    }

    fn chunks_table(self) -> &'static str {
        match self {
            Layout::OtherPostgres => "app.passages",
            _ => "chunks",
        }
    }

    fn chunk_text_column(self) -> &'static str {
        match self {
            Layout::OtherPostgres => "body",
            _ => "content",
        }
    }

    fn chunk_id_column(self) -> &'static str {
        match self {
            Layout::OtherPostgres => "passage_id",
            _ => "id",
        }
    }
}

/// An application database of `layout` (a file, or a PostgreSQL database of its own), and a
/// folder for goldset.toml and backups.
struct App {
    dir: tempfile::TempDir,
    layout: Layout,
    url: String,
    /// PostgreSQL: the server's URL and the database's name, to drop it afterwards.
    postgres: Option<(String, String)>,
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.postgres {
            if let Ok(mut c) = postgres::Client::connect(admin, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

impl App {
    fn new(layout: Layout) -> App {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        let schema = std::fs::read_to_string(layout.schema_file()).unwrap();
        if layout == Layout::SeedSqlite {
            let path = dir.path().join("app.db");
            rusqlite::Connection::open(&path)
                .unwrap()
                .execute_batch(&schema)
                .unwrap();
            return App {
                url: format!("sqlite:{}", path.display()),
                dir,
                layout,
                postgres: None,
            };
        }
        let admin = pg_url();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("goldset_app_{}_{n}", std::process::id());
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let (base, _) = admin.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        postgres::Client::connect(&url, postgres::NoTls)
            .unwrap()
            .batch_execute(&schema)
            .unwrap();
        App {
            dir,
            layout,
            url,
            postgres: Some((admin, name)),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `goldset ARGS` in the app's folder (its goldset.toml) against its database.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_goldset"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("DATABASE_URL", &self.url)
            .env("GOLDSET_EMBEDDER", self.layout.embedder())
            .env("RUST_BACKTRACE", "1")
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("GOLDSET_SCHEMA")
            .env_remove("GOLDSET_CONFIG")
            .env_remove("GOLDSET_LOG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        assert!(
            !stderr(&out).contains("panicked"),
            "{args:?}: {}",
            stderr(&out)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "goldset {args:?} failed ({:?}):\n{}{}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// Runs SQL against the application's database.
    fn sql(&self, statements: &str) {
        match self.layout {
            Layout::SeedSqlite => rusqlite::Connection::open(self.path("app.db"))
                .unwrap()
                .execute_batch(statements)
                .unwrap(),
            _ => postgres::Client::connect(&self.url, postgres::NoTls)
                .unwrap()
                .batch_execute(statements)
                .unwrap(),
        }
    }

    /// One text per row of `query`: its columns joined with `|` (SQLite values as they are
    /// stored, with their type).
    fn column(&self, query: &str) -> Vec<String> {
        match self.layout {
            Layout::SeedSqlite => {
                let c = rusqlite::Connection::open(self.path("app.db")).unwrap();
                let mut stmt = c.prepare(query).unwrap();
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| {
                        let values: Vec<String> = (0..n)
                            .map(|i| match r.get::<_, rusqlite::types::Value>(i).unwrap() {
                                rusqlite::types::Value::Text(t) => t,
                                other => format!("{other:?}"),
                            })
                            .collect();
                        Ok(values.join("|"))
                    })
                    .unwrap();
                rows.map(|r| r.unwrap()).collect()
            }
            _ => postgres::Client::connect(&self.url, postgres::NoTls)
                .unwrap()
                .query(query, &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
                .collect(),
        }
    }

    /// Every row of every table of the application (the golden dataset's and the others), as
    /// text: equal fingerprints, untouched database.
    fn fingerprint(&self) -> String {
        let mut all = String::new();
        for table in self.layout.tables() {
            let query = match self.layout {
                Layout::SeedSqlite => format!("SELECT * FROM {table}"),
                _ => format!("SELECT t::text FROM {table} t"),
            };
            let mut rows = self.column(&query);
            rows.sort();
            all += &format!("{table}: {rows:?}\n");
        }
        all
    }

    /// The smallest chunk id, as text.
    fn first_chunk_id(&self) -> String {
        let (table, id) = (self.layout.chunks_table(), self.layout.chunk_id_column());
        let cast = if self.layout == Layout::SeedSqlite {
            ""
        } else {
            "::text"
        };
        self.column(&format!("SELECT min({id}{cast}) FROM {table}"))[0].clone()
    }
}

/// The sample's backup as goldset's own schema writes it (without its created_at line).
fn own_backup() -> String {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_goldset"))
            .args(args)
            .current_dir(dir.path())
            .env("DATABASE_URL", "sqlite:own.db")
            .env("GOLDSET_EMBEDDER", "hash:384")
            .env_remove("GOLDSET_CONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    run(&["restore", "-q", "--file", sample().to_str().unwrap()]);
    run(&["backup", "-q", "--file", "own.json"]);
    without_created_at(&std::fs::read_to_string(dir.path().join("own.json")).unwrap())
}

/// An adopted app holding the sample.
fn adopted(layout: Layout) -> App {
    let app = App::new(layout);
    app.ok(&["adopt", "--write", "-q"]);
    app.ok(&[
        "restore",
        "-q",
        "--replace",
        "--file",
        sample().to_str().unwrap(),
    ]);
    app
}

fn backup_text(app: &App, name: &str) -> String {
    app.ok(&["backup", "-q", "--status", "all", "--file", name]);
    without_created_at(&std::fs::read_to_string(app.path(name)).unwrap())
}

/// `layout_test! { fn name(layout) { … } }`: one test per layout, PostgreSQL ones ignored unless
/// included (see tests.rs).
macro_rules! layout_test {
    ($(#[doc = $doc:literal])* fn $name:ident($layout:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            use super::*;

            fn run($layout: Layout) $body

            #[test]
            fn seed_sqlite() {
                run(Layout::SeedSqlite)
            }

            #[test]
            #[cfg(feature = "postgres")]
            #[ignore = "needs PostgreSQL: scripts/test, or GOLDSET_TEST_PG_URL=… cargo test -- --include-ignored"]
            fn seed_postgres() {
                run(Layout::SeedPostgres)
            }

            #[test]
            #[cfg(feature = "postgres")]
            #[ignore = "needs PostgreSQL: scripts/test, or GOLDSET_TEST_PG_URL=… cargo test -- --include-ignored"]
            fn other_postgres() {
                run(Layout::OtherPostgres)
            }
        }
    };
}

layout_test! {
    /// `adopt` finds the mapping with no hand edits (the seed layout by name), writes it to
    /// goldset.toml, and refuses to overwrite it without --force.
    fn adopt_finds_the_mapping(layout) {
        let app = App::new(layout);
        let proposed = app.run(&["adopt"]);
        assert_eq!(proposed.status.code(), Some(0), "{}", stderr(&proposed));
        let toml = stdout(&proposed);
        assert_eq!(
            toml.contains("recognised the seed application"),
            layout != Layout::OtherPostgres,
            "{toml}"
        );
        if layout == Layout::OtherPostgres {
            for expected in [
                "table = \"app.document_findings\"",
                "completed = \"done\"",
                "timestamps = \"timestamp\"",
                "app.retrieval_judgements references app.passages (ON DELETE CASCADE)",
            ] {
                assert!(toml.contains(expected), "{expected:?} missing:\n{toml}");
            }
        }
        app.ok(&["adopt", "--write", "-q"]);
        let written = std::fs::read_to_string(app.path("goldset.toml")).unwrap();
        assert!(written.contains("[mapping.chunks]"), "{written}");
        let again = app.run(&["adopt", "--write"]);
        assert_eq!(again.status.code(), Some(2));
        assert!(stderr(&again).contains("already has a [mapping]"), "{}", stderr(&again));
        app.ok(&["adopt", "--write", "--force", "-q"]);
        // Reading commands work on the mapped, empty tables.
        assert!(app.ok(&["status"]).contains("holds 0 analyses"));
    }
}

layout_test! {
    /// The same dataset gives the same backup bytes from the application's tables as from
    /// goldset's own schema; restoring that backup with --replace changes nothing and reads
    /// every analysis as unchanged.
    fn round_trip_is_byte_identical(layout) {
        let app = adopted(layout);
        let first = backup_text(&app, "first.json");
        assert_eq!(first, own_backup());
        let before = app.fingerprint();
        let out = app.ok(&["restore", "--replace", "--file", "first.json"]);
        assert!(out.contains("20 analyses unchanged, 0 changed"), "{out}");
        assert_eq!(app.fingerprint(), before, "an unchanged --replace rewrote rows");
        assert_eq!(backup_text(&app, "second.json"), first);
        app.ok(&["verify", "--file", "first.json"]);
    }
}

layout_test! {
    /// Additive restores and each --on-conflict policy on mapped tables.
    fn additive_restore_and_conflicts(layout) {
        let app = App::new(layout);
        app.ok(&["adopt", "--write", "-q"]);
        let file = sample();
        let file = file.to_str().unwrap();
        app.ok(&["restore", "-q", "--file", file]);
        let before = app.fingerprint();
        let conflict = app.run(&["restore", "--file", file]);
        assert_eq!(conflict.status.code(), Some(1), "{}", stderr(&conflict));
        assert!(stderr(&conflict).contains("already exist"), "{}", stderr(&conflict));
        assert_eq!(app.fingerprint(), before);
        let skipped = app.ok(&["restore", "--on-conflict", "skip", "--file", file]);
        assert!(skipped.contains("skipped 20 existing analyses"), "{skipped}");
        assert_eq!(app.fingerprint(), before);
        let updated = app.ok(&["restore", "--on-conflict", "update", "--file", file]);
        assert!(updated.contains("updated 20 existing analyses"), "{updated}");
        assert_eq!(backup_text(&app, "after.json"), own_backup());
    }
}

layout_test! {
    /// `verify` passes, then catches a chunk edited by SQL; `diff db:` and `backup --check` show
    /// the edit; `restore --replace` rewrites just that chunk.
    fn an_edit_by_sql_is_seen_and_repaired(layout) {
        let app = adopted(layout);
        app.ok(&["backup", "-q", "--file", "golden.json"]);
        app.ok(&["verify", "--file", "golden.json"]);
        let (table, text, id) = (
            layout.chunks_table(),
            layout.chunk_text_column(),
            layout.chunk_id_column(),
        );
        let victim = app.first_chunk_id();
        app.sql(&format!(
            "UPDATE {table} SET {text} = {text} || ' (edited by the app)' WHERE {id} = '{victim}'"
        ));
        let verify = app.run(&["verify", "--file", "golden.json"]);
        assert_eq!(verify.status.code(), Some(1), "{}", stdout(&verify));
        assert!(stdout(&verify).contains("db_content"), "{}", stdout(&verify));
        let diff = app.run(&["diff", "golden.json", "db:"]);
        assert_eq!(diff.status.code(), Some(1));
        assert!(stdout(&diff).contains("(edited by the app)"), "{}", stdout(&diff));
        let check = app.run(&["backup", "--check", "--file", "golden.json"]);
        assert_eq!(check.status.code(), Some(1));
        let repaired = app.ok(&["restore", "--replace", "--file", "golden.json"]);
        assert!(repaired.contains("19 analyses unchanged, 1 changed (1 chunks rewritten"), "{repaired}");
        app.ok(&["verify", "--file", "golden.json"]);
    }
}

layout_test! {
    /// Every kind of broken file, restored with --replace into mapped tables, changes nothing.
    fn bad_input_changes_nothing(layout) {
        let app = adopted(layout);
        let before = app.fingerprint();
        for (name, bytes, _) in crate::bad_input::cases() {
            let path = app.path("bad.json");
            std::fs::write(&path, bytes).unwrap();
            let out = app.run(&["restore", "--replace", "--file", path.to_str().unwrap()]);
            assert_ne!(out.status.code(), Some(0), "{name}: accepted");
            assert_eq!(app.fingerprint(), before, "{name}: the tables changed");
        }
    }
}

pg_test! {
    /// A role with nothing but SELECT on the mapped tables backs up, verifies, diffs and shows
    /// the status; its restore fails with a permission error and changes nothing.
    fn a_read_only_role_backs_up() {
        let app = adopted(Layout::SeedPostgres);
        let role = format!("reader_{}", std::process::id());
        app.sql(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN;
             GRANT SELECT ON analyses, chunks, artifacts TO {role};
             GRANT USAGE ON SCHEMA goldset TO {role};
             GRANT SELECT ON ALL TABLES IN SCHEMA goldset TO {role};"
        ));
        let (server, database) = app.url.rsplit_once('/').unwrap();
        let (_, host) = server.split_once('@').unwrap();
        let reader = format!("postgres://{role}@{host}/{database}");
        let as_reader = |args: &[&str]| {
            let mut all = vec!["--database-url", reader.as_str()];
            all.extend_from_slice(args);
            app.run(&all)
        };
        for args in [
            &["backup", "--file", "ro.json"][..],
            &["verify", "--file", "ro.json"][..],
            &["diff", "ro.json", "db:"][..],
            &["backup", "--check", "--file", "ro.json"][..],
            &["status"][..],
        ] {
            let out = as_reader(args);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        }
        assert_eq!(
            without_created_at(&std::fs::read_to_string(app.path("ro.json")).unwrap()),
            own_backup()
        );
        // A file with one changed chunk: the restore has something to write.
        let mut doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(app.path("ro.json")).unwrap()).unwrap();
        doc["analyses"][0]["chunks"][0]["content"] = "a new text".into();
        std::fs::write(app.path("edited.json"), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        let before = app.fingerprint();
        let refused = as_reader(&["restore", "--replace", "--file", "edited.json"]);
        assert_eq!(refused.status.code(), Some(2));
        assert!(stderr(&refused).contains("permission denied"), "{}", stderr(&refused));
        assert_eq!(app.fingerprint(), before);
        app.sql(&format!(
            "REVOKE ALL ON analyses, chunks, artifacts FROM {role};
             REVOKE ALL ON ALL TABLES IN SCHEMA goldset FROM {role};
             REVOKE USAGE ON SCHEMA goldset FROM {role}; DROP ROLE {role};"
        ));
    }
}

pg_test! {
    /// Rows of the application's own table that reference chunks survive an edit of those
    /// chunks (updated in place); a --replace that would delete referenced chunks is refused,
    /// naming the table and rows, and goes ahead with --allow-cascade.
    fn replace_refuses_to_cascade() {
        let app = adopted(Layout::OtherPostgres);
        app.ok(&["backup", "-q", "--file", "golden.json"]);
        let text = std::fs::read_to_string(app.path("golden.json")).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let first = doc["analyses"][0]["id"].as_str().unwrap().to_owned();
        app.sql(&format!(
            "INSERT INTO app.retrieval_judgements (passage_id, query, relevant)
             SELECT passage_id, 'q', true FROM app.passages WHERE doc_id = '{first}'"
        ));
        let judged = app.column("SELECT count(*)::text FROM app.retrieval_judgements");
        assert_ne!(judged, vec!["0"]);
        let write = |name: &str, doc: &serde_json::Value| {
            std::fs::write(app.path(name), serde_json::to_string_pretty(doc).unwrap()).unwrap();
        };
        // Edited texts: the judged rows are updated in place, their judgements stay.
        let mut edited = doc.clone();
        for chunk in edited["analyses"][0]["chunks"].as_array_mut().unwrap() {
            chunk["content"] = format!("{} (revised)", chunk["content"].as_str().unwrap()).into();
        }
        write("edited.json", &edited);
        app.ok(&["restore", "--replace", "--file", "edited.json"]);
        assert_eq!(app.column("SELECT count(*)::text FROM app.retrieval_judgements"), judged);
        // Reordered passages are renumbered in place (no delete, so nothing cascades) and
        // keep their vectors.
        let mut reordered = edited.clone();
        let chunks = reordered["analyses"][0]["chunks"].as_array_mut().unwrap();
        assert!(chunks.len() >= 3, "the first analysis has several chunks");
        chunks.rotate_left(1);
        for (i, chunk) in chunks.iter_mut().enumerate() {
            chunk["chunk_index"] = i.into();
        }
        write("reordered.json", &reordered);
        let vectors = "SELECT string_agg(passage_id::text || vec::text, ',' ORDER BY passage_id) FROM app.passages";
        let before_vectors = app.column(vectors);
        let out = app.ok(&["restore", "--replace", "--file", "reordered.json"]);
        assert!(out.contains("19 analyses unchanged, 1 changed"), "{out}");
        assert!(out.contains("; 0 chunks embedded by"), "no text changed, nothing is embedded: {out}");
        assert_eq!(app.column("SELECT count(*)::text FROM app.retrieval_judgements"), judged);
        assert_eq!(app.column(vectors), before_vectors);
        app.ok(&["verify", "--file", "reordered.json"]);
        // Without the first analysis: deleting its passages would cascade.
        let mut without = doc.clone();
        let gone = without["analyses"].as_array_mut().unwrap().remove(0);
        let metadata = &mut without["metadata"];
        let less = |v: &serde_json::Value, n: usize| (v.as_u64().unwrap() - n as u64).into();
        metadata["total_analyses"] = less(&metadata["total_analyses"], 1);
        metadata["total_chunks"] = less(&metadata["total_chunks"], gone["chunks"].as_array().unwrap().len());
        metadata["total_artifacts"] = less(&metadata["total_artifacts"], usize::from(!gone["artifact"].is_null()));
        write("without.json", &without);
        let before = app.fingerprint();
        for args in [
            &["restore", "--replace", "--file", "without.json"][..],
            &["restore", "--replace", "--dry-run", "--file", "without.json"][..],
        ] {
            let refused = app.run(args);
            assert_eq!(refused.status.code(), Some(2), "{args:?}");
            let err = stderr(&refused);
            assert!(
                err.contains(&format!(
                    "{} rows of app.retrieval_judgements reference (ON DELETE CASCADE",
                    judged[0]
                )),
                "{err}"
            );
            assert_eq!(app.fingerprint(), before);
        }
        app.ok(&["restore", "--replace", "--allow-cascade", "--file", "without.json"]);
        assert_eq!(
            app.column("SELECT count(*)::text FROM app.retrieval_judgements"),
            vec!["0"]
        );
    }
}

pg_test! {
    /// An embedder whose dimension the vector(N) column cannot hold is refused before anything
    /// changes, naming the column and both dimensions; goldset never retypes it.
    fn another_dimension_is_refused() {
        let app = adopted(Layout::SeedPostgres);
        let before = app.fingerprint();
        let out = app.run(&[
            "restore",
            "--replace",
            "--embedder",
            "hash:384",
            "--file",
            sample().to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains("chunks.embedding is vector(1024)"), "{err}");
        assert!(err.contains("384 dimensions"), "{err}");
        assert_eq!(app.fingerprint(), before);
        assert_eq!(
            app.column("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'"),
            vec!["vector(1024)"]
        );
    }
}

pg_test! {
    /// --replace of a file that differs in one chunk rewrites that chunk's row alone: every
    /// other row keeps its physical place (ctid), so no index entry churns.
    fn replace_rewrites_only_what_changed() {
        let app = adopted(Layout::OtherPostgres);
        app.ok(&["backup", "-q", "--file", "golden.json"]);
        let places = || app.column("SELECT passage_id::text || ' ' || ctid::text FROM app.passages ORDER BY 1");
        let before = places();
        let mut doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(app.path("golden.json")).unwrap()).unwrap();
        let edited = doc["analyses"][0]["chunks"][0]["id"].as_str().unwrap().to_owned();
        doc["analyses"][0]["chunks"][0]["content"] = "a new text".into();
        std::fs::write(app.path("edited.json"), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        std::fs::copy(app.path("golden_metadata.json"), app.path("edited_metadata.json")).unwrap();
        let out = app.ok(&["restore", "--replace", "--file", "edited.json"]);
        assert!(out.contains("1 chunks embedded"), "{out}");
        let after = places();
        let moved: Vec<_> = before.iter().filter(|p| !after.contains(p)).collect();
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert!(moved[0].starts_with(&edited));
        app.ok(&["verify", "--file", "edited.json"]);
    }
}

pg_test! {
    /// A NOT NULL column outside the mapping with no default is named before anything is
    /// written; a value from [mapping.fill] then goes into every new row.
    fn required_columns_are_named_then_filled() {
        let app = App::new(Layout::OtherPostgres);
        app.ok(&["adopt", "--write", "-q"]);
        app.sql("ALTER TABLE app.documents ALTER COLUMN owner DROP DEFAULT");
        let file = sample();
        let refused = app.run(&["restore", "--file", file.to_str().unwrap()]);
        assert_eq!(refused.status.code(), Some(2));
        assert!(stderr(&refused).contains("app.documents.owner NOT NULL with no default"), "{}", stderr(&refused));
        assert_eq!(app.column("SELECT count(*)::text FROM app.documents"), vec!["0"]);
        let mut config = std::fs::read_to_string(app.path("goldset.toml")).unwrap();
        config += "\n[mapping.fill.\"app.documents\"]\nowner = \"golden-set\"\n";
        std::fs::write(app.path("goldset.toml"), config).unwrap();
        app.ok(&["restore", "-q", "--file", file.to_str().unwrap()]);
        assert_eq!(
            app.column("SELECT DISTINCT owner FROM app.documents"),
            vec!["golden-set"]
        );
        assert_eq!(backup_text(&app, "filled.json"), own_backup());
    }
}

layout_test! {
    /// A backup holds completed analyses only (the default); restoring it with --replace must
    /// not delete the application's analyses of other statuses (its queued or running work).
    fn replace_keeps_analyses_of_other_statuses(layout) {
        let app = adopted(layout);
        let (table, status, id, pending) = match layout {
            Layout::OtherPostgres => ("app.documents", "state", "doc_id", "queued"),
            _ => ("analyses", "status", "id", "pending"),
        };
        let cast = if layout == Layout::SeedSqlite { "" } else { "::text" };
        let first = app.column(&format!("SELECT min({id}{cast}) FROM {table}"))[0].clone();
        app.sql(&format!("UPDATE {table} SET {status} = '{pending}' WHERE {id} = '{first}'"));
        app.ok(&["backup", "-q", "--file", "completed.json"]);
        let out = app.ok(&["restore", "--replace", "--file", "completed.json"]);
        assert!(out.contains("deleted 0 analyses"), "{out}");
        assert_eq!(
            app.column(&format!("SELECT count(*){cast} FROM {table}")),
            vec![if layout == Layout::SeedSqlite { "Integer(20)" } else { "20" }],
        );
        let status_out = app.ok(&["status"]);
        assert!(status_out.contains("1 pending"), "{status_out}");
    }
}

layout_test! {
    /// An id stored in another form than the mapping says (upper case) is refused by name:
    /// goldset finds and deletes rows by their exact text, so it must not guess.
    fn ids_in_another_form_are_refused(layout) {
        let app = adopted(layout);
        if layout != Layout::SeedSqlite {
            // uuid columns have one form; the check concerns ids stored as text.
            return;
        }
        let victim = app.first_chunk_id();
        app.sql(&format!("UPDATE chunks SET id = upper(id) WHERE id = '{victim}'"));
        let out = app.run(&["backup", "--file", "b.json"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("is not written as the mapping's ids = \"hex32\""), "{}", stderr(&out));
    }
}

layout_test! {
    /// `time_zone` in the mapping: naive times (`timestamp`, SQLAlchemy's text) are wall-clock
    /// times of that zone, written and read as such, so the backup's instants are unchanged;
    /// an ambiguous wall-clock time (clocks going back) reads as the later instant, as
    /// PostgreSQL's `AT TIME ZONE` has it. `timestamptz` columns are not affected.
    fn a_mapping_time_zone_places_naive_times(layout) {
        let app = App::new(layout);
        app.ok(&["adopt", "--write", "-q"]);
        let config = std::fs::read_to_string(app.path("goldset.toml")).unwrap();
        assert!(config.contains("\n[mapping]\n"), "{config}");
        let config = config.replacen("\n[mapping]\n", "\n[mapping]\ntime_zone = \"America/New_York\"\n", 1);
        std::fs::write(app.path("goldset.toml"), config).unwrap();
        let file = sample();
        app.ok(&["restore", "-q", "--replace", "--file", file.to_str().unwrap()]);
        assert_eq!(backup_text(&app, "zoned.json"), own_backup());
        let out = app.ok(&["restore", "--replace", "--file", "zoned.json"]);
        assert!(out.contains("20 analyses unchanged, 0 changed"), "{out}");
        // The sample's first analysis, 2025-01-17T03:30:33.339385Z, is 22:30:33 the evening
        // before in New York (EST, -05:00).
        let first = "5d4a4972-f999-49e3-aa8a-0011af8f11f0";
        let (query, edit) = match layout {
            Layout::SeedSqlite => {
                let hex = first.replace('-', "");
                (
                    format!("SELECT created_at FROM analyses WHERE id = '{hex}'"),
                    format!("UPDATE analyses SET created_at = '2025-11-02 01:30:00.000000' WHERE id = '{hex}'"),
                )
            }
            Layout::SeedPostgres => (
                format!("SELECT created_at::text FROM analyses WHERE id = '{first}'"),
                format!("UPDATE analyses SET created_at = '2025-11-02 01:30:00+00' WHERE id = '{first}'"),
            ),
            Layout::OtherPostgres => (
                format!("SELECT ingested_at::text FROM app.documents WHERE doc_id = '{first}'"),
                format!("UPDATE app.documents SET ingested_at = '2025-11-02 01:30:00' WHERE doc_id = '{first}'"),
            ),
        };
        let stored = app.column(&query);
        let expected = match layout {
            Layout::SeedSqlite => "2025-01-16 22:30:33.339385",
            Layout::OtherPostgres => "2025-01-16 22:30:33.339385",
            // An instant: shown in the session's zone (the test server runs in UTC).
            Layout::SeedPostgres => "2025-01-17 03:30:33.339385+00",
        };
        assert_eq!(stored, vec![expected.to_owned()]);
        // 01:30 on 2025-11-02 happens twice in New York; the later is 06:30Z (EST).
        app.sql(&edit);
        let text = backup_text(&app, "edited.json");
        let instant = match layout {
            Layout::SeedPostgres => "\"created_at\": \"2025-11-02T01:30:00Z\"",
            _ => "\"created_at\": \"2025-11-02T06:30:00Z\"",
        };
        assert!(text.contains(instant), "{instant} missing");
        if layout == Layout::OtherPostgres {
            // PostgreSQL's own reading of the same wall-clock time (which orders the backup)
            // is the same instant.
            let server = app.column(&format!(
                "SELECT (timezone('America/New_York', ingested_at) AT TIME ZONE 'UTC')::text FROM app.documents WHERE doc_id = '{first}'"
            ));
            assert_eq!(server, vec!["2025-11-02 06:30:00".to_owned()]);
        }
        // An unknown zone is refused by name before anything is read.
        let config = std::fs::read_to_string(app.path("goldset.toml")).unwrap();
        std::fs::write(app.path("goldset.toml"), config.replace("America/New_York", "Mars/Olympus")).unwrap();
        let refused = app.run(&["status"]);
        assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
        assert!(stderr(&refused).contains("\"Mars/Olympus\" is not a time zone"), "{}", stderr(&refused));
    }
}

layout_test! {
    /// A chunk the application rewrote keeps the vector of its old text: `verify` names it as
    /// stale (goldset's record beside the application's tables holds the text's SHA-256), and
    /// `reembed --stale` embeds that chunk again and no other.
    fn a_chunk_rewritten_by_the_app_is_stale_until_reembed_stale(layout) {
        let app = adopted(layout);
        app.ok(&["backup", "-q", "--file", "golden.json"]);
        let (table, text, id) = (
            layout.chunks_table(),
            layout.chunk_text_column(),
            layout.chunk_id_column(),
        );
        let vectors = || {
            let query = match layout {
                Layout::SeedSqlite => format!("SELECT {id} || ' ' || hex(embedding) FROM {table} ORDER BY 1"),
                Layout::SeedPostgres => format!("SELECT {id}::text || ' ' || embedding::text FROM {table} ORDER BY 1"),
                Layout::OtherPostgres => format!("SELECT {id}::text || ' ' || vec::text FROM {table} ORDER BY 1"),
            };
            app.column(&query)
        };
        let before = vectors();
        let victim = app.first_chunk_id();
        let named = uuid::Uuid::try_parse(&victim).unwrap().to_string();
        app.sql(&format!(
            "UPDATE {table} SET {text} = {text} || ' (rewritten by the app)' WHERE {id} = '{victim}'"
        ));
        let out = app.run(&["verify", "--file", "golden.json", "--format", "json"]);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let stale = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "db_stale_embeddings")
            .unwrap();
        assert_eq!(stale["verdict"], "fail", "{stale}");
        assert_eq!(stale["problems"], 1, "{stale}");
        assert!(stale["examples"][0].as_str().unwrap().contains(&named), "{stale}");

        let out = app.ok(&["reembed", "--stale", "--format", "json"]);
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(summary["summary"]["embedded"], 1, "{summary}");
        let after = vectors();
        let changed: Vec<_> = before.iter().filter(|v| !after.contains(v)).collect();
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert!(changed[0].starts_with(&victim), "{changed:?}");
        // The database now matches what it holds; only the edit itself differs from the file.
        app.ok(&["backup", "-q", "--file", "now.json"]);
        app.ok(&["verify", "--file", "now.json"]);
    }
}
