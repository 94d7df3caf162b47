//! Writing into an application's tables (and, for a replace by difference, into goldset's own,
//! through [`Layout::own`]): row-level statements only — no DDL on them, no index
//! or constraint churn, no retyped column — in one transaction under goldset's advisory lock, so
//! the application can keep running and a failed or killed restore leaves every table as it was.
//!
//! Values travel as text and are cast to each column's own type (taken from the catalog), which
//! lets one statement per table and batch (`INSERT … SELECT … FROM unnest($1::text[], …)`) serve
//! `uuid` or text ids, `timestamptz`, `timestamp` or text times, `jsonb`, `json` or text JSON,
//! and `vector(N)`, `real[]` or `bytea` embeddings alike. goldset's bookkeeping — the model of
//! each embedding and the embedding cache — lives in a schema of its own, created by the first
//! writing command.

mod difference;
mod insert;
mod rows;

use super::super::catalog::Catalog;
use super::super::layout::{quote_name as q, Layout};
use super::super::{
    ChunkEmbeddings, ChunkText, ContentDigest, EmbeddingModel, EmbeddingUpdate, Existing,
    Inventory, Patch, RecordKind, Result, StoreError, WriteTransaction,
};
use super::cache;
use super::connect::quote;
use super::read::{embedding_models, inventory, used_cache_keys, Reading};
use super::Names;
use crate::model::{Analysis, Counts};
use postgres::types::{ToSql, Type};
use postgres::Client;
use rows::{vector_text, RecordRows};
use std::collections::HashMap;
use uuid::Uuid;

/// A write transaction on an application's tables.
pub(super) struct AdoptedWrite<'c> {
    pub(super) client: &'c mut Client,
    pub(super) names: &'c Names,
    pub(super) layout: &'c Layout,
    /// Each mapped column's type, `table.column` → `uuid`, `vector(384)`, ….
    types: HashMap<String, String>,
    catalog: Catalog,
    /// Column types by `table:columns`, for binary `COPY`.
    column_types: HashMap<String, Vec<Type>>,
    /// `--allow-cascade`: deletes may cascade into (or null out) rows outside the dataset.
    allow_cascade: bool,
    done: bool,
}

impl Drop for AdoptedWrite<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.client.batch_execute("ROLLBACK");
        }
        let _ = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.names.lock_key]);
    }
}

impl<'c> AdoptedWrite<'c> {
    /// Begins (under the restore lock the caller holds): `BEGIN`, the catalog's types, the
    /// checks of the mapping's required columns, goldset's bookkeeping tables. Any failure drops
    /// the transaction, which rolls back and gives the lock back.
    pub(super) fn begin(
        client: &'c mut Client,
        names: &'c Names,
        layout: &'c Layout,
        catalog: Catalog,
    ) -> Result<Self> {
        let mut tx = AdoptedWrite {
            client,
            names,
            layout,
            types: HashMap::new(),
            catalog,
            column_types: HashMap::new(),
            allow_cascade: false,
            done: false,
        };
        tx.client
            .batch_execute("BEGIN; SET LOCAL TimeZone = 'UTC'")?;
        for (table, columns) in layout.tables() {
            let found = tx.catalog.table(table);
            for column in columns {
                if let Some(c) = found.and_then(|t| t.column(column)) {
                    tx.types
                        .insert(format!("{table}.{column}"), c.sql_type.clone());
                }
            }
        }
        for (table, values) in &layout.fill {
            let found = tx.catalog.table(table);
            for column in values.keys() {
                let Some(c) = found.and_then(|t| t.column(column)) else {
                    return Err(StoreError::Schema(format!(
                        "mapping: fill names {table}.{column}, which does not exist"
                    )));
                };
                tx.types
                    .insert(format!("{table}.{column}"), c.sql_type.clone());
            }
        }
        tx.catalog.check_required_columns(tx.layout)?;
        if tx.bookkeeping() {
            tx.ensure_bookkeeping()?;
        }
        Ok(tx)
    }

    /// Where the SHA-256 of each embedding's text is kept, as a join (if any) and the
    /// expression that reads it for chunk `c`: the table's own column (goldset's own tables),
    /// else goldset's record beside an application's tables.
    fn provenance(&self) -> (String, String) {
        let c = &self.layout.chunks;
        match &c.embedding_sha256 {
            Some(column) => (String::new(), format!("c.{}", q(column))),
            None => (
                format!(
                    "LEFT JOIN {} p ON p.chunk_id = c.{}::text",
                    self.names.embeddings,
                    q(&c.id)
                ),
                "p.content_sha256".into(),
            ),
        }
    }

