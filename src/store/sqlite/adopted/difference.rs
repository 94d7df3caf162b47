//! `restore --replace` by difference on an application's tables in an SQLite file.

use super::AdoptedWrite;
use crate::model::{Analysis, Chunk, Counts};
use crate::store::layout::quote_name as q;
use crate::store::sqlite::decode;
use crate::store::sqlite::MODEL_TABLE;
use crate::store::{blob_to_vector, Patch, Result, WriteTransaction};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension};
use std::collections::HashMap;
use uuid::Uuid;

impl AdoptedWrite<'_> {
    /// The stored analysis `id`, whole, if any.
    pub(super) fn analysis_by_id(&self, id: &Uuid) -> Result<Option<Analysis>> {
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
            analysis.chunks.push(decode::chunk(row, l)?.1);
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
                analysis.artifact = Some(decode::artifact(row, l)?.1);
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
                analysis.findings.push(decode::finding(row, l)?.1);
            }
        }
        Ok(Some(analysis))
    }

    /// Updates a stored chunk in place (same id, same analysis, same position): its text and
    /// section fields, and its embedding when `vector` is given.
    pub(super) fn update_chunk(
        &self,
        chunk: &Chunk,
        vector: Option<&[f32]>,
        model: &str,
    ) -> Result<()> {
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
    pub(super) fn delete_chunks(&self, ids: &[Uuid]) -> Result<()> {
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

    pub(super) fn stored_analyses(&mut self, ids: &[Uuid]) -> Result<Vec<Analysis>> {
        let mut found = Vec::new();
        for id in ids {
            found.extend(self.analysis_by_id(id)?);
        }
        Ok(found)
    }

    pub(super) fn stored_vectors(
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

    pub(super) fn patch(
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

    pub(super) fn delete_others(&mut self, keep: &[Uuid], statuses: &[String]) -> Result<Counts> {
        let l = self.layout;
        let a = &l.analyses;
        let stored: Vec<(String, String)> = self
            .tx
            .prepare(&format!(
                "SELECT {}, {} FROM {}",
                q(&a.id),
                q(&a.status),
                q(&a.table)
            ))?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let gone: Vec<Uuid> = stored
            .iter()
            .filter(|(_, status)| statuses.iter().any(|s| s == l.status_from_store(status)))
            .filter_map(|(id, _)| Uuid::try_parse(id.trim()).ok())
            .filter(|id| keep.binary_search(id).is_err())
            .collect();
        let mut counts = Counts::default();
        for analysis in self.analyses_by_id(&gone)? {
            counts.add(&analysis);
        }
        self.delete_analyses(&gone)?;
        Ok(counts)
    }
}
