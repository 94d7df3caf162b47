//! Writing: a `BEGIN IMMEDIATE` transaction (a second writer waits instead of failing
//! half-way), rows inserted one by one through cached statements.

use super::super::layout::Layout;
use super::super::schema::{self, ANALYSES, ARTIFACTS, CHUNKS, EMBEDDING_CACHE};
use super::super::{
    vector_to_blob, ChunkEmbeddings, ChunkText, ContentDigest, EmbeddingModel, EmbeddingUpdate,
    Existing, Inventory, RecordKind, Result, StoreError, WriteTransaction,
};
use super::cache;
use super::decode::uuid_text;
use super::read::{embedding_models, inventory, used_cache_keys, Reading};
use crate::model::Analysis;
use rusqlite::{params, Transaction};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub(super) struct SqliteWrite<'c> {
    pub(super) tx: Transaction<'c>,
    /// goldset's own layout (the only one written here).
    pub(super) layout: &'c Layout,
}

impl SqliteWrite<'_> {
    fn reading(&self) -> Reading<'_> {
        Reading {
            layout: self.layout,
            cache: EMBEDDING_CACHE,
            model_table: None,
        }
    }
}

/// A JSON column's value that cannot be written (never happens for validated records).
fn unencodable(column: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |e| StoreError::Encode {
        column: column.into(),
        reason: e.to_string(),
    }
}

impl SqliteWrite<'_> {
    fn insert(&mut self, a: &Analysis, embeddings: Option<(&str, &[Vec<f32>])>) -> Result<()> {
        let findings = serde_json::to_string(&a.findings).map_err(unencodable("findings"))?;
        let id = a.id.to_string();
        self.tx
            .prepare_cached(&schema::insert_sql(ANALYSES, schema::ANALYSIS_COLUMNS))?
            .execute(params![
                id,
                a.url,
                a.content_type,
                a.status,
                a.created_at.unix_micros(),
                findings
            ])?;
        let mut columns = schema::CHUNK_COLUMNS.to_vec();
        columns.extend_from_slice(schema::EMBEDDING_COLUMNS);
        let mut stmt = self
            .tx
            .prepare_cached(&schema::insert_sql(CHUNKS, &columns))?;
        for (i, c) in a.chunks.iter().enumerate() {
            // The vector was made from the text written beside it: record that text's digest.
            let (blob, model, digest) = match embeddings {
                Some((model, vectors)) => (
                    Some(vector_to_blob(&vectors[i])),
                    Some(model),
                    Some(Sha256::digest(c.content.as_bytes()).to_vec()),
                ),
                None => (None, None, None),
            };
            stmt.execute(params![
                c.id.to_string(),
                id,
                c.chunk_index,
                c.content,
                c.section_title,
                c.section_path,
                c.content_type,
                blob,
                model,
                digest
            ])?;
        }
        if let Some(r) = &a.artifact {
            let key_findings =
                serde_json::to_string(&r.key_findings).map_err(unencodable("key_findings"))?;
            let metadata = serde_json::to_string(&r.metadata).map_err(unencodable("metadata"))?;
            self.tx
                .prepare_cached(&schema::insert_sql(ARTIFACTS, schema::ARTIFACT_COLUMNS))?
                .execute(params![
                    r.id.to_string(),
                    id,
                    r.summary,
                    key_findings,
                    metadata
                ])?;
        }
        Ok(())
    }
}

/// The (id, content) rows of a chunk query.
fn chunk_texts(mut rows: rusqlite::Rows<'_>) -> Result<Vec<ChunkText>> {
    let mut chunks = Vec::new();
    while let Some(row) = rows.next()? {
        chunks.push(ChunkText {
            id: uuid_text(row, 0)?,
            content: row.get(1)?,
        });
    }
    Ok(chunks)
}

