//! Writing into an application's tables: row-level statements only — no DDL on them, no index
//! or constraint churn, no retyped column — in one transaction under goldset's advisory lock, so
//! the application can keep running and a failed or killed restore leaves every table as it was.
//!
//! Values travel as text and are cast to each column's own type (taken from the catalog), which
//! lets one statement per table and batch (`INSERT … SELECT … FROM unnest($1::text[], …)`) serve
//! `uuid` or text ids, `timestamptz`, `timestamp` or text times, `jsonb`, `json` or text JSON,
//! and `vector(N)`, `real[]` or `bytea` embeddings alike. goldset's bookkeeping — the model of
//! each embedding and the embedding cache — lives in a schema of its own, created by the first
//! writing command.

use super::super::catalog::Catalog;
use super::super::layout::{quote_name as q, EmbeddingEncoding, Layout, TimeEncoding};
use super::super::{
    blob_to_vector, vector_to_blob, ChunkEmbeddings, ChunkText, ContentDigest, Dependent,
    EmbeddingModel, Existing, Inventory, RecordKind, Result, StoreError, WriteTransaction,
};
use super::connect::quote;
use super::read::{embedding_models, inventory, used_cache_keys, Reading};
use super::Names;
use crate::model::Analysis;
use postgres::types::ToSql;
use postgres::Client;
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

/// A vector as the text PostgreSQL casts to the column's type.
fn vector_text(v: &[f32], encoding: EmbeddingEncoding) -> String {
    let numbers = || v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
    match encoding {
        EmbeddingEncoding::Vector | EmbeddingEncoding::Json => format!("[{}]", numbers()),
        EmbeddingEncoding::RealArray => format!("{{{}}}", numbers()),
        EmbeddingEncoding::F32Le => {
            let hex: String = vector_to_blob(v)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("\\x{hex}")
        }
    }
}

/// A value as JSON text (the records' JSON parts always serialize).
fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("JSON values serialize")
}

/// Columns of one table and a text value per row for each: one `INSERT … SELECT … unnest`.
struct Rows {
    table: String,
    columns: Vec<String>,
    values: Vec<Vec<Option<String>>>,
}

impl Rows {
    fn new(table: &str, columns: &[&str]) -> Self {
        Rows {
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            values: vec![Vec::new(); columns.len()],
        }
    }

    fn push(&mut self, row: Vec<Option<String>>) {
        for (column, value) in self.values.iter_mut().zip(row) {
            column.push(value);
        }
    }
}

impl<'c> AdoptedWrite<'c> {
    /// Begins: the restore lock, `BEGIN`, goldset's bookkeeping tables, the catalog's types.
    pub(super) fn begin(
        client: &'c mut Client,
        names: &'c Names,
        layout: &'c Layout,
        catalog: Catalog,
    ) -> Result<Self> {
        client.batch_execute("BEGIN; SET LOCAL TimeZone = 'UTC'")?;
        let mut types = HashMap::new();
        for (table, columns) in layout.tables() {
            let found = catalog.table(table);
            for column in columns {
                if let Some(c) = found.and_then(|t| t.column(column)) {
                    types.insert(format!("{table}.{column}"), c.sql_type.clone());
                }
            }
        }
        for (table, values) in &layout.fill {
            let found = catalog.table(table);
            for column in values.keys() {
                let Some(c) = found.and_then(|t| t.column(column)) else {
                    return Err(StoreError::Schema(format!(
                        "mapping: fill names {table}.{column}, which does not exist"
                    )));
                };
                types.insert(format!("{table}.{column}"), c.sql_type.clone());
            }
        }
        let mut tx = AdoptedWrite {
            client,
            names,
            layout,
            types,
            catalog,
            done: false,
        };
        tx.check_required_columns()?;
        tx.ensure_bookkeeping()?;
        Ok(tx)
    }

