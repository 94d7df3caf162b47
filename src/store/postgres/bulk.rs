//! Bulk loading into goldset's own tables: binary `COPY` rows for the three tables, and the
//! bulk mode of an emptied table set (indexes and constraints dropped inside the transaction,
//! rebuilt once before `COMMIT`, as pg_restore does).

use super::super::{insert_each, schema, BatchSource, Result, StoreError};
use super::connect::{describe, quote};
use super::copy::BinaryRows;
use super::write::PgWrite;
use crate::model::Analysis;
use crate::timestamp::Timestamp;
use pgvector::Vector;
use postgres::types::{Json, Type};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, Write};
use time::OffsetDateTime;

pub(super) fn copy_sql(table: &str, columns: &[&str]) -> String {
    format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        columns.join(", ")
    )
}

/// Columns of a chunk row as goldset writes it: the chunk, then its embedding.
pub(super) fn chunk_columns() -> Vec<&'static str> {
    [schema::CHUNK_COLUMNS, schema::EMBEDDING_COLUMNS].concat()
}

/// Binary `COPY` data of the three tables for a run of batches, each table to its own writer.
pub(super) struct TableRows<A: Write, C: Write, R: Write> {
    analyses: BinaryRows<A>,
    chunks: BinaryRows<C>,
    artifacts: BinaryRows<R>,
}

impl<A: Write, C: Write, R: Write> TableRows<A, C, R> {
    pub(super) fn new(analyses: A, chunks: C, artifacts: R, vector: Type) -> Self {
        TableRows {
            analyses: BinaryRows::new(
                analyses,
                schema::ANALYSIS_COLUMNS,
                vec![
                    Type::UUID,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TIMESTAMPTZ,
                    Type::JSONB,
                ],
            ),
            chunks: BinaryRows::new(
                chunks,
                &chunk_columns(),
                vec![
                    Type::UUID,
                    Type::UUID,
                    Type::INT4,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    vector,
                    Type::TEXT,
                    Type::BYTEA,
                ],
            ),
            artifacts: BinaryRows::new(
                artifacts,
                schema::ARTIFACT_COLUMNS,
                vec![Type::UUID, Type::UUID, Type::TEXT, Type::JSONB, Type::JSONB],
            ),
        }
    }

    /// Appends `analyses` with their chunks and artifacts; with `vectors`, one per chunk in
    /// order, made by `model`.
    pub(super) fn write(
        &mut self,
        analyses: &[Analysis],
        vectors: Option<impl Iterator<Item = Vector>>,
        model: Option<&str>,
    ) -> Result<()> {
        let mut vectors = vectors;
        let model = vectors.as_ref().and(model);
        for a in analyses {
            let created = offset_date_time(a.created_at)?;
            self.analyses.write(&[
                &a.id,
                &a.url,
                &a.content_type,
                &a.status,
                &created,
                &Json(&a.findings),
            ])?;
            for c in &a.chunks {
                let vector = match vectors.as_mut() {
                    Some(v) => Some(v.next().ok_or_else(|| {
                        StoreError::Refused(format!(
                            "no embedding was handed over for chunk {}",
                            c.id
                        ))
                    })?),
                    None => None,
                };
                // The vector was made from the text written beside it: record its digest.
                let digest = vector
                    .as_ref()
                    .map(|_| Sha256::digest(c.content.as_bytes()).to_vec());
                self.chunks.write(&[
                    &c.id,
                    &a.id,
                    &(c.chunk_index as i32),
                    &c.content,
                    &c.section_title,
                    &c.section_path,
                    &c.content_type,
                    &vector,
                    &model,
                    &digest,
                ])?;
            }
            if let Some(r) = &a.artifact {
                self.artifacts.write(&[
                    &r.id,
                    &a.id,
                    &r.summary,
                    &Json(&r.key_findings),
                    &Json(&r.metadata),
                ])?;
            }
        }
        Ok(())
    }

    pub(super) fn finish(self) -> Result<(A, C, R)> {
        Ok((
            self.analyses.finish()?,
            self.chunks.finish()?,
            self.artifacts.finish()?,
        ))
    }
}

/// A timestamp as the `time` value `postgres` encodes.
fn offset_date_time(t: Timestamp) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.unix_micros()) * 1000).map_err(|e| {
        StoreError::Encode {
            column: "created_at".into(),
            reason: format!("timestamp {t}: {e}"),
        }
    })
}

