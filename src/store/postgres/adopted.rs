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

use super::super::catalog::{cascade_refusal, Catalog, ForeignKey};
use super::super::layout::{quote_name as q, EmbeddingEncoding, Layout, TimeEncoding};
use super::super::{
    blob_to_vector, vector_to_blob, ChunkEmbeddings, ChunkText, ContentDigest, EmbeddingModel,
    Existing, Inventory, Patch, RecordKind, Result, StoreError, WriteTransaction,
};
use super::connect::quote;
use super::copy::BinaryRows;
use super::decode;
use super::read::{embedding_models, inventory, used_cache_keys, Reading};
use super::Names;
use crate::model::{Analysis, Chunk, Counts};
use pgvector::Vector;
use postgres::types::{IsNull, Json, ToSql, Type};
use postgres::Client;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use time::{OffsetDateTime, PrimitiveDateTime};
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

/// A vector from the text PostgreSQL gives for the column (`[1,2]`, `{1,2}`, or hex bytes).
fn parse_vector(text: &str, encoding: EmbeddingEncoding) -> Option<Vec<f32>> {
    if encoding == EmbeddingEncoding::F32Le {
        let bytes: Option<Vec<u8>> = (0..text.len() / 2)
            .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        return Some(blob_to_vector(&bytes?));
    }
    let inner = text
        .trim()
        .trim_start_matches(['[', '{'])
        .trim_end_matches([']', '}']);
    inner.split(',').map(|x| x.trim().parse().ok()).collect()
}

/// One value of a row, typed, before it is encoded for a column of the application's type.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Json(serde_json::Value),
    Id(Uuid),
    Time(crate::timestamp::Timestamp),
    Vector(Vec<f32>),
}

impl Cell {
    fn json<T: serde::Serialize>(value: &T) -> Cell {
        Cell::Json(serde_json::to_value(value).expect("JSON values serialize"))
    }

    fn text_or_null(value: &Option<String>) -> Cell {
        value.clone().map_or(Cell::Null, Cell::Text)
    }

    /// The value as text, for a cast to the column's type.
    fn text(&self, layout: &Layout) -> Option<String> {
        Some(match self {
            Cell::Null => return None,
            Cell::Text(t) => t.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => f.to_string(),
            Cell::Json(v) => v.to_string(),
            Cell::Id(id) => layout.ids.text(id),
            Cell::Time(t) => match layout.timestamps {
                TimeEncoding::Text => t.naive_utc_text(),
                _ => t.to_string(),
            },
            Cell::Vector(v) => vector_text(v, layout.embedding),
        })
    }

    /// The value for a column of type `ty` in binary `COPY`, or `None` when this kind of value
    /// does not go into that type without a cast (the text path then does it).
    fn typed(&self, ty: &Type, layout: &Layout) -> Option<Box<dyn ToSql + Sync>> {
        let text_type = matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME);
        Some(match (self, ty) {
            (Cell::Null, _) => Box::new(Null),
            (Cell::Id(id), &Type::UUID) => Box::new(*id),
            (Cell::Int(i), &Type::INT2) => Box::new(i16::try_from(*i).ok()?),
            (Cell::Int(i), &Type::INT4) => Box::new(i32::try_from(*i).ok()?),
            (Cell::Int(i), &Type::INT8) => Box::new(*i),
            (Cell::Float(f), &Type::FLOAT8) => Box::new(*f),
            (Cell::Json(v), &Type::JSON | &Type::JSONB) => Box::new(Json(v.clone())),
            (Cell::Time(t), &Type::TIMESTAMPTZ) => {
                let nanos = i128::from(t.unix_micros()) * 1000;
                Box::new(OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?)
            }
            (Cell::Time(t), &Type::TIMESTAMP) => {
                let nanos = i128::from(t.unix_micros()) * 1000;
                let utc = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
                Box::new(PrimitiveDateTime::new(utc.date(), utc.time()))
            }
            (Cell::Vector(v), ty) if ty.name() == "vector" => Box::new(Vector::from(v.clone())),
            (Cell::Vector(v), &Type::FLOAT4_ARRAY) => Box::new(v.clone()),
            (Cell::Vector(v), &Type::BYTEA) => Box::new(vector_to_blob(v)),
            (Cell::Float(_) | Cell::Vector(_), _) => return None,
            (cell, _) if text_type => Box::new(cell.text(layout)?),
            _ => return None,
        })
    }
}

