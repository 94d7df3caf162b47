//! Writing into an application's tables in an SQLite file: row-level statements in one
//! `BEGIN IMMEDIATE` transaction, no change to its tables, pragmas or journal mode. Values are
//! stored the way the mapping says the application keeps them (32-hex ids, SQLAlchemy's naive
//! UTC text times, JSON text, little-endian `f32` BLOBs or JSON arrays). goldset's bookkeeping —
//! the model of each embedding and the embedding cache — lives in two tables of its own in the
//! same file (`goldset_*`), created by the first writing command.

use super::super::catalog::{cascade_refusal, Catalog};
use super::super::layout::{quote_name as q, EmbeddingEncoding, Layout, TimeEncoding};
use super::super::{
    blob_to_vector, vector_to_blob, ChunkEmbeddings, ChunkText, ContentDigest, EmbeddingModel,
    Existing, Inventory, Patch, RecordKind, Result, StoreError, WriteTransaction,
};
use super::decode;
use super::read::{embedding_models, inventory, used_cache_keys, Reading};
use super::{ADOPTED_CACHE, MODEL_TABLE};
use crate::model::{Analysis, Chunk, Counts};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, Transaction};
use std::collections::HashMap;
use uuid::Uuid;

/// A write transaction on an application's tables.
pub(super) struct AdoptedWrite<'c> {
    tx: Transaction<'c>,
    layout: &'c Layout,
    catalog: Catalog,
    /// `--allow-cascade`: deletes may cascade into (or null out) rows outside the dataset.
    allow_cascade: bool,
}

/// `INSERT INTO table (columns) VALUES (?1, …)`, quoted.
fn insert_sql(table: &str, columns: &[&str]) -> String {
    let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let columns: Vec<String> = columns.iter().map(|c| q(c)).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        q(table),
        columns.join(", "),
        marks.join(", ")
    )
}

fn json_text<T: serde::Serialize>(value: &T) -> Value {
    Value::Text(serde_json::to_string(value).expect("JSON values serialize"))
}

