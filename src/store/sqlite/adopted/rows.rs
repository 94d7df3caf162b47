//! Rows goldset writes into an application's tables in an SQLite file, stored the way the
//! mapping says; deletes, with the cascade check before them.

use super::{insert_sql, json_text, AdoptedWrite};
use crate::model::{Analysis, Chunk};
use crate::store::catalog::cascade_refusal;
use crate::store::layout::{quote_name as q, EmbeddingEncoding, TimeEncoding};
use crate::store::{vector_to_blob, Result};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter};
use uuid::Uuid;

impl AdoptedWrite<'_> {
    pub(super) fn id(&self, id: &Uuid) -> Value {
        Value::Text(self.layout.ids.text(id))
    }

    pub(super) fn vector(&self, v: &[f32]) -> Value {
        match self.layout.embedding {
            EmbeddingEncoding::Json => Value::Text(format!(
                "[{}]",
                v.iter().map(f32::to_string).collect::<Vec<_>>().join(",")
            )),
            _ => Value::Blob(vector_to_blob(v)),
        }
    }

    /// Inserts one row: `columns` and `values`, plus the mapping's fill for the table.
    pub(super) fn insert_row(
        &self,
        table: &str,
        columns: &[&str],
        mut values: Vec<Value>,
    ) -> Result<()> {
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

    /// Records that `model` embedded the chunk `id` (stored text).
    pub(super) fn record_model(&self, model: &str, id: &Value) -> Result<()> {
        let c = &self.layout.chunks;
        if let Some(column) = &c.embedding_sha256 {
            self.tx
                .prepare_cached(&format!(
                    "UPDATE {table} SET {column} = goldset_sha256({content}) WHERE {id} = ?1",
                    table = q(&c.table),
                    column = q(column),
                    content = q(&c.content),
                    id = q(&c.id)
                ))?
                .execute([id])?;
            return Ok(());
        }
        let Some(records) = self.model_table else {
            return Ok(());
        };
        self.tx
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO {records} (chunk_id, model, content_sha256)
                 SELECT {id}, ?2, goldset_sha256({content}) FROM {table} WHERE {id} = ?1",
                id = q(&c.id),
                content = q(&c.content),
                table = q(&c.table)
            ))?
            .execute(params![id, model])?;
        Ok(())
    }

    /// Records that `model` embedded the chunk `id` (stored text) from a text of this digest.
    pub(super) fn record_digest(&self, model: &str, id: &Value, digest: &[u8; 32]) -> Result<()> {
        let c = &self.layout.chunks;
        if let Some(column) = &c.embedding_sha256 {
            self.tx
                .prepare_cached(&format!(
                    "UPDATE {} SET {} = ?2 WHERE {} = ?1",
                    q(&c.table),
                    q(column),
                    q(&c.id)
                ))?
                .execute(params![id, &digest[..]])?;
            return Ok(());
        }
        let Some(records) = self.model_table else {
            return Ok(());
        };
        self.tx
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO {records} (chunk_id, model, content_sha256)
                 VALUES (?1, ?2, ?3)"
            ))?
            .execute(params![id, model, &digest[..]])?;
        Ok(())
    }

    /// The analysis row's columns and values.
    pub(super) fn analysis_row<'l>(&'l self, a: &Analysis) -> (Vec<&'l str>, Vec<Value>) {
        let l = self.layout;
        let columns = l.analysis_columns();
        let mut values = vec![
            self.id(&a.id),
            Value::Text(a.url.clone()),
            Value::Text(a.content_type.clone()),
            Value::Text(l.status_to_store(&a.status).to_owned()),
            match l.timestamps {
                TimeEncoding::Micros => Value::Integer(a.created_at.unix_micros()),
                _ => Value::Text(l.time_text(a.created_at)),
            },
        ];
        if l.analyses.findings.is_some() {
            values.push(json_text(&a.findings));
        }
        (columns, values)
    }

    pub(super) fn insert_findings(&self, a: &Analysis) -> Result<()> {
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

    pub(super) fn insert_chunk(
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

    pub(super) fn insert_artifact(&self, a: &Analysis) -> Result<()> {
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

    pub(super) fn insert_analysis(
        &self,
        a: &Analysis,
        embeddings: Option<(&str, &[Vec<f32>])>,
    ) -> Result<()> {
        let (columns, values) = self.analysis_row(a);
        self.insert_row(&self.layout.analyses.table, &columns, values)?;
        self.insert_findings(a)?;
        for (i, chunk) in a.chunks.iter().enumerate() {
            let vector = embeddings.map(|(model, vectors)| (model, vectors[i].as_slice()));
            self.insert_chunk(a, chunk, vector)?;
        }
        self.insert_artifact(a)
    }

    /// Deletes the rows of `table` whose `column` is `id` (every row with `None`).
    pub(super) fn delete_where(&self, table: &str, column: &str, id: Option<&Value>) -> Result<()> {
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
    pub(super) fn check_cascades(
        &self,
        table: &str,
        column: &str,
        id: Option<&Value>,
    ) -> Result<()> {
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
}