/// NULL, for a column of any type.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Columns of one table and the rows to insert into them.
struct Rows {
    table: String,
    columns: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl Rows {
    fn new(table: &str, columns: &[&str]) -> Self {
        Rows {
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }
}

/// The rows of some records, per mapped table, as text (see [`AdoptedWrite::insert_rows`]).
struct RecordRows<'l> {
    layout: &'l Layout,
    analyses: Rows,
    findings: Option<Rows>,
    chunks: Rows,
    artifacts: Option<Rows>,
    /// Chunks given an embedding, with the SHA-256 of their text.
    embedded: Vec<(Uuid, [u8; 32])>,
}

impl<'l> RecordRows<'l> {
    fn new(layout: &'l Layout) -> Self {
        let a = &layout.analyses;
        let mut analysis_columns = vec![
            a.id.as_str(),
            &a.url,
            &a.content_type,
            &a.status,
            &a.created_at,
        ];
        analysis_columns.extend(a.findings.as_deref());
        let c = &layout.chunks;
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
        RecordRows {
            layout,
            analyses: Rows::new(&a.table, &analysis_columns),
            findings: layout.findings.as_ref().map(|f| {
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
            }),
            chunks: Rows::new(&c.table, &chunk_columns),
            artifacts: layout.artifacts.as_ref().map(|r| {
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
            }),
            embedded: Vec::new(),
        }
    }

    /// The analysis row's values, in [`RecordRows::new`]'s column order.
    fn analysis_values(&self, analysis: &Analysis) -> Vec<Cell> {
        let l = self.layout;
        let mut row = vec![
            Cell::Id(analysis.id),
            Cell::Text(analysis.url.clone()),
            Cell::Text(analysis.content_type.clone()),
            Cell::Text(l.status_to_store(&analysis.status).to_owned()),
            Cell::Time(analysis.created_at),
        ];
        if l.analyses.findings.is_some() {
            row.push(Cell::json(&analysis.findings));
        }
        row
    }

    fn analysis(&mut self, analysis: &Analysis) {
        let row = self.analysis_values(analysis);
        self.analyses.push(row);
    }

    /// The analysis's findings, where they are rows of their own.
    fn findings(&mut self, analysis: &Analysis) {
        let with_metadata = self
            .layout
            .findings
            .as_ref()
            .is_some_and(|f| f.metadata.is_some());
        let Some(rows) = &mut self.findings else {
            return;
        };
        for (i, finding) in analysis.findings.iter().enumerate() {
            let mut row = vec![
                Cell::Id(analysis.id),
                Cell::Int(i as i64),
                Cell::Text(finding.agent.clone()),
                Cell::Text(finding.category.clone()),
                Cell::Text(finding.content.clone()),
                Cell::Float(finding.confidence),
            ];
            if with_metadata {
                // A row holds `{}` for "no metadata" (the column may be NOT NULL).
                row.push(match &finding.metadata {
                    Some(m) => Cell::json(m),
                    None => Cell::Json(serde_json::Value::Object(Default::default())),
                });
            }
            rows.push(row);
        }
    }

    fn chunk(&mut self, analysis: &Analysis, chunk: &Chunk, vector: Option<(&str, &[f32])>) {
        let c = &self.layout.chunks;
        if let Some((_, _)) = vector {
            self.embedded
                .push((chunk.id, Sha256::digest(chunk.content.as_bytes()).into()));
        }
        let mut row = vec![
            Cell::Id(chunk.id),
            Cell::Id(analysis.id),
            Cell::Int(chunk.chunk_index),
            Cell::Text(chunk.content.clone()),
            Cell::Text(chunk.content_type.clone()),
            vector.map_or(Cell::Null, |(_, v)| Cell::Vector(v.to_vec())),
        ];
        if c.section_title.is_some() {
            row.push(Cell::text_or_null(&chunk.section_title));
        }
        if c.section_path.is_some() {
            row.push(Cell::text_or_null(&chunk.section_path));
        }
        if c.embedding_model.is_some() {
            row.push(vector.map_or(Cell::Null, |(model, _)| Cell::Text(model.to_owned())));
        }
        self.chunks.push(row);
    }