impl<'c> AdoptedWrite<'c> {
    /// Begins: the transaction, goldset's bookkeeping tables, the checks of the mapping's
    /// required columns.
    pub(super) fn begin(tx: Transaction<'c>, layout: &'c Layout, catalog: Catalog) -> Result<Self> {
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {MODEL_TABLE} (
                 chunk_id       TEXT PRIMARY KEY NOT NULL,
                 model          TEXT NOT NULL,
                 content_sha256 BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS {ADOPTED_CACHE} (
                 model          TEXT NOT NULL,
                 content_sha256 BLOB NOT NULL,
                 embedding      BLOB NOT NULL,
                 UNIQUE (model, content_sha256)
             );"
        ))?;
        let w = AdoptedWrite {
            tx,
            layout,
            catalog,
            allow_cascade: false,
        };
        w.catalog.check_required_columns(w.layout)?;
        Ok(w)
    }

    fn reading(&self) -> Reading<'c> {
        Reading {
            layout: self.layout,
            cache: ADOPTED_CACHE,
            model_table: Some(MODEL_TABLE),
        }
    }

    fn id(&self, id: &Uuid) -> Value {
        Value::Text(self.layout.ids.text(id))
    }

    fn vector(&self, v: &[f32]) -> Value {
        match self.layout.embedding {
            EmbeddingEncoding::Json => Value::Text(format!(
                "[{}]",
                v.iter().map(f32::to_string).collect::<Vec<_>>().join(",")
            )),
            _ => Value::Blob(vector_to_blob(v)),
        }
    }

    /// Inserts one row: `columns` and `values`, plus the mapping's fill for the table.
    fn insert_row(&self, table: &str, columns: &[&str], mut values: Vec<Value>) -> Result<()> {
        let mut columns = columns.to_vec();
        if let Some(fill) = self.layout.fill.get(table) {
            for (column, value) in fill {
                columns.push(column);
                values.push(Value::Text(value.clone()));
            }
        }
        self.tx
            .prepare_cached(&insert_sql(table, &columns))?
            .execute(params_from_iter(values))?;
        Ok(())
    }

    /// Deletes the rows of `table` whose `column` is `id` (every row with `None`).
    fn delete_where(&self, table: &str, column: &str, id: Option<&Value>) -> Result<()> {
        self.check_cascades(table, column, id)?;
        match id {
            None => self.tx.execute(&format!("DELETE FROM {}", q(table)), [])?,
            Some(id) => self
                .tx
                .prepare_cached(&format!(
                    "DELETE FROM {} WHERE {} = ?1",
                    q(table),
                    q(column)
                ))?
                .execute([id])?,
        };
        Ok(())
    }

    /// Before rows of `table` are deleted: refuses when rows of a table outside the dataset
    /// reference them, unless the user allowed the cascade (and the key allows the delete).
    fn check_cascades(&self, table: &str, column: &str, id: Option<&Value>) -> Result<()> {
        let mapped: Vec<&str> = self.layout.tables().iter().map(|(t, _)| *t).collect();
        for key in self.catalog.references_into(table, &mapped) {
            let rows: i64 = match id {
                None => self.tx.query_row(
                    &self.catalog.referencing_rows_sql(key, table, ""),
                    [],
                    |r| r.get(0),
                )?,
                Some(id) => self.tx.query_row(
                    &self.catalog.referencing_rows_sql(
                        key,
                        table,
                        &format!("WHERE t.{} = ?1", q(column)),
                    ),
                    [id],
                    |r| r.get(0),
                )?,
            };
            if let Some(refusal) = cascade_refusal(key, rows, self.allow_cascade) {
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// Records that `model` embedded the chunk `id` (stored text).
    fn record_model(&self, model: &str, id: &Value) -> Result<()> {
        let c = &self.layout.chunks;
        self.tx
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO {MODEL_TABLE} (chunk_id, model, content_sha256)
                 SELECT {id}, ?2, goldset_sha256({content}) FROM {table} WHERE {id} = ?1",
                id = q(&c.id),
                content = q(&c.content),
                table = q(&c.table)
            ))?
            .execute(params![id, model])?;
        Ok(())
    }

    /// The analysis row's columns and values.
    fn analysis_row<'l>(&'l self, a: &Analysis) -> (Vec<&'l str>, Vec<Value>) {
        let l = self.layout;
        let t = &l.analyses;
        let mut columns = vec![
            t.id.as_str(),
            &t.url,
            &t.content_type,
            &t.status,
            &t.created_at,
        ];
        let mut values = vec![
            self.id(&a.id),
            Value::Text(a.url.clone()),
            Value::Text(a.content_type.clone()),
            Value::Text(l.status_to_store(&a.status).to_owned()),
            match l.timestamps {
                TimeEncoding::Micros => Value::Integer(a.created_at.unix_micros()),
                _ => Value::Text(a.created_at.naive_utc_text()),
            },
        ];
        if let Some(column) = &t.findings {
            columns.push(column);
            values.push(json_text(&a.findings));
        }
        (columns, values)
    }

    fn insert_findings(&self, a: &Analysis) -> Result<()> {
        let Some(f) = &self.layout.findings else {
            return Ok(());
        };
        for (i, finding) in a.findings.iter().enumerate() {
            let mut columns = vec![
                f.analysis_id.as_str(),
                &f.position,
                &f.agent,
                &f.category,
                &f.content,
                &f.confidence,
            ];
            let mut values = vec![
                self.id(&a.id),
                Value::Integer(i as i64),
                Value::Text(finding.agent.clone()),
                Value::Text(finding.category.clone()),
                Value::Text(finding.content.clone()),
                Value::Real(finding.confidence),
            ];
            if let Some(column) = &f.metadata {
                columns.push(column);
                // A row holds `{}` for "no metadata" (the column may be NOT NULL).
                values.push(match &finding.metadata {
                    Some(m) => json_text(m),
                    None => Value::Text("{}".into()),
                });
            }
            self.insert_row(&f.table, &columns, values)?;
        }
        Ok(())
    }

    fn insert_chunk(
        &self,
        a: &Analysis,
        chunk: &Chunk,
        vector: Option<(&str, &[f32])>,
    ) -> Result<()> {
        let c = &self.layout.chunks;
        let chunk_id = self.id(&chunk.id);
        let mut columns = vec![
            c.id.as_str(),
            &c.analysis_id,
            &c.chunk_index,
            &c.content,
            &c.content_type,
            &c.embedding,
        ];
        let mut values = vec![
            chunk_id.clone(),
            self.id(&a.id),
            Value::Integer(chunk.chunk_index),
            Value::Text(chunk.content.clone()),
            Value::Text(chunk.content_type.clone()),
            vector.map_or(Value::Null, |(_, v)| self.vector(v)),
        ];
        for (column, value) in [
            (&c.section_title, &chunk.section_title),
            (&c.section_path, &chunk.section_path),
        ] {
            if let Some(column) = column {
                columns.push(column);
                values.push(value.clone().map_or(Value::Null, Value::Text));
            }
        }
        if let Some(column) = &c.embedding_model {
            columns.push(column);
            values.push(vector.map_or(Value::Null, |(m, _)| Value::Text(m.to_owned())));
        }
        self.insert_row(&c.table, &columns, values)?;
        match vector {
            Some((model, _)) => self.record_model(model, &chunk_id),
            None => Ok(()),
        }
    }

    fn insert_artifact(&self, a: &Analysis) -> Result<()> {
        let (Some(r), Some(artifact)) = (&self.layout.artifacts, &a.artifact) else {
            return Ok(());
        };
        self.insert_row(
            &r.table,
            &[
                r.id.as_str(),
                &r.analysis_id,
                &r.summary,
                &r.key_findings,
                &r.metadata,
            ],
            vec![
                self.id(&artifact.id),
                self.id(&a.id),
                artifact.summary.clone().map_or(Value::Null, Value::Text),
                json_text(&artifact.key_findings),
                json_text(&artifact.metadata),
            ],
        )
    }

    fn insert_analysis(&self, a: &Analysis, embeddings: Option<(&str, &[Vec<f32>])>) -> Result<()> {
        let (columns, values) = self.analysis_row(a);
        self.insert_row(&self.layout.analyses.table, &columns, values)?;
        self.insert_findings(a)?;
        for (i, chunk) in a.chunks.iter().enumerate() {
            let vector = embeddings.map(|(model, vectors)| (model, vectors[i].as_slice()));
            self.insert_chunk(a, chunk, vector)?;
        }
        self.insert_artifact(a)
    }

    /// The stored analysis `id`, whole, if any.
    fn analysis_by_id(&self, id: &Uuid) -> Result<Option<Analysis>> {
        let l = self.layout;
        let key = self.id(id);
        let a = &l.analyses;
        let findings = a.findings.as_deref().map_or("NULL".into(), q);
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {}, {}, {}, {}, {}, {findings} FROM {} WHERE {} = ?1",
            q(&a.id),
            q(&a.url),
            q(&a.content_type),
            q(&a.status),
            q(&a.created_at),
            q(&a.table),
            q(&a.id)
        ))?;
        let mut rows = stmt.query([&key])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let mut analysis = decode::analysis(row, l)?;
        let optional = |column: &Option<String>| column.as_deref().map_or("NULL".into(), q);
        let c = &l.chunks;
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {}, {}, {}, {}, {}, {}, {} FROM {} WHERE {} = ?1 ORDER BY {}",
            q(&c.id),
            q(&c.analysis_id),
            q(&c.chunk_index),
            q(&c.content),
            optional(&c.section_title),
            optional(&c.section_path),
            q(&c.content_type),
            q(&c.table),
            q(&c.analysis_id),
            q(&c.chunk_index)
        ))?;
        let mut rows = stmt.query([&key])?;
        while let Some(row) = rows.next()? {
            analysis.chunks.push(decode::chunk(row, &c.table)?.1);
        }
        if let Some(t) = &l.artifacts {
            let mut stmt = self.tx.prepare_cached(&format!(
                "SELECT {}, {}, {}, {}, {} FROM {} WHERE {} = ?1",
                q(&t.id),
                q(&t.analysis_id),
                q(&t.summary),
                q(&t.key_findings),
                q(&t.metadata),
                q(&t.table),
                q(&t.analysis_id)
            ))?;
            let mut rows = stmt.query([&key])?;
            if let Some(row) = rows.next()? {
                analysis.artifact = Some(decode::artifact(row, &t.table)?.1);
            }
        }
        if let Some(f) = &l.findings {
            let mut stmt = self.tx.prepare_cached(&format!(
                "SELECT {}, {}, {}, {}, {}, {} FROM {} WHERE {} = ?1 ORDER BY {}",
                q(&f.analysis_id),
                q(&f.agent),
                q(&f.category),
                q(&f.content),
                q(&f.confidence),
                optional(&f.metadata),
                q(&f.table),
                q(&f.analysis_id),
                q(&f.position)
            ))?;
            let mut rows = stmt.query([&key])?;
            while let Some(row) = rows.next()? {
                analysis.findings.push(decode::finding(row, &f.table)?.1);
            }
        }
        Ok(Some(analysis))
    }

    /// Updates a stored chunk in place (same id, same analysis, same position): its text and
    /// section fields, and its embedding when `vector` is given.
    fn update_chunk(&self, chunk: &Chunk, vector: Option<&[f32]>, model: &str) -> Result<()> {
        let c = &self.layout.chunks;
        let mut sets: Vec<(&str, Value)> = vec![
            (&c.content, Value::Text(chunk.content.clone())),
            (&c.content_type, Value::Text(chunk.content_type.clone())),
        ];
        for (column, value) in [
            (&c.section_title, &chunk.section_title),
            (&c.section_path, &chunk.section_path),
        ] {
            if let Some(column) = column {
                sets.push((column, value.clone().map_or(Value::Null, Value::Text)));
            }
        }
        if let Some(v) = vector {
            sets.push((&c.embedding, self.vector(v)));
            if let Some(column) = &c.embedding_model {
                sets.push((column, Value::Text(model.to_owned())));
            }
        }
        let assignments: Vec<String> = sets
            .iter()
            .enumerate()
            .map(|(i, (column, _))| format!("{} = ?{}", q(column), i + 2))
            .collect();
        let id = self.id(&chunk.id);
        let mut values = vec![id.clone()];
        values.extend(sets.into_iter().map(|(_, v)| v));
        self.tx
            .prepare_cached(&format!(
                "UPDATE {} SET {} WHERE {} = ?1",
                q(&c.table),
                assignments.join(", "),
                q(&c.id)
            ))?
            .execute(params_from_iter(values))?;
        if vector.is_some() {
            self.record_model(model, &id)?;
        }
        Ok(())
    }

    /// Deletes chunks by id, with goldset's record of their model.
    fn delete_chunks(&self, ids: &[Uuid]) -> Result<()> {
        let c = &self.layout.chunks;
        for id in ids {
            let id = self.id(id);
            self.tx
                .prepare_cached(&format!("DELETE FROM {MODEL_TABLE} WHERE chunk_id = ?1"))?
                .execute([&id])?;
            self.delete_where(&c.table, &c.id, Some(&id))?;
        }
        Ok(())
    }
}

