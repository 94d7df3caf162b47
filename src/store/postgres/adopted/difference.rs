//! `restore --replace` by difference on an application's tables: the stored analyses of a
//! batch, whole; stored vectors kept for rewritten chunks; a patch applied in place; the
//! analyses the file no longer has deleted.

use super::rows::{vector_text, RecordRows};
use super::AdoptedWrite;
use crate::model::{Analysis, Chunk, Counts};
use crate::store::layout::quote_name as q;
use crate::store::postgres::decode;
use crate::store::{Patch, Result, WriteTransaction};
use postgres::types::ToSql;
use std::collections::HashMap;
use uuid::Uuid;

impl AdoptedWrite<'_> {
    /// Updates a stored chunk in place (same id, same analysis, same position): its text and
    /// section fields, and its embedding when `vector` is given.
    pub(super) fn update_chunk(
        &mut self,
        chunk: &Chunk,
        vector: Option<&[f32]>,
        model: &str,
    ) -> Result<()> {
        let l = self.layout;
        let c = &l.chunks;
        let mut sets: Vec<(&str, Option<String>)> = vec![
            (&c.chunk_index, Some(chunk.chunk_index.to_string())),
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
    pub(super) fn update_analysis_row(&mut self, analysis: &Analysis) -> Result<()> {
        let l = self.layout;
        let a = &l.analyses;
        let columns = l.analysis_columns();
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

    pub(super) fn stored_analyses(&mut self, ids: &[Uuid]) -> Result<Vec<Analysis>> {
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
            let (owner, chunk) = decode::chunk(&r, l)?;
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
                let (owner, artifact) = decode::artifact(&r, l)?;
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
                let (owner, finding) = decode::finding(&r, l)?;
                if let Some(i) = position(&found, owner) {
                    found[i].findings.push(finding);
                }
            }
        }
        Ok(found)
    }

    /// Moves the patch's moved chunks past every position their analysis has now or will
    /// have (keeping their order), so that inserts and final positions never collide with
    /// them. The subquery is evaluated once, before any row moves.
    fn move_aside(&mut self, patch: &Patch<'_>) -> Result<()> {
        if patch.moved_chunks.is_empty() {
            return Ok(());
        }
        let c = &self.layout.chunks;
        let a = patch.analysis;
        let last = a.chunks.iter().map(|c| c.chunk_index).max().unwrap_or(0);
        let moved = self.ids(patch.moved_chunks.iter().map(|&at| a.chunks[at].id));
        let owner = self.layout.ids.text(&a.id);
        let sql = format!(
            "UPDATE {table} SET {index} = {index} + 1 + greatest($3::bigint,
                 (SELECT coalesce(max({index}), 0) FROM {table} WHERE {owner_column} = $2::text::{owner_type}))
              WHERE {id} = ANY({ids})",
            table = q(&c.table),
            index = q(&c.chunk_index),
            owner_column = q(&c.analysis_id),
            owner_type = self.type_of(&c.table, &c.analysis_id),
            id = q(&c.id),
            ids = self.id_array(1, &c.table, &c.id),
        );
        self.client.execute(&sql, &[&moved, &owner, &last])?;
        Ok(())
    }

    pub(super) fn patch(
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
            if self.bookkeeping() {
                self.client.execute(
                    &format!(
                        "DELETE FROM {} WHERE chunk_id = ANY($1)",
                        self.names.embeddings
                    ),
                    &[&gone],
                )?;
            }
            self.delete_where(&c.table, &c.id, Some(&gone))?;
        }
        self.move_aside(patch)?;
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

    pub(super) fn delete_others(
        &mut self,
        keep: &[Uuid],
        statuses: Option<&[String]>,
    ) -> Result<Counts> {
        let l = self.layout;
        let a = &l.analyses;
        let keep = self.ids(keep.iter().copied());
        let statuses: Option<Vec<String>> = statuses.map(|words| {
            words
                .iter()
                .map(|s| l.status_to_store(s).to_owned())
                .collect()
        });
        let rows = self.client.query(
            &format!(
                "SELECT {id}::text FROM {table}
                  WHERE ($2::text[] IS NULL OR ({status})::text = ANY($2))
                    AND NOT ({id} = ANY({keep}))",
                id = q(&a.id),
                status = q(&a.status),
                table = q(&a.table),
                keep = self.id_array(1, &a.table, &a.id)
            ),
            &[&keep, &statuses],
        )?;
        let gone: Vec<Uuid> = rows
            .iter()
            .filter_map(|r| Uuid::try_parse(r.get::<_, String>(0).trim()).ok())
            .collect();
        if gone.is_empty() {
            return Ok(Counts::default());
        }
        let counts = self.counts_of(&gone)?;
        self.delete_analyses(&gone)?;
        Ok(counts)
    }

    /// How many analyses, chunks and artifacts these analyses make, counted by the database
    /// (nothing is decoded: a stored row goldset could not read still goes).
    fn counts_of(&mut self, ids: &[Uuid]) -> Result<Counts> {
        let l = self.layout;
        let ids = self.ids(ids.iter().copied());
        let c = &l.chunks;
        let artifacts = match &l.artifacts {
            Some(r) => format!(
                "(SELECT count(*) FROM {} WHERE {} = ANY({}))",
                q(&r.table),
                q(&r.analysis_id),
                self.id_array(1, &r.table, &r.analysis_id)
            ),
            None => "0::bigint".into(),
        };
        let row = self.client.query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {} WHERE {} = ANY({})), {artifacts}",
                q(&c.table),
                q(&c.analysis_id),
                self.id_array(1, &c.table, &c.analysis_id)
            ),
            &[&ids],
        )?;
        Ok(Counts {
            total_analyses: ids.len() as u64,
            total_chunks: row.get::<_, i64>(0) as u64,
            total_artifacts: row.get::<_, i64>(1) as u64,
        })
    }
}