    fn artifact(&mut self, analysis: &Analysis) {
        let (Some(rows), Some(artifact)) = (&mut self.artifacts, &analysis.artifact) else {
            return;
        };
        rows.push(vec![
            Cell::Id(artifact.id),
            Cell::Id(analysis.id),
            Cell::text_or_null(&artifact.summary),
            Cell::json(&artifact.key_findings),
            Cell::json(&artifact.metadata),
        ]);
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
            column_types: HashMap::new(),
            allow_cascade: false,
            done: false,
        };
        tx.catalog.check_required_columns(tx.layout)?;
        tx.ensure_bookkeeping()?;
        Ok(tx)
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
        if rows.rows.is_empty() {
            return Ok(());
        }
        if self.layout.fill.contains_key(&rows.table) {
            return self.insert_as_text(rows);
        }
        let types = self.column_types(&rows.table, &rows.columns)?;
        let columns: Vec<&str> = rows.columns.iter().map(String::as_str).collect();
        let mut data = BinaryRows::new(Vec::new(), &columns, types.clone());
        for row in &rows.rows {
            let typed: Option<Vec<Box<dyn ToSql + Sync>>> = row
                .iter()
                .zip(&types)
                .map(|(cell, ty)| cell.typed(ty, self.layout))
                .collect();
            let Some(typed) = typed else {
                // A type binary COPY cannot fill from this value: let the server cast text.
                return self.insert_as_text(rows);
            };
            let values: Vec<&(dyn ToSql + Sync)> = typed.iter().map(|v| v.as_ref()).collect();
            data.write(&values)?;
        }
        let data = data.finish()?;
        let quoted: Vec<String> = rows.columns.iter().map(|c| q(c)).collect();
        let mut writer = self.client.copy_in(&format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            q(&rows.table),
            quoted.join(", ")
        ))?;
        std::io::Write::write_all(&mut writer, &data).map_err(super::copy::io_error)?;
        writer.finish()?;
        Ok(())
    }

    /// The types of `columns` of `table`, as the server describes them (looked up once).
    fn column_types(&mut self, table: &str, columns: &[String]) -> Result<Vec<Type>> {
        let key = format!("{table}:{}", columns.join(","));
        if let Some(types) = self.column_types.get(&key) {
            return Ok(types.clone());
        }
        let quoted: Vec<String> = columns.iter().map(|c| q(c)).collect();
        let statement = self.client.prepare(&format!(
            "SELECT {} FROM {} WHERE false",
            quoted.join(", "),
            q(table)
        ))?;
        let types: Vec<Type> = statement
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        self.column_types.insert(key, types.clone());
        Ok(types)
    }

    /// Inserts `rows` as text cast to each column's type, with the mapping's fill constants:
    /// one `INSERT … SELECT … FROM unnest(…)`.
    fn insert_as_text(&mut self, rows: Rows) -> Result<()> {
        let layout = self.layout;
        let values: Vec<Vec<Option<String>>> = (0..rows.columns.len())
            .map(|i| rows.rows.iter().map(|r| r[i].text(layout)).collect())
            .collect();
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
        let arrays = values.len();
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
        let mut params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        for (_, value) in &fill {
            params.push(*value);
        }
        self.client.execute(&sql, &params)?;
        Ok(())
    }

    /// Deletes the rows of `table` whose `column` is one of `ids` (all rows with `None`).
    fn delete_where(&mut self, table: &str, column: &str, ids: Option<&[String]>) -> Result<()> {
        self.check_cascades(table, column, ids)?;
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

    /// Before rows of `table` are deleted: refuses when rows of a table outside the dataset
    /// reference them, unless the user allowed the cascade (and the key allows the delete).
    fn check_cascades(&mut self, table: &str, column: &str, ids: Option<&[String]>) -> Result<()> {
        let mapped: Vec<&str> = self.layout.tables().iter().map(|(t, _)| *t).collect();
        let keys: Vec<ForeignKey> = self
            .catalog
            .references_into(table, &mapped)
            .into_iter()
            .cloned()
            .collect();
        for key in keys {
            let (filter, rows): (String, i64) = match ids {
                None => {
                    let sql = self.catalog.referencing_rows_sql(&key, table, "");
                    (sql.clone(), self.client.query_one(&sql, &[])?.get(0))
                }
                Some(ids) => {
                    let filter = format!(
                        "WHERE t.{} = ANY({})",
                        q(column),
                        self.id_array(1, table, column)
                    );
                    let sql = self.catalog.referencing_rows_sql(&key, table, &filter);
                    (sql.clone(), self.client.query_one(&sql, &[&ids])?.get(0))
                }
            };
            tracing::debug!(
                sql = filter,
                rows,
                "rows outside the dataset referencing a delete"
            );
            if let Some(refusal) = cascade_refusal(&key, rows, self.allow_cascade) {
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// Inserts `rows`, parents first (the application's foreign keys are checked row by row),
    /// and records the model of the embedded chunks.
    fn insert_rows(&mut self, rows: RecordRows<'_>, model: Option<&str>) -> Result<()> {
        let RecordRows {
            analyses,
            findings,
            chunks,
            artifacts,
            embedded,
            ..
        } = rows;
        self.insert(analyses)?;
        if let Some(rows) = findings {
            self.insert(rows)?;
        }
        self.insert(chunks)?;
        if let Some(rows) = artifacts {
            self.insert(rows)?;
        }
        match model {
            Some(model) => self.record_digests(model, &embedded),
            None => Ok(()),
        }
    }

    /// Updates a stored chunk in place (same id, same analysis, same position): its text and
    /// section fields, and its embedding when `vector` is given.
    fn update_chunk(&mut self, chunk: &Chunk, vector: Option<&[f32]>, model: &str) -> Result<()> {
        let l = self.layout;
        let c = &l.chunks;
        let mut sets: Vec<(&str, Option<String>)> = vec![
            (&c.content, Some(chunk.content.clone())),
            (&c.content_type, Some(chunk.content_type.clone())),
        ];
        if let Some(column) = &c.section_title {
            sets.push((column, chunk.section_title.clone()));
        }
        if let Some(column) = &c.section_path {
            sets.push((column, chunk.section_path.clone()));
        }
        if let Some(v) = vector {
            sets.push((&c.embedding, Some(vector_text(v, l.embedding))));
            if let Some(column) = &c.embedding_model {
                sets.push((column, Some(model.to_owned())));
            }
        }
        let assignments: Vec<String> = sets
            .iter()
            .enumerate()
            .map(|(i, (column, _))| {
                format!(
                    "{} = ${}::text::{}",
                    q(column),
                    i + 2,
                    self.type_of(&c.table, column)
                )
            })
            .collect();
        let sql = format!(
            "UPDATE {} SET {} WHERE {} = $1::text::{}",
            q(&c.table),
            assignments.join(", "),
            q(&c.id),
            self.type_of(&c.table, &c.id)
        );
        let id = Some(l.ids.text(&chunk.id));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id];
        params.extend(sets.iter().map(|(_, v)| v as &(dyn ToSql + Sync)));
        self.client.execute(&sql, &params)?;
        if vector.is_some() {
            self.record_models(model, &[l.ids.text(&chunk.id)])?;
        }
        Ok(())
    }

    /// Rewrites an analysis's own row (url, content type, status, time, JSON findings).
    fn update_analysis_row(&mut self, analysis: &Analysis) -> Result<()> {
        let l = self.layout;
        let a = &l.analyses;
        let mut columns = vec![
            a.id.as_str(),
            &a.url,
            &a.content_type,
            &a.status,
            &a.created_at,
        ];
        columns.extend(a.findings.as_deref());
        let values: Vec<Option<String>> = RecordRows::new(l)
            .analysis_values(analysis)
            .iter()
            .map(|cell| cell.text(l))
            .collect();
        let sets: Vec<String> = columns
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, c)| format!("{} = ${}::text::{}", q(c), i + 1, self.type_of(&a.table, c)))
            .collect();
        let sql = format!(
            "UPDATE {} SET {} WHERE {} = $1::text::{}",
            q(&a.table),
            sets.join(", "),
            q(&a.id),
            self.type_of(&a.table, &a.id)
        );
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.client.execute(&sql, &params)?;
        Ok(())
    }

    /// Records which model embedded these chunks, and the SHA-256 of the text it embedded.
    fn record_digests(&mut self, model: &str, chunks: &[(Uuid, [u8; 32])]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = chunks
            .iter()
            .map(|(id, _)| self.layout.ids.text(id))
            .collect();
        let digests: Vec<&[u8]> = chunks.iter().map(|(_, d)| &d[..]).collect();
        self.client.execute(
            &format!(
                "INSERT INTO {} (chunk_id, model, content_sha256)
                 SELECT id, $1, digest FROM unnest($2::text[], $3::bytea[]) AS u (id, digest)
                 ON CONFLICT (chunk_id) DO UPDATE
                    SET model = EXCLUDED.model, content_sha256 = EXCLUDED.content_sha256",
                self.names.embeddings
            ),
            &[&model, &ids, &digests],
        )?;
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
        let l = self.layout;
        let ids = self.ids(ids.iter().copied());
        let a = &l.analyses;
        let findings = match &a.findings {
            Some(column) => q(column),
            None => "NULL::jsonb".into(),
        };
        let rows = self.client.query(
            &format!(
                "SELECT {}, {}, {}, {}, {}, {findings} FROM {} WHERE {} = ANY({})",
                q(&a.id),
                q(&a.url),
                q(&a.content_type),
                q(&a.status),
                q(&a.created_at),
                q(&a.table),
                q(&a.id),
                self.id_array(1, &a.table, &a.id)
            ),
            &[&ids],
        )?;
        let mut found: Vec<Analysis> = rows
            .iter()
            .map(|r| decode::analysis(r, l))
            .collect::<Result<_>>()?;
        let position = |found: &[Analysis], id: Uuid| found.iter().position(|a| a.id == id);
        let c = &l.chunks;
        let optional = |column: &Option<String>| match column {
            Some(name) => q(name),
            None => "NULL::text".into(),
        };
        for r in self.client.query(
            &format!(
                "SELECT {}, {}, {}, {}, {}, {}, {} FROM {} WHERE {} = ANY({}) ORDER BY {}",
                q(&c.id),
                q(&c.analysis_id),
                q(&c.chunk_index),
                q(&c.content),
                optional(&c.section_title),
                optional(&c.section_path),
                q(&c.content_type),
                q(&c.table),
                q(&c.analysis_id),
                self.id_array(1, &c.table, &c.analysis_id),
                q(&c.chunk_index)
            ),
            &[&ids],
        )? {
            let (owner, chunk) = decode::chunk(&r, &c.table)?;
            if let Some(i) = position(&found, owner) {
                found[i].chunks.push(chunk);
            }
        }
        if let Some(t) = &l.artifacts {
            for r in self.client.query(
                &format!(
                    "SELECT {}, {}, {}, {}, {} FROM {} WHERE {} = ANY({})",
                    q(&t.id),
                    q(&t.analysis_id),
                    q(&t.summary),
                    q(&t.key_findings),
                    q(&t.metadata),
                    q(&t.table),
                    q(&t.analysis_id),
                    self.id_array(1, &t.table, &t.analysis_id)
                ),
                &[&ids],
            )? {
                let (owner, artifact) = decode::artifact(&r, &t.table)?;
                if let Some(i) = position(&found, owner) {
                    found[i].artifact = Some(artifact);
                }
            }
        }
        if let Some(f) = &l.findings {
            for r in self.client.query(
                &format!(
                    "SELECT {}, {}, {}, {}, ({})::float8, {} FROM {} WHERE {} = ANY({}) ORDER BY {}",
                    q(&f.analysis_id),
                    q(&f.agent),
                    q(&f.category),
                    q(&f.content),
                    q(&f.confidence),
                    f.metadata.as_deref().map_or("NULL::jsonb".into(), q),
                    q(&f.table),
                    q(&f.analysis_id),
                    self.id_array(1, &f.table, &f.analysis_id),
                    q(&f.position)
                ),
                &[&ids],
            )? {
                let (owner, finding) = decode::finding(&r, &f.table)?;
                if let Some(i) = position(&found, owner) {
                    found[i].findings.push(finding);
                }
            }
        }
        Ok(found)
    }

    fn chunk_vectors(
        &mut self,
        ids: &[Uuid],
        model: &str,
        dimension: usize,
    ) -> Result<HashMap<Uuid, Vec<f32>>> {
        let l = self.layout;
        let c = &l.chunks;
        let reading = self.reading();
        let (found_model, join) = reading.model();
        let ids = self.ids(ids.iter().copied());
        let vector = match l.embedding {
            EmbeddingEncoding::F32Le => format!("encode(c.{}, 'hex')", q(&c.embedding)),
            _ => format!("c.{}::text", q(&c.embedding)),
        };
        let rows = self.client.query(
            &format!(
                "SELECT c.{id}::text, {vector} FROM {table} c {join}
                  WHERE c.{id} = ANY({ids}) AND {found_model} = $2 AND {dims} = $3",
                id = q(&c.id),
                table = q(&c.table),
                ids = self.id_array(1, &c.table, &c.id),
                dims = reading.dimension(),
            ),
            &[&ids, &model, &(dimension as i32)],
        )?;
        let mut found = HashMap::new();
        for r in rows {
            let (id, text): (String, Option<String>) = (r.get(0), r.get(1));
            let (Ok(id), Some(text)) = (Uuid::try_parse(id.trim()), text) else {
                continue;
            };
            if let Some(v) = parse_vector(&text, l.embedding) {
                found.insert(id, v);
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
        let analysis = patch.analysis;
        let id = vec![l.ids.text(&analysis.id)];
        if patch.row {
            self.update_analysis_row(analysis)?;
        }
        let mut rows = RecordRows::new(l);
        if patch.findings {
            if let Some(f) = &l.findings {
                self.delete_where(&f.table, &f.analysis_id, Some(&id))?;
                rows.findings(analysis);
            }
        }
        if !patch.remove_chunks.is_empty() {
            let c = &l.chunks;
            let gone = self.ids(patch.remove_chunks.iter().copied());
            self.client.execute(
                &format!(
                    "DELETE FROM {} WHERE chunk_id = ANY($1)",
                    self.names.embeddings
                ),
                &[&gone],
            )?;
            self.delete_where(&c.table, &c.id, Some(&gone))?;
        }
        for &at in &patch.add_chunks {
            let chunk = &analysis.chunks[at];
            let vector = vectors.get(&chunk.id).map(|v| (model, v.as_slice()));
            rows.chunk(analysis, chunk, vector);
        }
        if patch.artifact {
            if let Some(t) = &l.artifacts {
                self.delete_where(&t.table, &t.analysis_id, Some(&id))?;
                rows.artifact(analysis);
            }
        }
        self.insert_rows(rows, Some(model))?;
        for &at in &patch.update_chunks {
            let chunk = &analysis.chunks[at];
            let vector = vectors.get(&chunk.id).map(Vec::as_slice);
            self.update_chunk(chunk, vector, model)?;
        }
        Ok(())
    }

    fn delete_analyses_except(&mut self, keep: &[Uuid]) -> Result<Counts> {
        let l = self.layout;
        let a = &l.analyses;
        let keep = self.ids(keep.iter().copied());
        let rows = self.client.query(
            &format!(
                "SELECT {id}::text FROM {table} WHERE NOT ({id} = ANY({keep}))",
                id = q(&a.id),
                table = q(&a.table),
                keep = self.id_array(1, &a.table, &a.id)
            ),
            &[&keep],
        )?;
        let gone: Vec<Uuid> = rows
            .iter()
            .filter_map(|r| Uuid::try_parse(r.get::<_, String>(0).trim()).ok())
            .collect();
        if gone.is_empty() {
            return Ok(Counts::default());
        }
        let mut counts = Counts::default();
        for analysis in self.analyses_by_id(&gone)? {
            counts.add(&analysis);
        }
        self.delete_analyses(&gone)?;
        Ok(counts)
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
        _dimension: usize,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ChunkText>> {
        let reading = self.reading();
        let (found, join) = reading.model();
        let c = &self.layout.chunks;
        let after = after.map(|id| self.layout.ids.text(&id));
        let id_type = self.type_of(&c.table, &c.id);
        // A recorded model id fixes the dimension (`_dimension`): no vector is read (they are
        // large, often TOASTed) to find the chunks left to embed.
        let sql = format!(
            "SELECT c.{id}::text, c.{content} FROM {table} c {join}
              WHERE ($1::text IS NULL OR c.{id} > $1::text::{id_type})
                AND (c.{emb} IS NULL OR {found} IS DISTINCT FROM $2)
              ORDER BY c.{id} LIMIT $3",
            id = q(&c.id),
            content = q(&c.content),
            table = q(&c.table),
            emb = q(&c.embedding),
        );
        let rows = self
            .client
            .query(&sql, &[&after, &model, &(limit as i64)])?;
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
