//! Writing into an application's tables in an SQLite file: row-level statements in one
//! `BEGIN IMMEDIATE` transaction, no change to its tables, pragmas or journal mode. Values are
//! stored the way the mapping says the application keeps them (32-hex ids, SQLAlchemy's naive
//! UTC text times, JSON text, little-endian `f32` BLOBs or JSON arrays). goldset's bookkeeping —
//! the model of each embedding and the embedding cache — lives in two tables of its own in the
//! same file (`goldset_*`), created by the first writing command.

mod difference;
mod rows;

use super::super::catalog::Catalog;
use super::super::layout::{quote_name as q, EmbeddingEncoding, Layout};
use super::super::{
    ChunkEmbeddings, ChunkText, ContentDigest, EmbeddingModel, EmbeddingUpdate, Existing,
    Inventory, Patch, RecordKind, Result, StoreError, WriteTransaction,
};
use super::cache;
use super::read::{embedding_models, inventory, used_cache_keys, Reading};
use super::{ADOPTED_CACHE, MODEL_TABLE};
use crate::model::{Analysis, Counts};
use crate::store::schema::EMBEDDING_CACHE;
use rusqlite::types::Value;
use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::HashMap;
use uuid::Uuid;

/// A write transaction on an application's tables.
pub(super) struct AdoptedWrite<'c> {
    tx: Transaction<'c>,
    layout: &'c Layout,
    /// goldset's record of each embedding's model and text digest (none on goldset's own
    /// tables, whose chunks hold the model in a column).
    model_table: Option<&'static str>,
    /// The embedding cache's table.
    cache: &'static str,
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
        if layout.owned {
            // goldset's own tables, written row by row for a replace by difference.
            return Ok(AdoptedWrite {
                tx,
                layout,
                model_table: None,
                cache: EMBEDDING_CACHE,
                catalog,
                allow_cascade: false,
            });
        }
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
            model_table: Some(MODEL_TABLE),
            cache: ADOPTED_CACHE,
            catalog,
            allow_cascade: false,
        };
        w.catalog.check_required_columns(w.layout)?;
        Ok(w)
    }

    fn reading(&self) -> Reading<'c> {
        Reading {
            layout: self.layout,
            cache: self.cache,
            model_table: self.model_table,
        }
    }
}

/// The (id, content) rows of a chunk query, ids in any of the mapping's text forms.
fn chunk_texts(mut rows: rusqlite::Rows<'_>) -> Result<Vec<ChunkText>> {
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
        if let Some(table) = self.model_table {
            self.tx.execute(&format!("DELETE FROM {table}"), [])?;
        }
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
            if let Some(table) = self.model_table {
                self.tx
                    .prepare_cached(&format!(
                        "DELETE FROM {table} WHERE chunk_id IN (SELECT {} FROM {} WHERE {} = ?1)",
                        q(&c.id),
                        q(&c.table),
                        q(&c.analysis_id)
                    ))?
                    .execute([&id])?;
            }
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
        self.stored_analyses(ids)
    }

    fn apply_patch(
        &mut self,
        patch: &Patch<'_>,
        vectors: &HashMap<Uuid, Vec<f32>>,
        model: &str,
    ) -> Result<()> {
        self.patch(patch, vectors, model)
    }

    fn delete_analyses_except(
        &mut self,
        keep: &[Uuid],
        statuses: Option<&[String]>,
    ) -> Result<Counts> {
        self.delete_others(keep, statuses)
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
        cache::lookup(&self.tx, self.cache, model, dimension, digests)
    }

    fn cached_dimension(&mut self, model: &str) -> Result<Option<usize>> {
        cache::dimension(&self.tx, self.cache, model)
    }

    fn cache_embeddings(&mut self, model: &str, entries: &[(ContentDigest, &[f32])]) -> Result<()> {
        cache::store(&self.tx, self.cache, model, entries)
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
        // A model record counts only for the text it was made from (`Reading::model`): a
        // chunk whose text changed since is found here too, as on goldset's own tables.
        let (found, join) = self.reading().model();
        let stale = match &c.embedding_sha256 {
            Some(column) => format!(
                " OR c.{} IS NOT goldset_sha256(c.{})",
                q(column),
                q(&c.content)
            ),
            None => String::new(),
        };
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT c.{id}, c.{content} FROM {table} c {join}
              WHERE c.{id} > ?1 AND (c.{emb} IS NULL OR {found} IS NOT ?2 OR {dims} <> ?3{stale})
              ORDER BY c.{id} LIMIT ?4",
            id = q(&c.id),
            content = q(&c.content),
            table = q(&c.table),
            emb = q(&c.embedding),
        ))?;
        let after = after.map(|u| l.ids.text(&u)).unwrap_or_default();
        let texts =
            chunk_texts(stmt.query(params![after, model, dimension as i64, limit as i64])?);
        texts
    }

    fn stale_chunks(&mut self, after: Option<Uuid>, limit: usize) -> Result<Vec<ChunkText>> {
        let l = self.layout;
        let c = &l.chunks;
        let (join, digest) = match (&c.embedding_sha256, self.model_table) {
            (Some(column), _) => (String::new(), format!("c.{}", q(column))),
            (None, Some(records)) => (
                format!("JOIN {records} e ON e.chunk_id = c.{}", q(&c.id)),
                "e.content_sha256".to_owned(),
            ),
            (None, None) => return Ok(Vec::new()),
        };
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT c.{id}, c.{content} FROM {table} c {join}
              WHERE c.{id} > ?1 AND c.{emb} IS NOT NULL
                AND {digest} <> goldset_sha256(c.{content})
              ORDER BY c.{id} LIMIT ?2",
            id = q(&c.id),
            content = q(&c.content),
            table = q(&c.table),
            emb = q(&c.embedding),
        ))?;
        let after = after.map(|u| l.ids.text(&u)).unwrap_or_default();
        let texts = chunk_texts(stmt.query(params![after, limit as i64])?);
        texts
    }

    fn set_embeddings(&mut self, model: &str, updates: &[EmbeddingUpdate<'_>]) -> Result<()> {
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
        for u in updates {
            let id = self.id(&u.id);
            let mut stmt = self.tx.prepare_cached(&sql)?;
            if c.embedding_model.is_some() {
                stmt.execute(params![self.vector(u.vector), id, model])?;
            } else {
                stmt.execute(params![self.vector(u.vector), id])?;
            }
            self.record_digest(model, &id, &u.text_sha256)?;
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
                "SELECT count(*), coalesce(sum(length(embedding)), 0) FROM {} {condition}",
                self.cache
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        self.tx
            .execute(&format!("DELETE FROM {} {condition}", self.cache), [])?;
        Ok((entries as u64, bytes as u64))
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit()?;
        Ok(())
    }
}