    /// A NOT NULL column without a default outside the mapping (and not filled) would fail the
    /// first insert: say which before anything is written.
    fn check_required_columns(&self) -> Result<()> {
        let mut missing = Vec::new();
        for (table, columns) in self.layout.tables() {
            let Some(t) = self.catalog.table(table) else {
                continue;
            };
            let filled = self.layout.fill.get(table);
            for c in &t.columns {
                if c.not_null
                    && !c.has_default
                    && !columns.contains(&c.name.as_str())
                    && !filled.is_some_and(|f| f.contains_key(&c.name))
                {
                    missing.push(format!("{}.{}", t.name, c.name));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::Refused(format!(
            "{} NOT NULL with no default and not in the mapping: give a value in [mapping.fill.\"TABLE\"] (nothing was changed)",
            missing.join(", ")
        )))
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
            model_table: true,
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

    /// Inserts `rows` with one statement, each value cast to its column's type; `fill` adds the
    /// mapping's constants for the table.
    fn insert(&mut self, rows: Rows) -> Result<()> {
        if rows.values.first().is_none_or(|v| v.is_empty()) {
            return Ok(());
        }
        let mut columns: Vec<String> = rows.columns.iter().map(|c| q(c)).collect();
        let mut selects: Vec<String> = rows
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("u.c{i}::{}", self.type_of(&rows.table, c)))
            .collect();
        let fill: Vec<(&String, &String)> = self
            .layout
            .fill
            .get(&rows.table)
            .map(|f| f.iter().collect())
            .unwrap_or_default();
        let arrays = rows.values.len();
        for (i, (column, _)) in fill.iter().enumerate() {
            columns.push(q(column));
            selects.push(format!(
                "${}::text::{}",
                arrays + i + 1,
                self.type_of(&rows.table, column)
            ));
        }
        let unnest: Vec<String> = (1..=arrays).map(|i| format!("${i}::text[]")).collect();
        let names: Vec<String> = (0..arrays).map(|i| format!("c{i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u ({})",
            q(&rows.table),
            columns.join(", "),
            selects.join(", "),
            unnest.join(", "),
            names.join(", ")
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = rows
            .values
            .iter()
            .map(|v| v as &(dyn ToSql + Sync))
            .collect();
        for (_, value) in &fill {
            params.push(*value);
        }
        self.client.execute(&sql, &params)?;
        Ok(())
    }

    /// Deletes the rows of `table` whose `column` is one of `ids` (all rows with `None`).
    fn delete_where(&mut self, table: &str, column: &str, ids: Option<&[String]>) -> Result<()> {
        match ids {
            None => {
                self.client
                    .execute(&format!("DELETE FROM {}", q(table)), &[])?;
            }
            Some(ids) => {
                let sql = format!(
                    "DELETE FROM {} WHERE {} = ANY({})",
                    q(table),
                    q(column),
                    self.id_array(1, table, column)
                );
                self.client.execute(&sql, &[&ids])?;
            }
        }
        Ok(())
    }

    /// Records which model embedded these chunks (by the chunks' own ids).
    fn record_models(&mut self, model: &str, chunk_ids: &[String]) -> Result<()> {
        if chunk_ids.is_empty() {
            return Ok(());
        }
        let c = &self.layout.chunks;
        let sql = format!(
            "INSERT INTO {e} (chunk_id, model, content_sha256)
             SELECT c.{id}::text, $1, sha256(convert_to(c.{content}, 'UTF8'))
               FROM {table} c WHERE c.{id} = ANY({ids})
             ON CONFLICT (chunk_id) DO UPDATE
                SET model = EXCLUDED.model, content_sha256 = EXCLUDED.content_sha256",
            e = self.names.embeddings,
            id = q(&c.id),
            content = q(&c.content),
            table = q(&c.table),
            ids = self.id_array(2, &c.table, &c.id)
        );
        self.client.execute(&sql, &[&model, &chunk_ids])?;
        Ok(())
    }
}

impl WriteTransaction for AdoptedWrite<'_> {
    fn dependents(&mut self) -> Result<Vec<Dependent>> {
        let mapped: Vec<String> = self
            .layout
            .tables()
            .iter()
            .filter_map(|(t, _)| self.catalog.table(t).map(|x| x.name.clone()))
            .collect();
        let keys: Vec<_> = self
            .catalog
            .foreign_keys
            .iter()
            .filter(|k| mapped.contains(&k.to_table) && !mapped.contains(&k.from_table))
            .cloned()
            .collect();
        let mut found = Vec::new();
        for key in keys {
            let condition: Vec<String> = key
                .from_columns
                .iter()
                .map(|c| format!("{} IS NOT NULL", q(c)))
                .collect();
            let rows: i64 = self
                .client
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {} WHERE {}",
                        q(&key.from_table),
                        condition.join(" AND ")
                    ),
                    &[],
                )?
                .get(0);
            if rows > 0 {
                found.push(Dependent {
                    table: key.from_table,
                    references: key.to_table,
                    on_delete: key.on_delete,
                    rows: rows as u64,
                });
            }
        }
        Ok(found)
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
        self.client
            .execute(&format!("DELETE FROM {}", self.names.embeddings), &[])?;
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
        let l = self.layout;
        let enc = |id: &Uuid| Some(l.ids.text(id));
        let a = &l.analyses;
        let mut analysis_columns = vec![
            a.id.as_str(),
            &a.url,
            &a.content_type,
            &a.status,
            &a.created_at,
        ];
        analysis_columns.extend(a.findings.as_deref());
        let mut analysis_rows = Rows::new(&a.table, &analysis_columns);
        let c = &l.chunks;
        let mut chunk_columns = vec![
            c.id.as_str(),
            &c.analysis_id,
            &c.chunk_index,
            &c.content,
            &c.content_type,
            &c.embedding,
        ];
        chunk_columns.extend(c.section_title.as_deref());
        chunk_columns.extend(c.section_path.as_deref());
        chunk_columns.extend(c.embedding_model.as_deref());
        let mut chunk_rows = Rows::new(&c.table, &chunk_columns);
        let mut finding_rows = l.findings.as_ref().map(|f| {
            let mut columns = vec![
                f.analysis_id.as_str(),
                &f.position,
                &f.agent,
                &f.category,
                &f.content,
                &f.confidence,
            ];
            columns.extend(f.metadata.as_deref());
            Rows::new(&f.table, &columns)
        });
        let mut artifact_rows = l.artifacts.as_ref().map(|r| {
            Rows::new(
                &r.table,
                &[
                    r.id.as_str(),
                    &r.analysis_id,
                    &r.summary,
                    &r.key_findings,
                    &r.metadata,
                ],
            )
        });
        let mut embedded_ids = Vec::new();
        let mut next_vector = 0;
        for analysis in analyses {
            let mut row = vec![
                enc(&analysis.id),
                Some(analysis.url.clone()),
                Some(analysis.content_type.clone()),
                Some(l.status_to_store(&analysis.status).to_owned()),
                Some(match l.timestamps {
                    TimeEncoding::Text => analysis.created_at.naive_utc_text(),
                    _ => analysis.created_at.to_string(),
                }),
            ];
            if a.findings.is_some() {
                row.push(Some(json_text(&analysis.findings)));
            }
            analysis_rows.push(row);
            if let (Some(rows), Some(f)) = (&mut finding_rows, &l.findings) {
                for (i, finding) in analysis.findings.iter().enumerate() {
                    let mut row = vec![
                        enc(&analysis.id),
                        Some(i.to_string()),
                        Some(finding.agent.clone()),
                        Some(finding.category.clone()),
                        Some(finding.content.clone()),
                        Some(finding.confidence.to_string()),
                    ];
                    if f.metadata.is_some() {
                        // A row holds `{}` for "no metadata" (the column may be NOT NULL).
                        row.push(Some(
                            finding
                                .metadata
                                .as_ref()
                                .map_or_else(|| "{}".to_owned(), json_text),
                        ));
                    }
                    rows.push(row);
                }
            }
            for chunk in &analysis.chunks {
                let vector = embeddings.map(|e| {
                    let v = &e.vectors[next_vector];
                    next_vector += 1;
                    vector_text(v, l.embedding)
                });
                if vector.is_some() {
                    embedded_ids.push(l.ids.text(&chunk.id));
                }
                let mut row = vec![
                    enc(&chunk.id),
                    enc(&analysis.id),
                    Some(chunk.chunk_index.to_string()),
                    Some(chunk.content.clone()),
                    Some(chunk.content_type.clone()),
                    vector,
                ];
                if c.section_title.is_some() {
                    row.push(chunk.section_title.clone());
                }
                if c.section_path.is_some() {
                    row.push(chunk.section_path.clone());
                }
                if c.embedding_model.is_some() {
                    row.push(embeddings.map(|e| e.model.to_owned()));
                }
                chunk_rows.push(row);
            }
            if let (Some(rows), Some(artifact)) = (&mut artifact_rows, &analysis.artifact) {
                rows.push(vec![
                    enc(&artifact.id),
                    enc(&analysis.id),
                    artifact.summary.clone(),
                    Some(json_text(&artifact.key_findings)),
                    Some(json_text(&artifact.metadata)),
                ]);
            }
        }
        // Parents first: the application's foreign keys are checked row by row.
        self.insert(analysis_rows)?;
        if let Some(rows) = finding_rows {
            self.insert(rows)?;
        }
        self.insert(chunk_rows)?;
        if let Some(rows) = artifact_rows {
            self.insert(rows)?;
        }
        if let Some(e) = embeddings {
            self.record_models(e.model, &embedded_ids)?;
        }
        Ok(())
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
        let keys: Vec<&[u8]> = digests.iter().map(|d| &d[..]).collect();
        let rows = self.client.query(
            &format!(
                "SELECT content_sha256, embedding FROM {} WHERE model = $1 AND content_sha256 = ANY($2)",
                self.names.cache
            ),
            &[&model, &keys],
        )?;
        let found: HashMap<Vec<u8>, Vec<u8>> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(digests
            .iter()
            .map(|d| {
                found
                    .get(&d[..])
                    .filter(|b| b.len() == dimension * 4)
                    .map(|b| blob_to_vector(b))
            })
            .collect())
    }

    fn cache_embeddings(&mut self, model: &str, entries: &[(ContentDigest, &[f32])]) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let (keys, blobs): (Vec<&[u8]>, Vec<Vec<u8>>) = entries
            .iter()
            .filter(|(d, _)| seen.insert(*d))
            .map(|(d, v)| (&d[..], vector_to_blob(v)))
            .unzip();
        self.client.execute(
            &format!(
                "INSERT INTO {} (model, content_sha256, embedding)
                 SELECT $1, d, e FROM unnest($2::bytea[], $3::bytea[]) AS u (d, e)
                 ON CONFLICT (model, content_sha256) DO UPDATE SET embedding = EXCLUDED.embedding",
                self.names.cache
            ),
            &[&model, &keys, &blobs],
        )?;
        Ok(())
    }