impl PgWrite<'_> {
    /// The tables were emptied in this transaction: drop their indexes and constraints, load,
    /// and rebuild them once before COMMIT (as pg_restore does) instead of maintaining them row by
    /// row. The rebuild validates everything the constraints promise. Readers wait for the
    /// commit (ACCESS EXCLUSIVE), as they would for `pg_restore --clean`. If anything else
    /// depends on these constraints (an application's foreign key), the load stays row by row.
    pub(super) fn start_bulk_load(&mut self) -> Result<()> {
        let n = self.names;
        let tables = [n.analyses.as_str(), n.chunks.as_str(), n.artifacts.as_str()];
        let rows = self.client.query(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype::text
               FROM pg_constraint c
              WHERE c.conrelid = ANY (ARRAY[$1::text::regclass, $2::text::regclass, $3::text::regclass]::oid[])
                AND c.contype IN ('p', 'u', 'f')",
            &[&tables[0], &tables[1], &tables[2]],
        )?;
        let indexes = self.client.query(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
               FROM pg_index i
              WHERE i.indrelid = ANY (ARRAY[$1::text::regclass, $2::text::regclass, $3::text::regclass]::oid[])
                AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            &[&tables[0], &tables[1], &tables[2]],
        )?;
        let (mut drop, mut keys, mut foreign) = (Vec::new(), Vec::new(), Vec::new());
        for r in &rows {
            let (table, name, definition, kind): (String, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let add = format!(
                "ALTER TABLE {table} ADD CONSTRAINT {} {definition}",
                quote(&name)
            );
            let dropped = format!("ALTER TABLE {table} DROP CONSTRAINT {}", quote(&name));
            if kind == "f" {
                drop.insert(0, dropped);
                foreign.push(add);
            } else {
                drop.push(dropped);
                keys.push(add);
            }
        }
        for r in &indexes {
            let (name, definition): (String, String) = (r.get(0), r.get(1));
            drop.push(format!("DROP INDEX {name}"));
            keys.push(definition);
        }
        self.client.batch_execute("SAVEPOINT goldset_bulk")?;
        match self.client.batch_execute(&drop.join(";\n")) {
            Ok(()) => {
                self.client
                    .batch_execute("RELEASE SAVEPOINT goldset_bulk")?;
                keys.extend(foreign);
                self.rebuild = Some(keys.join(";\n"));
            }
            Err(e) => {
                tracing::info!(
                    "bulk load not possible, loading row by row: {}",
                    describe(&e)
                );
                self.client
                    .batch_execute("ROLLBACK TO SAVEPOINT goldset_bulk")?;
            }
        }
        Ok(())
    }

    /// In a bulk load, one `COPY` of chunks stays open for the whole stream: the server loads
    /// rows while the next batch is parsed and embedded, instead of finishing a statement and
    /// waiting for the next one three times a batch. Analyses and artifacts (a tenth of the
    /// bytes) wait in unnamed temporary files and are copied after the chunks; the foreign keys
    /// are dropped until the rebuild before `COMMIT` checks them all.
    pub(super) fn stream_bulk(&mut self, model: &str, next: &mut BatchSource<'_>) -> Result<()> {
        if self.rebuild.is_none() {
            return insert_each(self, model, next);
        }
        let n = self.names;
        let vector = self.vector_type()?;
        let spool = || -> Result<BufWriter<File>> {
            let file = tempfile::tempfile().map_err(|e| {
                let dir = std::env::temp_dir();
                io::Error::new(
                    e.kind(),
                    format!("cannot create one in {}: {e}", dir.display()),
                )
            })?;
            Ok(BufWriter::new(file))
        };
        let mut chunk_copy = self
            .client
            .copy_in(&copy_sql(&n.chunks, &chunk_columns()))?;
        let mut rows = TableRows::new(spool()?, &mut chunk_copy, spool()?, vector);
        while let Some(batch) = next()? {
            let vectors = batch.vectors.map(|v| v.into_iter().map(Vector::from));
            rows.write(&batch.analyses, vectors, Some(model))?;
        }
        let (analyses, _, artifacts) = rows.finish()?;
        chunk_copy.finish()?;
        for (table, columns, spooled) in [
            (&n.analyses, schema::ANALYSIS_COLUMNS, analyses),
            (&n.artifacts, schema::ARTIFACT_COLUMNS, artifacts),
        ] {
            let mut file = spooled.into_inner().map_err(|e| e.into_error())?;
            file.rewind()?;
            self.copy_in(table, columns, &mut BufReader::new(file))?;
        }
        Ok(())
    }
}
