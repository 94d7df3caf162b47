//! Writing: a transaction on the store's connection, under the schema's restore lock, that
//! rolls back (and unlocks) when dropped without `commit`.

use super::super::layout::Layout;
use super::super::{
    insert_each, schema, BatchSource, ChunkEmbeddings, ChunkText, ContentDigest, EmbeddingModel,
    EmbeddingUpdate, Existing, Inventory, RecordKind, Result, WriteTransaction,
};
use super::bulk::{chunk_columns, copy_sql, TableRows};
use super::cache;
use super::copy;
use super::read::Reading;
use super::read::{embedding_models, inventory, used_cache_keys};
use super::Names;
use crate::model::Analysis;
use pgvector::Vector;
use postgres::types::Type;
use postgres::Client;
use std::io::{self, Read};
use uuid::Uuid;

/// A write transaction on the store's connection, under the schema's advisory lock. Dropped
/// without commit, it rolls back and releases the lock.
pub(super) struct PgWrite<'c> {
    pub(super) client: &'c mut Client,
    pub(super) names: &'c Names,
    /// goldset's own layout (the only one written here).
    pub(super) layout: &'c Layout,
    pub(super) done: bool,
    /// The `vector` type's OID-bearing descriptor, looked up once.
    pub(super) vector_type: Option<Type>,
    /// In a bulk load: the SQL that rebuilds the indexes and constraints dropped for it.
    pub(super) rebuild: Option<String>,
}

impl Drop for PgWrite<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.client.batch_execute("ROLLBACK");
        }
        let _ = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.names.lock_key]);
    }
}

impl PgWrite<'_> {
    /// How the transaction reads goldset's own tables.
    fn reading(&self) -> Reading<'_> {
        Reading {
            layout: self.layout,
            names: self.names,
            model_table: false,
        }
    }

    /// Runs `COPY table (columns) FROM STDIN (FORMAT binary)` with `data`, already encoded.
    pub(super) fn copy_in(
        &mut self,
        table: &str,
        columns: &[&str],
        data: &mut impl Read,
    ) -> Result<()> {
        let mut writer = self.client.copy_in(&copy_sql(table, columns))?;
        io::copy(data, &mut writer).map_err(copy::io_error)?;
        writer.finish()?;
        Ok(())
    }

    pub(super) fn vector_type(&mut self) -> Result<Type> {
        if self.vector_type.is_none() {
            let stmt = self
                .client
                .prepare(&format!("SELECT NULL::{}", self.names.vector))?;
            self.vector_type = Some(stmt.columns()[0].type_().clone());
        }
        Ok(self.vector_type.clone().expect("set above"))
    }
}

/// The (id, content) rows of a chunk query.
fn chunk_texts(rows: &[postgres::Row]) -> Vec<ChunkText> {
    rows.iter()
        .map(|r| ChunkText {
            id: r.get(0),
            content: r.get(1),
        })
        .collect()
}