impl WriteTransaction for AdoptedWrite<'_> {
    fn allow_cascade(&mut self, allow: bool) {
        self.allow_cascade = allow;
    }

    fn inventory(&mut self) -> Result<Inventory> {
        inventory(&self.tx, self.reading())
    }

    fn delete_all(&mut self) -> Result<()> {
        let l = self.layout;
        if let Some(f) = &l.findings {
            self.delete_where(&f.table, &f.analysis_id, None)?;
        }
        self.delete_where(&l.chunks.table, &l.chunks.id, None)?;
        if let Some(r) = &l.artifacts {
            self.delete_where(&r.table, &r.id, None)?;
        }
        self.delete_where(&l.analyses.table, &l.analyses.id, None)?;
        self.tx.execute(&format!("DELETE FROM {MODEL_TABLE}"), [])?;
        Ok(())
    }

    fn load_in_bulk_if_empty(&mut self) -> Result<bool> {
        Ok(self.inventory()? == Inventory::default())
    }

    fn existing(&mut self, analyses: &[Analysis]) -> Result<Vec<Existing>> {
        let l = self.layout;
        let mut found = Vec::new();
        let mut look =
            |table: &str, id_column: &str, owner_column: &str, kind, id: &Uuid| -> Result<()> {
                let owner: Option<String> = self
                    .tx
                    .prepare_cached(&format!(
                        "SELECT {} FROM {} WHERE {} = ?1",
                        q(owner_column),
                        q(table),
                        q(id_column)
                    ))?
                    .query_row([l.ids.text(id)], |r| r.get(0))
                    .optional()?;
                if let Some(owner) = owner {
                    found.push(Existing {
                        kind,
                        id: *id,
                        owner: Uuid::try_parse(owner.trim())
                            .map_err(|e| StoreError::Corrupt(format!("id {owner:?}: {e}")))?,
                    });
                }
                Ok(())
            };
        for a in analyses {
            let t = &l.analyses;
            look(&t.table, &t.id, &t.id, RecordKind::Analysis, &a.id)?;
            for chunk in &a.chunks {
                let c = &l.chunks;
                look(
                    &c.table,
                    &c.id,
                    &c.analysis_id,
                    RecordKind::Chunk,
                    &chunk.id,
                )?;
            }
            if let (Some(r), Some(artifact)) = (&l.artifacts, &a.artifact) {
                look(
                    &r.table,
                    &r.id,
                    &r.analysis_id,
                    RecordKind::Artifact,
                    &artifact.id,
                )?;
            }
        }
        Ok(found)
    }

    fn delete_analyses(&mut self, ids: &[Uuid]) -> Result<()> {
        let l = self.layout;
        for id in ids {
            let id = self.id(id);
            if let Some(f) = &l.findings {
                self.delete_where(&f.table, &f.analysis_id, Some(&id))?;
            }
            let c = &l.chunks;
            self.tx
                .prepare_cached(&format!(
                    "DELETE FROM {MODEL_TABLE} WHERE chunk_id IN (SELECT {} FROM {} WHERE {} = ?1)",
                    q(&c.id),
                    q(&c.table),
                    q(&c.analysis_id)
                ))?
                .execute([&id])?;
            self.delete_where(&c.table, &c.analysis_id, Some(&id))?;
            if let Some(r) = &l.artifacts {
                self.delete_where(&r.table, &r.analysis_id, Some(&id))?;
            }
            self.delete_where(&l.analyses.table, &l.analyses.id, Some(&id))?;
        }
        Ok(())
    }

    fn insert_batch(
        &mut self,
        analyses: &[Analysis],
        embeddings: Option<ChunkEmbeddings<'_>>,
    ) -> Result<()> {
        let mut offset = 0;
        for a in analyses {
            let n = a.chunks.len();
            let vectors = embeddings.map(|e| (e.model, &e.vectors[offset..offset + n]));
            self.insert_analysis(a, vectors)?;
            offset += n;
        }
        Ok(())
    }

    fn replaces_by_difference(&self) -> bool {
        true
    }

    fn analyses_by_id(&mut self, ids: &[Uuid]) -> Result<Vec<Analysis>> {
        let mut found = Vec::new();
        for id in ids {
            found.extend(self.analysis_by_id(id)?);
        }
        Ok(found)
    }

    fn chunk_vectors(
        &mut self,
        ids: &[Uuid],
        model: &str,
        dimension: usize,
    ) -> Result<HashMap<Uuid, Vec<f32>>> {
        let c = &self.layout.chunks;
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT c.{emb} FROM {table} c JOIN {MODEL_TABLE} e ON e.chunk_id = c.{id}
              WHERE c.{id} = ?1 AND e.model = ?2",
            emb = q(&c.embedding),
            table = q(&c.table),
            id = q(&c.id)
        ))?;
        let mut found = HashMap::new();
        for id in ids {
            let stored: Option<Value> = stmt
                .query_row(params![self.layout.ids.text(id), model], |r| r.get(0))
                .optional()?;
            let vector = match stored {
                Some(Value::Blob(b)) => Some(blob_to_vector(&b)),
                Some(Value::Text(t)) => serde_json::from_str::<Vec<f32>>(&t).ok(),
                _ => None,
            };
            if let Some(v) = vector.filter(|v| v.len() == dimension) {
                found.insert(*id, v);
            }
        }
        Ok(found)
    }

    fn apply_patch(
        &mut self,
        patch: &Patch<'_>,
        vectors: &HashMap<Uuid, Vec<f32>>,
        model: &str,
    ) -> Result<()> {
        let l = self.layout;
        let a = patch.analysis;
        let id = self.id(&a.id);
        if patch.row {
            let (columns, values) = self.analysis_row(a);
            let sets: Vec<String> = columns
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, c)| format!("{} = ?{}", q(c), i + 1))
                .collect();
            self.tx
                .prepare_cached(&format!(
                    "UPDATE {} SET {} WHERE {} = ?1",
                    q(&l.analyses.table),
                    sets.join(", "),
                    q(&l.analyses.id)
                ))?
                .execute(params_from_iter(values))?;
        }
        if patch.findings {
            if let Some(f) = &l.findings {
                self.delete_where(&f.table, &f.analysis_id, Some(&id))?;
                self.insert_findings(a)?;
            }
        }
        self.delete_chunks(&patch.remove_chunks)?;
        for &at in &patch.add_chunks {
            let chunk = &a.chunks[at];
            let vector = vectors.get(&chunk.id).map(|v| (model, v.as_slice()));
            self.insert_chunk(a, chunk, vector)?;
        }
        for &at in &patch.update_chunks {
            let chunk = &a.chunks[at];
            self.update_chunk(chunk, vectors.get(&chunk.id).map(Vec::as_slice), model)?;
        }
        if patch.artifact {
            if let Some(t) = &l.artifacts {
                self.delete_where(&t.table, &t.analysis_id, Some(&id))?;
                self.insert_artifact(a)?;
            }
        }
        Ok(())
    }

    fn delete_analyses_except(&mut self, keep: &[Uuid]) -> Result<Counts> {
        let a = &self.layout.analyses;
        let stored: Vec<String> = self
            .tx
            .prepare(&format!("SELECT {} FROM {}", q(&a.id), q(&a.table)))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let gone: Vec<Uuid> = stored
            .iter()
            .filter_map(|t| Uuid::try_parse(t.trim()).ok())
            .filter(|id| keep.binary_search(id).is_err())
            .collect();
        let mut counts = Counts::default();
        for analysis in self.analyses_by_id(&gone)? {
            counts.add(&analysis);
        }
        self.delete_analyses(&gone)?;
        Ok(counts)
    }

    fn embedding_models(&mut self) -> Result<Vec<EmbeddingModel>> {
        embedding_models(&self.tx, self.reading())
    }

    fn prepare_embeddings(&mut self, _dimension: usize) -> Result<()> {
        // BLOBs and JSON text take any length.
        Ok(())
    }

    fn cached_embeddings(
        &mut self,
        model: &str,
        dimension: usize,
        digests: &[ContentDigest],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT embedding FROM {ADOPTED_CACHE} WHERE model = ?1 AND content_sha256 = ?2"
        ))?;
        digests
            .iter()
            .map(|d| {
                let blob: Option<Vec<u8>> = stmt
                    .query_row(params![model, &d[..]], |r| r.get(0))
                    .optional()?;
                Ok(blob
                    .filter(|b| b.len() == dimension * 4)
                    .map(|b| blob_to_vector(&b)))
            })
            .collect()
    }

    fn cache_embeddings(&mut self, model: &str, entries: &[(ContentDigest, &[f32])]) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {ADOPTED_CACHE} (model, content_sha256, embedding) VALUES (?1, ?2, ?3)"
        ))?;
        for (digest, vector) in entries {
            stmt.execute(params![model, &digest[..], vector_to_blob(vector)])?;
        }
        Ok(())
    }

    fn chunks_needing_embedding(
        &mut self,
        model: &str,
        dimension: usize,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ChunkText>> {
        let l = self.layout;
        let c = &l.chunks;
        let dims = match l.embedding {
            EmbeddingEncoding::Json => format!("json_array_length(c.{})", q(&c.embedding)),
            _ => format!("length(c.{}) / 4", q(&c.embedding)),
        };
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT c.{id}, c.{content} FROM {table} c LEFT JOIN {MODEL_TABLE} e ON e.chunk_id = c.{id}
              WHERE c.{id} > ?1 AND (c.{emb} IS NULL OR e.model IS NOT ?2 OR {dims} <> ?3)
              ORDER BY c.{id} LIMIT ?4",
            id = q(&c.id),
            content = q(&c.content),
            table = q(&c.table),
            emb = q(&c.embedding),
        ))?;
        let after = after.map(|u| l.ids.text(&u)).unwrap_or_default();
        let mut rows = stmt.query(params![after, model, dimension as i64, limit as i64])?;
        let mut chunks = Vec::new();
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            chunks.push(ChunkText {
                id: Uuid::try_parse(id.trim())
                    .map_err(|e| StoreError::Corrupt(format!("chunk id {id:?}: {e}")))?,
                content: row.get(1)?,
            });
        }
        Ok(chunks)
    }

    fn set_embeddings(&mut self, model: &str, updates: &[(Uuid, &[f32])]) -> Result<()> {
        let c = &self.layout.chunks;
        let model_set = match &c.embedding_model {
            Some(column) => format!(", {} = ?3", q(column)),
            None => String::new(),
        };
        let sql = format!(
            "UPDATE {} SET {} = ?1{model_set} WHERE {} = ?2",
            q(&c.table),
            q(&c.embedding),
            q(&c.id)
        );
        for (id, vector) in updates {
            let id = self.id(id);
            let mut stmt = self.tx.prepare_cached(&sql)?;
            if c.embedding_model.is_some() {
                stmt.execute(params![self.vector(vector), id, model])?;
            } else {
                stmt.execute(params![self.vector(vector), id])?;
            }
            self.record_model(model, &id)?;
        }
        Ok(())
    }

    fn prune_embedding_cache(&mut self, everything: bool) -> Result<(u64, u64)> {
        let condition = if everything {
            String::new()
        } else {
            format!(
                "WHERE (model, content_sha256) NOT IN ({})",
                used_cache_keys(self.reading())
            )
        };
        let (entries, bytes): (i64, i64) = self.tx.query_row(
            &format!(
                "SELECT count(*), coalesce(sum(length(embedding)), 0) FROM {ADOPTED_CACHE} {condition}"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        self.tx
            .execute(&format!("DELETE FROM {ADOPTED_CACHE} {condition}"), [])?;
        Ok((entries as u64, bytes as u64))
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit()?;
        Ok(())
    }
}
