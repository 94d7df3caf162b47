//! `restore --replace` by difference on an application's tables in an SQLite file.

use super::AdoptedWrite;
use crate::model::{Analysis, Chunk, Counts};
use crate::store::layout::quote_name as q;
use crate::store::sqlite::decode;
use crate::store::{Patch, Result, WriteTransaction};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter};
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
            (&c.chunk_index, Value::Integer(chunk.chunk_index)),
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
            if let Some(records) = self.model_table {
                self.tx
                    .prepare_cached(&format!("DELETE FROM {records} WHERE chunk_id = ?1"))?
                    .execute([&id])?;
            }
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

    /// Moves the patch's moved chunks past every position their analysis has now or will
    /// have (keeping their order), so that inserts and final positions never collide with
    /// them.
    fn move_aside(&self, patch: &Patch<'_>) -> Result<()> {
        if patch.moved_chunks.is_empty() {
            return Ok(());
        }
        let c = &self.layout.chunks;
        let a = patch.analysis;
        let last = a.chunks.iter().map(|c| c.chunk_index).max().unwrap_or(0);
        let mut statement = self.tx.prepare_cached(&format!(
            "UPDATE {table} SET {index} = {index} + 1 + max(?3,
                 (SELECT coalesce(max({index}), 0) FROM {table} WHERE {owner} = ?2))
              WHERE {id} = ?1",
            table = q(&c.table),
            index = q(&c.chunk_index),
            owner = q(&c.analysis_id),
            id = q(&c.id),
        ))?;
        let owner = self.id(&a.id);
        for &at in &patch.moved_chunks {
            statement.execute(params![self.id(&a.chunks[at].id), owner, last])?;
        }
        Ok(())
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
        self.move_aside(patch)?;
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

    pub(super) fn delete_others(
        &mut self,
        keep: &[Uuid],
        statuses: Option<&[String]>,
    ) -> Result<Counts> {
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
            .filter(|(_, status)| {
                statuses.is_none_or(|words| words.iter().any(|s| s == l.status_from_store(status)))
            })
            .filter_map(|(id, _)| Uuid::try_parse(id.trim()).ok())
            .filter(|id| keep.binary_search(id).is_err())
            .collect();
        let counts = self.counts_of(&gone)?;
        self.delete_analyses(&gone)?;
        Ok(counts)
    }

    /// How many analyses, chunks and artifacts these analyses make, counted by the database
    /// (nothing is decoded: a stored row goldset could not read still goes).
    fn counts_of(&self, ids: &[Uuid]) -> Result<Counts> {
        let l = self.layout;
        let count = |table: &str, column: &str, id: &Value| -> Result<u64> {
            let n: i64 = self
                .tx
                .prepare_cached(&format!(
                    "SELECT count(*) FROM {} WHERE {} = ?1",
                    q(table),
                    q(column)
                ))?
                .query_row([id], |r| r.get(0))?;
            Ok(n as u64)
        };
        let mut counts = Counts::default();
        for id in ids {
            let id = self.id(id);
            counts.total_analyses += 1;
            counts.total_chunks += count(&l.chunks.table, &l.chunks.analysis_id, &id)?;
            if let Some(r) = &l.artifacts {
                counts.total_artifacts += count(&r.table, &r.analysis_id, &id)?;
            }
        }
        Ok(counts)
    }
}
