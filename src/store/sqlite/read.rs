//! Reading: a deferred read transaction per snapshot (its shared lock keeps writers from
//! committing until it ends); the backup's three row streams merged by `store::merge`.

use super::super::merge::{self, RowStreams};
use super::super::schema::{self, ANALYSES, ARTIFACTS, CHUNKS, EMBEDDING_CACHE};
use super::super::{CacheUsage, EmbeddingHealth, EmbeddingModel, Inventory, ReadSnapshot, Result};
use super::decode;
use crate::model::{Analysis, Artifact, Chunk, Counts, StatusFilter};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, Rows, Transaction};

pub(super) struct SqliteSnapshot<'c> {
    pub(super) tx: Transaction<'c>,
}

/// `WHERE a.status IN (?1, …)` (or nothing) and its parameters.
fn status_clause(filter: &StatusFilter) -> (String, Vec<SqlValue>) {
    match filter {
        StatusFilter::All => (String::new(), Vec::new()),
        StatusFilter::Only(list) => {
            let marks: Vec<String> = (1..=list.len()).map(|i| format!("?{i}")).collect();
            let values = list.iter().map(|s| SqlValue::Text(s.clone())).collect();
            (format!("WHERE a.status IN ({})", marks.join(", ")), values)
        }
    }
}