    /// Whether goldset keeps its own records beside the tables (the model and text digest of
    /// each embedding): on an application's tables. goldset's own tables, written row by row
    /// for a replace by difference, hold the model in a column of their own.
    fn bookkeeping(&self) -> bool {
        !self.layout.owned
    }

    /// goldset's schema beside the application's: the model of each embedding, the cache.
    fn ensure_bookkeeping(&mut self) -> Result<()> {
        let n = self.names;
        let exists: bool = self
            .client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL",
                &[&n.embeddings, &n.cache],
            )?
            .get(0);
        if exists {
            return Ok(());
        }
        self.client.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {embeddings} (
                 chunk_id       text PRIMARY KEY,
                 model          text NOT NULL,
                 content_sha256 bytea NOT NULL
             );
             CREATE TABLE IF NOT EXISTS {cache} (
                 model          text NOT NULL,
                 content_sha256 bytea NOT NULL,
                 embedding      bytea NOT NULL,
                 PRIMARY KEY (model, content_sha256)
             );",
            schema = quote(&n.schema),
            embeddings = n.embeddings,
            cache = n.cache
        ))?;
        Ok(())
    }

    fn reading(&self) -> Reading<'c> {
        Reading {
            layout: self.layout,
            names: self.names,
            model_table: self.bookkeeping(),
        }
    }

    /// The type of `table.column` for a cast.
    fn type_of(&self, table: &str, column: &str) -> String {
        self.types
            .get(&format!("{table}.{column}"))
            .cloned()
            .unwrap_or_else(|| "text".into())
    }

    /// `$n::text[]::TYPE[]` for a parameter of encoded ids compared with `table.column`.
    fn id_array(&self, n: usize, table: &str, column: &str) -> String {
        format!("${n}::text[]::{}[]", self.type_of(table, column))
    }

    fn ids(&self, ids: impl IntoIterator<Item = Uuid>) -> Vec<String> {
        ids.into_iter()
            .map(|id| self.layout.ids.text(&id))
            .collect()
    }
}

/// The (id, content) rows of a chunk query, ids in any of the mapping's text forms.
fn chunk_texts(rows: &[postgres::Row]) -> Result<Vec<ChunkText>> {
    rows.iter()
        .map(|r| {
            let text: String = r.get(0);
            Ok(ChunkText {
                id: Uuid::try_parse(text.trim())
                    .map_err(|e| StoreError::Corrupt(format!("chunk id {text:?}: {e}")))?,
                content: r.get(1),
            })
        })
        .collect()
}