impl WriteTransaction for PgWrite<'_> {
    fn inventory(&mut self) -> Result<Inventory> {
        let reading = Reading {
            layout: self.layout,
            names: self.names,
            model_table: false,
        };
        inventory(self.client, &reading)
    }

    fn delete_all(&mut self) -> Result<()> {
        let n = self.names;
        self.client.batch_execute(&format!(
            "DELETE FROM {}; DELETE FROM {}; DELETE FROM {};",
            n.chunks, n.artifacts, n.analyses
        ))?;
        self.start_bulk_load()
    }

    fn load_in_bulk_if_empty(&mut self) -> Result<bool> {
        let n = self.names;
        let empty = format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {}) AND NOT EXISTS (SELECT 1 FROM {}) AND NOT EXISTS (SELECT 1 FROM {})",
            n.analyses, n.chunks, n.artifacts
        );
        if !self.client.query_one(&empty, &[])?.get::<_, bool>(0) {
            return Ok(false);
        }
        // Bulk mode alters the tables: take their exclusive locks first, then make sure no one
        // wrote in between.
        self.client.batch_execute(&format!(
            "LOCK TABLE {}, {}, {} IN ACCESS EXCLUSIVE MODE",
            n.analyses, n.chunks, n.artifacts
        ))?;
        if !self.client.query_one(&empty, &[])?.get::<_, bool>(0) {
            return Ok(false);
        }
        self.start_bulk_load()?;
        Ok(true)
    }

    fn existing(&mut self, analyses: &[Analysis]) -> Result<Vec<Existing>> {
        let n = self.names;
        let analysis_ids: Vec<Uuid> = analyses.iter().map(|a| a.id).collect();
        let chunk_ids: Vec<Uuid> = analyses
            .iter()
            .flat_map(|a| a.chunks.iter().map(|c| c.id))
            .collect();
        let artifact_ids: Vec<Uuid> = analyses
            .iter()
            .filter_map(|a| a.artifact.as_ref().map(|r| r.id))
            .collect();
        let rows = self.client.query(
            &format!(
                "SELECT 0, id, id FROM {a} WHERE id = ANY($1)
                 UNION ALL SELECT 1, id, analysis_id FROM {c} WHERE id = ANY($2)
                 UNION ALL SELECT 2, id, analysis_id FROM {r} WHERE id = ANY($3)",
                a = n.analyses,
                c = n.chunks,
                r = n.artifacts
            ),
            &[&analysis_ids, &chunk_ids, &artifact_ids],
        )?;
        Ok(rows
            .iter()
            .map(|r| Existing {
                kind: match r.get::<_, i32>(0) {
                    0 => RecordKind::Analysis,
                    1 => RecordKind::Chunk,
                    _ => RecordKind::Artifact,
                },
                id: r.get(1),
                owner: r.get(2),
            })
            .collect())
    }

    fn delete_analyses(&mut self, ids: &[Uuid]) -> Result<()> {
        let ids = ids.to_vec();
        self.client.execute(
            &format!("DELETE FROM {} WHERE id = ANY($1)", self.names.analyses),
            &[&ids],
        )?;
        Ok(())
    }

    fn insert_batch(
        &mut self,
        analyses: &[Analysis],
        embeddings: Option<ChunkEmbeddings<'_>>,
    ) -> Result<()> {
        let mut rows = TableRows::new(Vec::new(), Vec::new(), Vec::new(), self.vector_type()?);
        let vectors = embeddings.map(|e| e.vectors.iter().map(|v| Vector::from(v.clone())));
        rows.write(analyses, vectors, embeddings.map(|e| e.model))?;
        let (analyses, chunks, artifacts) = rows.finish()?;
        let n = self.names;
        // Parents first: outside a bulk load the foreign keys are checked row by row.
        self.copy_in(
            &n.analyses,
            schema::ANALYSIS_COLUMNS,
            &mut analyses.as_slice(),
        )?;
        self.copy_in(&n.chunks, &chunk_columns(), &mut chunks.as_slice())?;
        self.copy_in(
            &n.artifacts,
            schema::ARTIFACT_COLUMNS,
            &mut artifacts.as_slice(),
        )
    }

    /// In a bulk load, one `COPY` of chunks stays open for the whole stream (`bulk.rs`).
    fn insert_stream(&mut self, model: &str, next: &mut BatchSource<'_>) -> Result<()> {
        if self.rebuild.is_none() {
            return insert_each(self, model, next);
        }
        self.stream_bulk(model, next)
    }

    fn embedding_models(&mut self) -> Result<Vec<EmbeddingModel>> {
        let reading = Reading {
            layout: self.layout,
            names: self.names,
            model_table: false,
        };
        embedding_models(self.client, &reading)
    }

    fn prepare_embeddings(&mut self, dimension: usize) -> Result<()> {
        let n = self.names;
        let typmod: i32 = self
            .client
            .query_one(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = 'embedding'",
                &[&n.chunks],
            )?
            .get(0);
        if typmod == dimension as i32 {
            return Ok(());
        }
        let others: bool = self
            .client
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE embedding IS NOT NULL AND vector_dims(embedding) <> $1)",
                    n.chunks
                ),
                &[&(dimension as i32)],
            )?
            .get(0);
        let column_type = if !others {
            format!("{}({dimension})", n.vector)
        } else if typmod != -1 {
            // Vectors of two dimensions coexist until a reembed has replaced them all.
            n.vector.clone()
        } else {
            return Ok(());
        };
        self.client.batch_execute(&format!(
            "ALTER TABLE {} ALTER COLUMN embedding TYPE {column_type}",
            n.chunks
        ))?;
        Ok(())
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
        let rows = self.client.query(
            &format!(
                "SELECT id, content FROM {}
                  WHERE ($1::uuid IS NULL OR id > $1)
                    AND (embedding IS NULL OR embedding_model IS DISTINCT FROM $2
                         OR vector_dims(embedding) <> $3
                         OR embedding_sha256 IS DISTINCT FROM sha256(convert_to(content, 'UTF8')))
                  ORDER BY id LIMIT $4",
                self.names.chunks
            ),
            &[&after, &model, &(dimension as i32), &(limit as i64)],
        )?;
        Ok(chunk_texts(&rows))
    }

    fn stale_chunks(&mut self, after: Option<Uuid>, limit: usize) -> Result<Vec<ChunkText>> {
        let rows = self.client.query(
            &format!(
                "SELECT id, content FROM {}
                  WHERE ($1::uuid IS NULL OR id > $1) AND embedding IS NOT NULL
                    AND embedding_sha256 <> sha256(convert_to(content, 'UTF8'))
                  ORDER BY id LIMIT $2",
                self.names.chunks
            ),
            &[&after, &(limit as i64)],
        )?;
        Ok(chunk_texts(&rows))
    }

    fn set_embeddings(&mut self, model: &str, updates: &[EmbeddingUpdate<'_>]) -> Result<()> {
        let ids: Vec<Uuid> = updates.iter().map(|u| u.id).collect();
        let vectors: Vec<pgvector::Vector> = updates
            .iter()
            .map(|u| pgvector::Vector::from(u.vector.to_vec()))
            .collect();
        let digests: Vec<&[u8]> = updates.iter().map(|u| &u.text_sha256[..]).collect();
        self.client.execute(
            &format!(
                "UPDATE {c} AS c SET embedding = u.e, embedding_model = $1, embedding_sha256 = u.d
                   FROM unnest($2::uuid[], $3::{v}[], $4::bytea[]) AS u (id, e, d)
                  WHERE c.id = u.id",
                c = self.names.chunks,
                v = self.names.vector
            ),
            &[&model, &ids, &vectors, &digests],
        )?;
        Ok(())
    }

    fn prune_embedding_cache(&mut self, everything: bool) -> Result<(u64, u64)> {
        let n = self.names;
        let condition = if everything {
            ""
        } else {
            "WHERE NOT EXISTS (SELECT 1 FROM used u WHERE u.model = c.model AND u.digest = c.content_sha256)"
        };
        let row = self.client.query_one(
            &format!(
                "WITH used AS ({}),
                      gone AS (DELETE FROM {} c {condition} RETURNING octet_length(c.embedding) AS bytes)
                 SELECT count(*), coalesce(sum(bytes), 0)::bigint FROM gone",
                used_cache_keys(&self.reading()),
                n.cache
            ),
            &[],
        )?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        if let Some(rebuild) = self.rebuild.take() {
            self.client.batch_execute(&rebuild)?;
        }
        self.client.batch_execute("COMMIT")?;
        self.done = true;
        Ok(())
    }
}