pub(super) fn inventory(conn: &Connection) -> Result<Inventory> {
    let mut inv = Inventory::default();
    let mut stmt = conn.prepare(&format!(
        "SELECT status, count(*) FROM {ANALYSES} GROUP BY status"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        inv.analyses_by_status
            .insert(r.get(0)?, r.get::<_, i64>(1)? as u64);
    }
    inv.chunks = conn.query_row(&format!("SELECT count(*) FROM {CHUNKS}"), [], |r| {
        r.get::<_, i64>(0)
    })? as u64;
    inv.artifacts = conn.query_row(&format!("SELECT count(*) FROM {ARTIFACTS}"), [], |r| {
        r.get::<_, i64>(0)
    })? as u64;
    Ok(inv)
}

pub(super) fn embedding_models(conn: &Connection) -> Result<Vec<EmbeddingModel>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT embedding_model, length(embedding) / 4, count(*) FROM {CHUNKS}
         WHERE embedding IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC, 1"
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok(EmbeddingModel {
            model: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
            dimension: r.get::<_, i64>(1)? as usize,
            chunks: r.get::<_, i64>(2)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The (model, text digest) pairs that chunks use (never NULL, so `NOT IN` works).
pub(super) fn used_cache_keys() -> String {
    format!(
        "SELECT DISTINCT embedding_model, goldset_sha256(content) FROM {CHUNKS}
          WHERE embedding_model IS NOT NULL"
    )
}

fn embedding_cache(conn: &Connection) -> Result<Vec<CacheUsage>> {
    let mut stmt = conn.prepare(&format!(
        "WITH used (model, digest) AS ({})
         SELECT c.model, length(c.embedding) / 4, count(*), sum(length(c.embedding)), sum(u.model IS NULL)
           FROM {EMBEDDING_CACHE} c LEFT JOIN used u ON u.model = c.model AND u.digest = c.content_sha256
          GROUP BY 1, 2 ORDER BY 1, 2",
        used_cache_keys()
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok(CacheUsage {
            model: r.get(0)?,
            dimension: r.get::<_, i64>(1)? as usize,
            entries: r.get::<_, i64>(2)? as u64,
            bytes: r.get::<_, i64>(3)? as u64,
            unused: r.get::<_, i64>(4)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The three result sets of a backup.
struct RowsOf<'s> {
    analyses: Rows<'s>,
    chunks: Rows<'s>,
    artifacts: Rows<'s>,
}

impl RowStreams for RowsOf<'_> {
    /// The analysis id as stored (text).
    type Key = String;

    fn next_analysis(&mut self) -> Result<Option<(String, Analysis)>> {
        match self.analyses.next()? {
            Some(row) => {
                let analysis = decode::analysis(row)?;
                Ok(Some((row.get(0)?, analysis)))
            }
            None => Ok(None),
        }
    }

    fn next_chunk(&mut self) -> Result<Option<(String, Chunk)>> {
        self.chunks.next()?.map(decode::chunk).transpose()
    }

    fn next_artifact(&mut self) -> Result<Option<(String, Artifact)>> {
        self.artifacts.next()?.map(decode::artifact).transpose()
    }
}

impl ReadSnapshot for SqliteSnapshot<'_> {
    fn inventory(&mut self) -> Result<Inventory> {
        inventory(&self.tx)
    }

    fn embedding_models(&mut self) -> Result<Vec<EmbeddingModel>> {
        embedding_models(&self.tx)
    }

    fn counts(&mut self, filter: &StatusFilter) -> Result<Counts> {
        let (clause, values) = status_clause(filter);
        let count = |sql: String| -> Result<u64> {
            Ok(self
                .tx
                .query_row(&sql, params_from_iter(values.iter()), |r| {
                    r.get::<_, i64>(0)
                })? as u64)
        };
        Ok(Counts {
            total_analyses: count(format!("SELECT count(*) FROM {ANALYSES} a {clause}"))?,
            total_chunks: count(format!(
                "SELECT count(*) FROM {ANALYSES} a JOIN {CHUNKS} c ON c.analysis_id = a.id {clause}"
            ))?,
            total_artifacts: count(format!(
                "SELECT count(*) FROM {ANALYSES} a JOIN {ARTIFACTS} r ON r.analysis_id = a.id {clause}"
            ))?,
        })
    }

    fn for_each_analysis(
        &mut self,
        filter: &StatusFilter,
        visit: &mut dyn FnMut(Analysis) -> Result<()>,
    ) -> Result<()> {
        let (clause, values) = status_clause(filter);
        let order = "ORDER BY a.created_at, a.id";
        let mut analyses = self.tx.prepare(&format!(
            "SELECT {} FROM {ANALYSES} a {clause} {order}",
            schema::qualified("a", schema::ANALYSIS_COLUMNS)
        ))?;
        let mut chunks = self.tx.prepare(&format!(
            "SELECT {} FROM {ANALYSES} a JOIN {CHUNKS} c ON c.analysis_id = a.id {clause} {order}, c.chunk_index",
            schema::qualified("c", schema::CHUNK_COLUMNS)
        ))?;
        let mut artifacts = self.tx.prepare(&format!(
            "SELECT {} FROM {ANALYSES} a JOIN {ARTIFACTS} r ON r.analysis_id = a.id {clause} {order}",
            schema::qualified("r", schema::ARTIFACT_COLUMNS)
        ))?;
        let mut streams = RowsOf {
            analyses: analyses.query(params_from_iter(values.iter()))?,
            chunks: chunks.query(params_from_iter(values.iter()))?,
            artifacts: artifacts.query(params_from_iter(values.iter()))?,
        };
        merge::for_each_analysis(&mut streams, visit)
    }

    fn embedding_cache(&mut self) -> Result<Vec<CacheUsage>> {
        embedding_cache(&self.tx)
    }

    fn orphans(&mut self) -> Result<(u64, Vec<String>)> {
        let sql = format!(
            "SELECT 'chunk ' || id || ' of missing analysis ' || analysis_id FROM {CHUNKS}
               WHERE analysis_id NOT IN (SELECT id FROM {ANALYSES})
             UNION ALL
             SELECT 'artifact ' || id || ' of missing analysis ' || analysis_id FROM {ARTIFACTS}
               WHERE analysis_id NOT IN (SELECT id FROM {ANALYSES})"
        );
        let mut stmt = self.tx.prepare(&sql)?;
        let mut rows = stmt.query([])?;
        let (mut n, mut examples) = (0u64, Vec::new());
        while let Some(r) = rows.next()? {
            n += 1;
            if examples.len() < crate::report::EXAMPLES_PER_CHECK {
                examples.push(r.get(0)?);
            }
        }
        Ok((n, examples))
    }

    fn embedding_health(&mut self, model: &str, dimension: usize) -> Result<EmbeddingHealth> {
        let mut stmt = self.tx.prepare(&format!(
            "SELECT id, embedding_model, length(embedding) FROM {CHUNKS} ORDER BY id"
        ))?;
        let mut rows = stmt.query([])?;
        let mut h = EmbeddingHealth::default();
        while let Some(r) = rows.next()? {
            h.chunks += 1;
            let id: String = r.get(0)?;
            let found_model: Option<String> = r.get(1)?;
            let bytes: Option<i64> = r.get(2)?;
            let problem = match (found_model, bytes) {
                (_, None) => {
                    h.missing += 1;
                    Some("no embedding".to_owned())
                }
                (found, _) if found.as_deref() != Some(model) => {
                    h.other_model += 1;
                    Some(format!(
                        "embedded by {:?}, expected {model:?}",
                        found.unwrap_or_default()
                    ))
                }
                (_, Some(b)) if b as usize != dimension * 4 => {
                    h.wrong_dimension += 1;
                    Some(format!("dimension {}, expected {dimension}", b / 4))
                }
                _ => None,
            };
            if let Some(p) = problem {
                if h.examples.len() < crate::report::EXAMPLES_PER_CHECK {
                    h.examples.push(format!("chunk {id}: {p}"));
                }
            }
        }
        Ok(h)
    }
}