impl WriteTransaction for AdoptedWrite<'_> {
    fn allow_cascade(&mut self, allow: bool) {
        self.allow_cascade = allow;
    }

    fn inventory(&mut self) -> Result<Inventory> {
        let reading = self.reading();
        inventory(&mut *self.client, &reading)
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
        if self.bookkeeping() {
            self.client
                .execute(&format!("DELETE FROM {}", self.names.embeddings), &[])?;
        }
        Ok(())
    }

    fn load_in_bulk_if_empty(&mut self) -> Result<bool> {
        // No bulk mode on an application's tables: rows go in one by one either way.
        Ok(self.inventory()? == Inventory::default())
    }

    fn existing(&mut self, analyses: &[Analysis]) -> Result<Vec<Existing>> {
        let l = self.layout;
        let analysis_ids = self.ids(analyses.iter().map(|a| a.id));
        let chunk_ids = self.ids(analyses.iter().flat_map(|a| a.chunks.iter().map(|c| c.id)));
        let artifact_ids = self.ids(
            analyses
                .iter()
                .filter_map(|a| a.artifact.as_ref().map(|r| r.id)),
        );
        let mut parts = vec![
            format!(
                "SELECT 0, {id}::text, {id}::text FROM {} WHERE {id} = ANY({})",
                q(&l.analyses.table),
                self.id_array(1, &l.analyses.table, &l.analyses.id),
                id = q(&l.analyses.id)
            ),
            format!(
                "SELECT 1, {}::text, {}::text FROM {} WHERE {} = ANY({})",
                q(&l.chunks.id),
                q(&l.chunks.analysis_id),
                q(&l.chunks.table),
                q(&l.chunks.id),
                self.id_array(2, &l.chunks.table, &l.chunks.id)
            ),
        ];
        if let Some(r) = &l.artifacts {
            parts.push(format!(
                "SELECT 2, {}::text, {}::text FROM {} WHERE {} = ANY({})",
                q(&r.id),
                q(&r.analysis_id),
                q(&r.table),
                q(&r.id),
                self.id_array(3, &r.table, &r.id)
            ));
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&analysis_ids, &chunk_ids];
        if l.artifacts.is_some() {
            params.push(&artifact_ids);
        }
        let rows = self.client.query(&parts.join(" UNION ALL "), &params)?;
        let parse = |text: String| {
            Uuid::try_parse(text.trim())
                .map_err(|e| StoreError::Corrupt(format!("id {text:?}: {e}")))
        };
        rows.into_iter()
            .map(|r| {
                Ok(Existing {
                    kind: match r.get::<_, i32>(0) {
                        0 => RecordKind::Analysis,
                        1 => RecordKind::Chunk,
                        _ => RecordKind::Artifact,
                    },
                    id: parse(r.get(1))?,
                    owner: parse(r.get(2))?,
                })
            })
            .collect()
    }

    fn delete_analyses(&mut self, ids: &[Uuid]) -> Result<()> {
        let l = self.layout;
        let ids = self.ids(ids.iter().copied());
        if let Some(f) = &l.findings {
            self.delete_where(&f.table, &f.analysis_id, Some(&ids))?;
        }
        let c = &l.chunks;
        if self.bookkeeping() {
            self.client.execute(
                &format!(
                    "DELETE FROM {} WHERE chunk_id IN (SELECT {}::text FROM {} WHERE {} = ANY({}))",
                    self.names.embeddings,
                    q(&c.id),
                    q(&c.table),
                    q(&c.analysis_id),
                    self.id_array(1, &c.table, &c.analysis_id)
                ),
                &[&ids],
            )?;
        }
        self.delete_where(&c.table, &c.analysis_id, Some(&ids))?;
        if let Some(r) = &l.artifacts {
            self.delete_where(&r.table, &r.analysis_id, Some(&ids))?;
        }
        self.delete_where(&l.analyses.table, &l.analyses.id, Some(&ids))
    }

    fn insert_batch(
        &mut self,
        analyses: &[Analysis],
        embeddings: Option<ChunkEmbeddings<'_>>,
    ) -> Result<()> {
        let mut rows = RecordRows::new(self.layout);
        let mut next_vector = 0;
        for analysis in analyses {
            rows.analysis(analysis);
            rows.findings(analysis);
            for chunk in &analysis.chunks {
                let vector = embeddings.map(|e| {
                    next_vector += 1;
                    (e.model, e.vectors[next_vector - 1].as_slice())
                });
                rows.chunk(analysis, chunk, vector);
            }
            rows.artifact(analysis);
        }
        self.insert_rows(rows, embeddings.map(|e| e.model))
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
        let reading = self.reading();
        embedding_models(&mut *self.client, &reading)
    }

    fn prepare_embeddings(&mut self, dimension: usize) -> Result<()> {
        let c = &self.layout.chunks;
        let column_type = self.type_of(&c.table, &c.embedding);
        let declared = column_type
            .strip_prefix("vector(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|n| n.parse::<usize>().ok());
        match declared {
            Some(n) if n != dimension => Err(StoreError::Refused(format!(
                "{}.{} is {column_type}, but the embedder makes vectors of {dimension} dimensions; \
                 choose an --embedder of {n} dimensions (goldset never retypes an application's column; nothing was changed)",
                c.table, c.embedding
            ))),
            _ => Ok(()),
        }
    }

    fn cached_embeddings(
        &mut self,
        model: &str,
        dimension: usize,
        digests: &[ContentDigest],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        cache::lookup(
            &mut *self.client,
            &self.names.cache,
            model,
            dimension,
            digests,
        )
    }

    fn cached_dimension(&mut self, model: &str) -> Result<Option<usize>> {
        cache::dimension(&mut *self.client, &self.names.cache, model)
    }

    fn cache_embeddings(&mut self, model: &str, entries: &[(ContentDigest, &[f32])]) -> Result<()> {
        cache::store(&mut *self.client, &self.names.cache, model, entries)
    }

    fn chunks_needing_embedding(
        &mut self,
        model: &str,
        dimension: usize,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ChunkText>> {
        let reading = self.reading();
        let (found, join) = reading.model();
        let c = &self.layout.chunks;
        let after = after.map(|id| self.layout.ids.text(&id));
        let id_type = self.type_of(&c.table, &c.id);
        // Where the column is vector(N) of this dimension (checked before anything is written),
        // no vector need be read — they are large, often TOASTed — to find the chunks left to
        // embed; other columns take vectors of any length, so their dimension is checked.
        let dimension_fixed =
            self.type_of(&c.table, &c.embedding) == format!("vector({dimension})");
        let dims = if dimension_fixed {
            String::new()
        } else {
            format!(" OR {} IS DISTINCT FROM $4", reading.dimension())
        };
        // A vector made from another text than the chunk's current one is stale (on goldset's
        // own tables, one of unknown provenance is embedded again too).
        // Where the model comes from goldset's record, `Reading::model` already counts a record
        // only for the text it was made from; otherwise the digest is compared here.
        let (provenance, stale) = if c.embedding_model.is_none() && self.bookkeeping() {
            (String::new(), String::new())
        } else {
            let (join, digest) = self.provenance();
            let unequal = if c.embedding_sha256.is_some() {
                "IS DISTINCT FROM"
            } else {
                "<>"
            };
            (
                join,
                format!(
                    " OR {digest} {unequal} sha256(convert_to(c.{}, 'UTF8'))",
                    q(&c.content)
                ),
            )
        };
        let sql = format!(
            "SELECT c.{id}::text, c.{content} FROM {table} c {join} {provenance}
              WHERE ($1::text IS NULL OR c.{id} > $1::text::{id_type})
                AND (c.{emb} IS NULL OR {found} IS DISTINCT FROM $2{dims}{stale})
              ORDER BY c.{id} LIMIT $3",
            id = q(&c.id),
            content = q(&c.content),
            table = q(&c.table),
            emb = q(&c.embedding),
        );
        let (limit, dimension) = (limit as i64, dimension as i32);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after, &model, &limit];
        if !dimension_fixed {
            params.push(&dimension);
        }
        chunk_texts(&self.client.query(&sql, &params)?)
    }

    fn stale_chunks(&mut self, after: Option<Uuid>, limit: usize) -> Result<Vec<ChunkText>> {
        let c = &self.layout.chunks;
        let after = after.map(|id| self.layout.ids.text(&id));
        let (provenance, digest) = self.provenance();
        let sql = format!(
            "SELECT c.{id}::text, c.{content} FROM {table} c {provenance}
              WHERE ($1::text IS NULL OR c.{id} > $1::text::{id_type}) AND c.{emb} IS NOT NULL
                AND {digest} <> sha256(convert_to(c.{content}, 'UTF8'))
              ORDER BY c.{id} LIMIT $2",
            id = q(&c.id),
            content = q(&c.content),
            table = q(&c.table),
            emb = q(&c.embedding),
            id_type = self.type_of(&c.table, &c.id),
        );
        chunk_texts(&self.client.query(&sql, &[&after, &(limit as i64)])?)
    }

    fn set_embeddings(&mut self, model: &str, updates: &[EmbeddingUpdate<'_>]) -> Result<()> {
        let l = self.layout;
        let c = &l.chunks;
        let ids: Vec<String> = updates.iter().map(|u| l.ids.text(&u.id)).collect();
        let vectors: Vec<String> = updates
            .iter()
            .map(|u| vector_text(u.vector, l.embedding))
            .collect();
        let model_set = match &c.embedding_model {
            Some(column) => format!(", {} = $3", q(column)),
            None => String::new(),
        };
        // The model goes in its column where the application has one (else into goldset's
        // record, below): a parameter the statement does not use is refused.
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ids, &vectors];
        if c.embedding_model.is_some() {
            params.push(&model);
        }
        self.client.execute(
            &format!(
                "UPDATE {table} AS c SET {emb} = u.e::{emb_type}{model_set}
                   FROM unnest($1::text[], $2::text[]) AS u (id, e)
                  WHERE c.{id} = u.id::{id_type}",
                table = q(&c.table),
                emb = q(&c.embedding),
                emb_type = self.type_of(&c.table, &c.embedding),
                id = q(&c.id),
                id_type = self.type_of(&c.table, &c.id),
            ),
            &params[..],
        )?;
        let digests: Vec<(Uuid, ContentDigest)> =
            updates.iter().map(|u| (u.id, u.text_sha256)).collect();
        self.record_digests(model, &digests)
    }

    fn prune_embedding_cache(&mut self, everything: bool) -> Result<(u64, u64)> {
        let condition = if everything {
            ""
        } else {
            "WHERE NOT EXISTS (SELECT 1 FROM used u WHERE u.model = c.model AND u.digest = c.content_sha256)"
        };
        let reading = self.reading();
        let row = self.client.query_one(
            &format!(
                "WITH used AS ({}),
                      gone AS (DELETE FROM {} c {condition} RETURNING octet_length(c.embedding) AS bytes)
                 SELECT count(*), coalesce(sum(bytes), 0)::bigint FROM gone",
                used_cache_keys(&reading),
                self.names.cache
            ),
            &[],
        )?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        self.client.batch_execute("COMMIT")?;
        self.done = true;
        Ok(())
    }
}