    fn chunks_needing_embedding(
        &mut self,
        model: &str,
        dimension: usize,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ChunkText>> {
        let reading = self.reading();
        let c = &self.layout.chunks;
        let after = after.map(|id| self.layout.ids.text(&id));
        let id_type = self.type_of(&c.table, &c.id);
        let sql = format!(
            "SELECT c.{id}::text, c.{content} FROM {table} c LEFT JOIN {e} e ON e.chunk_id = c.{id}::text
              WHERE ($1::text IS NULL OR c.{id} > $1::text::{id_type})
                AND (c.{emb} IS NULL OR e.model IS DISTINCT FROM $2 OR {dims} <> $3)
              ORDER BY c.{id} LIMIT $4",
            id = q(&c.id),
            content = q(&c.content),
            table = q(&c.table),
            e = self.names.embeddings,
            emb = q(&c.embedding),
            dims = reading.dimension(),
        );
        let rows = self.client.query(
            &sql,
            &[&after, &model, &(dimension as i32), &(limit as i64)],
        )?;
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

    fn set_embeddings(&mut self, model: &str, updates: &[(Uuid, &[f32])]) -> Result<()> {
        let l = self.layout;
        let c = &l.chunks;
        let ids: Vec<String> = updates.iter().map(|(id, _)| l.ids.text(id)).collect();
        let vectors: Vec<String> = updates
            .iter()
            .map(|(_, v)| vector_text(v, l.embedding))
            .collect();
        let model_set = match &c.embedding_model {
            Some(column) => format!(", {} = $3", q(column)),
            None => String::new(),
        };
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
            &[&ids, &vectors, &model],
        )?;
        self.record_models(model, &ids)
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
