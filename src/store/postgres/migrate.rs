//! goldset's own tables in PostgreSQL: the migrations, applied in order in one transaction under
//! an advisory lock, and the pgvector extension they need.

use super::super::{schema, Result, StoreError};
use super::connect::{describe, quote};
use super::{Names, PostgresStore};

/// Finds the schema that holds pgvector: `None` when the extension is not created.
fn vector_schema(client: &mut postgres::Client) -> Result<Option<String>> {
    Ok(client
        .query_opt(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
             WHERE e.extname = 'vector'",
            &[],
        )?
        .map(|r| r.get(0)))
}

impl PostgresStore {
    /// Creates (with `create`) or migrates goldset's tables in the store's schema.
    pub(super) fn migrate(&mut self, create: bool) -> Result<()> {
        let found_vector = vector_schema(&mut self.client)?;
        let n = &self.names;
        let tables_exist: bool = self
            .client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{}.goldset_migrations", quote(&n.schema))],
            )?
            .get(0);
        if !tables_exist && !create {
            return Err(StoreError::Missing(format!(
                "{} holds no goldset tables (create them with `goldset init` or `goldset restore`)",
                self.location
            )));
        }
        let vector_schema = match found_vector {
            Some(s) => s,
            None => self.create_vector_extension()?,
        };
        self.names.vector = format!("{}.vector", quote(&vector_schema));
        let n = &self.names;
        let migrations = migrations(n);
        let mut tx = self.client.transaction()?;
        // One migrator at a time, per schema.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(n.lock_key ^ 1)])?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {m} (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            schema = quote(&n.schema),
            m = n.migrations
        ))?;
        let current: i32 = tx
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {}", n.migrations),
                &[],
            )?
            .get(0);
        if current as usize > migrations.len() {
            return Err(StoreError::Schema(format!(
                "schema {} is at version {current}; this goldset knows up to {} — upgrade goldset",
                n.schema,
                schema::SCHEMA_VERSION
            )));
        }
        for (i, sql) in migrations.iter().enumerate().skip(current as usize) {
            tracing::info!(version = i + 1, "applying PostgreSQL migration");
            tx.batch_execute(sql)?;
            tx.execute(
                &format!("INSERT INTO {} (version) VALUES ($1)", n.migrations),
                &[&(i as i32 + 1)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// `CREATE EXTENSION vector`, with a message a user can act on when it cannot be done.
    fn create_vector_extension(&mut self) -> Result<String> {
        let available: bool = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')",
                &[],
            )?
            .get(0);
        if !available {
            return Err(StoreError::Schema(
                "the pgvector extension is not installed on this server (https://github.com/pgvector/pgvector#installation)".into(),
            ));
        }
        self.client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
            .map_err(|e| {
                StoreError::Schema(format!(
                    "CREATE EXTENSION vector failed: {} (ask a superuser to run it once)",
                    describe(&e)
                ))
            })?;
        vector_schema(&mut self.client)?
            .ok_or_else(|| StoreError::Schema("pgvector vanished after CREATE EXTENSION".into()))
    }
}

/// PostgreSQL migrations; entry `i` brings the schema from version `i` to `i + 1`.
fn migrations(n: &Names) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE {a} (
             id           uuid PRIMARY KEY,
             url          text NOT NULL,
             content_type text NOT NULL,
             status       text NOT NULL,
             created_at   timestamptz NOT NULL,
             findings     jsonb NOT NULL
         );
         CREATE INDEX ON {a} (created_at, id);
         CREATE INDEX ON {a} (status, created_at, id);
         CREATE TABLE {c} (
             id              uuid PRIMARY KEY,
             analysis_id     uuid NOT NULL REFERENCES {a} (id) ON DELETE CASCADE,
             chunk_index     integer NOT NULL,
             content         text NOT NULL,
             section_title   text,
             section_path    text,
             content_type    text NOT NULL,
             embedding       {v},
             embedding_model text,
             UNIQUE (analysis_id, chunk_index)
         );
         CREATE TABLE {r} (
             id           uuid PRIMARY KEY,
             analysis_id  uuid NOT NULL UNIQUE REFERENCES {a} (id) ON DELETE CASCADE,
             summary      text,
             key_findings jsonb NOT NULL,
             metadata     jsonb NOT NULL
         );",
            a = n.analyses,
            c = n.chunks,
            r = n.artifacts,
            v = n.vector
        ),
        // IF NOT EXISTS: loading a version-1 snapshot keeps the cache table it does not hold.
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
             model          text NOT NULL,
             content_sha256 bytea NOT NULL,
             embedding      bytea NOT NULL,
             PRIMARY KEY (model, content_sha256)
         )",
            n.cache
        ),
        // Version 3 rebuilt SQLite's cache table; a PostgreSQL heap row already keeps a vector
        // inline, so here the step only documents the table and keeps the versions in step.
        format!(
            "COMMENT ON TABLE {} IS 'goldset embedding cache: vectors by model and SHA-256 of the text; derived data, never backed up'",
            n.cache
        ),
        // Version 4: the SHA-256 of the text each embedding was made from (NULL where not
        // known: rows embedded before this version; see `schema::SQLITE_MIGRATIONS`).
        format!(
            "ALTER TABLE {c} ADD COLUMN IF NOT EXISTS embedding_sha256 bytea;
             COMMENT ON COLUMN {c}.embedding_sha256 IS 'SHA-256 of the text the embedding was made from; NULL: not known'",
            c = n.chunks
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_migration_per_schema_version_all_in_the_chosen_schema() {
        let n = Names::new("golden");
        let all = migrations(&n);
        assert_eq!(all.len(), schema::SCHEMA_VERSION as usize);
        assert!(all[0].contains("CREATE TABLE \"golden\".analyses"));
        assert!(all.iter().all(|m| !m.contains("public.")));
    }
}