impl WriteTransaction for SqliteWrite<'_> {
    fn inventory(&mut self) -> Result<Inventory> {
        inventory(&self.tx, self.reading())
    }

    fn delete_all(&mut self) -> Result<()> {
        self.tx.execute_batch(&format!(
            "DELETE FROM {CHUNKS}; DELETE FROM {ARTIFACTS}; DELETE FROM {ANALYSES};"
        ))?;
        Ok(())
    }

    fn load_in_bulk_if_empty(&mut self) -> Result<bool> {
        // BEGIN IMMEDIATE already keeps other writers out; SQLite has no bulk mode to enter.
        Ok(inventory(&self.tx, self.reading())? == Inventory::default())
    }

    fn existing(&mut self, analyses: &[Analysis]) -> Result<Vec<Existing>> {
        let mut found = Vec::new();
        let mut by_id = |table: &str, owner_col: &str, kind, id: Uuid| -> Result<()> {
            let mut stmt = self
                .tx
                .prepare_cached(&format!("SELECT {owner_col} FROM {table} WHERE id = ?1"))?;
            let mut rows = stmt.query([id.to_string()])?;
            if let Some(r) = rows.next()? {
                found.push(Existing {
                    kind,
                    id,
                    owner: uuid_text(r, 0)?,
                });
            }
            Ok(())
        };
        for a in analyses {
            by_id(ANALYSES, "id", RecordKind::Analysis, a.id)?;
            for c in &a.chunks {
                by_id(CHUNKS, "analysis_id", RecordKind::Chunk, c.id)?;
            }
            if let Some(r) = &a.artifact {
                by_id(ARTIFACTS, "analysis_id", RecordKind::Artifact, r.id)?;
            }
        }
        Ok(found)
    }

    fn delete_analyses(&mut self, ids: &[Uuid]) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached(&format!("DELETE FROM {ANALYSES} WHERE id = ?1"))?;
        for id in ids {
            stmt.execute([id.to_string()])?;
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
            self.insert(a, vectors)?;
            offset += n;
        }
        Ok(())
    }

    fn embedding_models(&mut self) -> Result<Vec<EmbeddingModel>> {
        embedding_models(&self.tx, self.reading())
    }

    fn prepare_embeddings(&mut self, _dimension: usize) -> Result<()> {
        // BLOBs take any length.
        Ok(())
    }

    fn cached_embeddings(
        &mut self,
        model: &str,
        dimension: usize,
        digests: &[ContentDigest],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        cache::lookup(&self.tx, EMBEDDING_CACHE, model, dimension, digests)
    }

    fn cached_dimension(&mut self, model: &str) -> Result<Option<usize>> {
        cache::dimension(&self.tx, EMBEDDING_CACHE, model)
    }

    fn cache_embeddings(&mut self, model: &str, entries: &[(ContentDigest, &[f32])]) -> Result<()> {
        cache::store(&self.tx, EMBEDDING_CACHE, model, entries)
    }

    fn chunks_needing_embedding(
        &mut self,
        model: &str,
        dimension: usize,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ChunkText>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT id, content FROM {CHUNKS}
              WHERE id > ?1 AND (embedding IS NULL OR embedding_model IS NOT ?2 OR length(embedding) <> ?3
                                 OR embedding_sha256 IS NOT goldset_sha256(content))
              ORDER BY id LIMIT ?4"
        ))?;
        let after = after.map(|u| u.to_string()).unwrap_or_default();
        let texts =
            chunk_texts(stmt.query(params![after, model, (dimension * 4) as i64, limit as i64])?);
        texts
    }

    fn stale_chunks(&mut self, after: Option<Uuid>, limit: usize) -> Result<Vec<ChunkText>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT id, content FROM {CHUNKS}
              WHERE id > ?1 AND embedding IS NOT NULL AND embedding_sha256 IS NOT NULL
                AND embedding_sha256 <> goldset_sha256(content)
              ORDER BY id LIMIT ?2"
        ))?;
        let after = after.map(|u| u.to_string()).unwrap_or_default();
        let texts = chunk_texts(stmt.query(params![after, limit as i64])?);
        texts
    }

    fn set_embeddings(&mut self, model: &str, updates: &[EmbeddingUpdate<'_>]) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "UPDATE {CHUNKS} SET embedding = ?1, embedding_model = ?2, embedding_sha256 = ?3 WHERE id = ?4"
        ))?;
        for u in updates {
            stmt.execute(params![
                vector_to_blob(u.vector),
                model,
                &u.text_sha256[..],
                u.id.to_string()
            ])?;
        }
        Ok(())
    }

    fn prune_embedding_cache(&mut self, everything: bool) -> Result<(u64, u64)> {
        // Set-based and linear: the (model, digest) pairs chunks use are computed once, each is
        // looked up in the cache's unique index, and the entries not found that way go in one
        // DELETE. (`(model, content_sha256) NOT IN (SELECT …)` compared every entry with every
        // pair: 40.5k entries beside 40k chunks took 95 s; this takes well under a second.)
        let condition = if everything {
            String::new()
        } else {
            format!(
                "WHERE rowid NOT IN (
                    WITH used (model, digest) AS ({})
                    SELECT e.rowid FROM used u JOIN {EMBEDDING_CACHE} e
                        ON e.model = u.model AND e.content_sha256 = u.digest)",
                used_cache_keys(self.reading())
            )
        };
        let mut stmt = self.tx.prepare(&format!(
            "DELETE FROM {EMBEDDING_CACHE} {condition} RETURNING length(embedding)"
        ))?;
        let (mut entries, mut bytes) = (0u64, 0u64);
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            entries += 1;
            bytes += row.get::<_, Option<i64>>(0)?.unwrap_or(0) as u64;
        }
        Ok((entries, bytes))
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit()?;
        Ok(())
    }
}
