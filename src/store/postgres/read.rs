//! Reading: one `REPEATABLE READ, READ ONLY` transaction per snapshot; the backup's three row
//! streams come through portals, a page at a time, and are merged by `store::merge`.

use super::super::merge::{self, RowStreams};
use super::super::{
    schema, CacheUsage, EmbeddingHealth, EmbeddingModel, Inventory, ReadSnapshot, Result,
};
use super::{decode, Names};
use crate::model::{Analysis, Artifact, Chunk, Counts, StatusFilter};
use postgres::types::ToSql;
use postgres::{GenericClient, Row, Transaction};
use std::collections::VecDeque;
use uuid::Uuid;

/// Rows fetched per round trip when streaming a backup.
const FETCH_ROWS: i32 = 1000;

/// A read-only view of one moment.
pub(super) struct PgSnapshot<'c> {
    pub(super) tx: Transaction<'c>,
    pub(super) names: &'c Names,
}

/// `WHERE a.status = ANY($1)` (or nothing) and its parameter.
struct StatusClause {
    sql: &'static str,
    statuses: Vec<String>,
}

impl StatusClause {
    fn new(filter: &StatusFilter) -> Self {
        match filter {
            StatusFilter::All => StatusClause {
                sql: "",
                statuses: Vec::new(),
            },
            StatusFilter::Only(list) => StatusClause {
                sql: "WHERE a.status = ANY($1)",
                statuses: list.clone(),
            },
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        if self.sql.is_empty() {
            Vec::new()
        } else {
            vec![&self.statuses]
        }
    }
}

/// What the tables hold.
pub(super) fn inventory(client: &mut impl GenericClient, n: &Names) -> Result<Inventory> {
    let mut inv = Inventory::default();
    for r in client.query(
        &format!(
            "SELECT coalesce(status, ''), count(*) FROM {} GROUP BY 1",
            n.analyses
        ),
        &[],
    )? {
        inv.analyses_by_status
            .insert(r.get(0), r.get::<_, i64>(1) as u64);
    }
    let counts = client.query_one(
        &format!(
            "SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})",
            n.chunks, n.artifacts
        ),
        &[],
    )?;
    inv.chunks = counts.get::<_, i64>(0) as u64;
    inv.artifacts = counts.get::<_, i64>(1) as u64;
    Ok(inv)
}

/// The models and dimensions of the stored embeddings, with chunk counts.
pub(super) fn embedding_models(
    client: &mut impl GenericClient,
    n: &Names,
) -> Result<Vec<EmbeddingModel>> {
    let rows = client.query(
        &format!(
            "SELECT coalesce(embedding_model, ''), vector_dims(embedding), count(*) FROM {}
              WHERE embedding IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC, 1",
            n.chunks
        ),
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| EmbeddingModel {
            model: r.get(0),
            dimension: r.get::<_, i32>(1) as usize,
            chunks: r.get::<_, i64>(2) as u64,
        })
        .collect())
}

/// The (model, text digest) pairs that chunks use.
pub(super) fn used_cache_keys(n: &Names) -> String {
    format!(
        "SELECT DISTINCT embedding_model AS model, sha256(convert_to(content, 'UTF8')) AS digest
           FROM {} WHERE embedding_model IS NOT NULL",
        n.chunks
    )
}

fn embedding_cache(client: &mut impl GenericClient, n: &Names) -> Result<Vec<CacheUsage>> {
    let rows = client.query(
        &format!(
            "WITH used AS ({})
             SELECT c.model, octet_length(c.embedding) / 4, count(*),
                    sum(octet_length(c.embedding))::bigint, count(*) FILTER (WHERE u.model IS NULL)
               FROM {} c LEFT JOIN used u ON u.model = c.model AND u.digest = c.content_sha256
              GROUP BY 1, 2 ORDER BY 1, 2",
            used_cache_keys(n),
            n.cache
        ),
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| CacheUsage {
            model: r.get(0),
            dimension: r.get::<_, i32>(1) as usize,
            entries: r.get::<_, i64>(2) as u64,
            bytes: r.get::<_, i64>(3) as u64,
            unused: r.get::<_, i64>(4) as u64,
        })
        .collect())
}

/// One portal's rows, fetched a page at a time.
struct Paged {
    portal: postgres::Portal,
    page: VecDeque<Row>,
    exhausted: bool,
}

impl Paged {
    fn next(&mut self, tx: &mut Transaction<'_>) -> Result<Option<Row>> {
        if self.page.is_empty() && !self.exhausted {
            let rows = tx.query_portal(&self.portal, FETCH_ROWS)?;
            self.exhausted = rows.len() < FETCH_ROWS as usize;
            self.page.extend(rows);
        }
        Ok(self.page.pop_front())
    }
}

/// The three portals of a backup, on the snapshot's transaction.
struct Portals<'s, 'c> {
    tx: &'s mut Transaction<'c>,
    analyses: Paged,
    chunks: Paged,
    artifacts: Paged,
}

impl RowStreams for Portals<'_, '_> {
    type Key = Uuid;

    fn next_analysis(&mut self) -> Result<Option<(Uuid, Analysis)>> {
        match self.analyses.next(self.tx)? {
            Some(row) => decode::analysis(&row).map(|a| Some((a.id, a))),
            None => Ok(None),
        }
    }

    fn next_chunk(&mut self) -> Result<Option<(Uuid, Chunk)>> {
        self.chunks
            .next(self.tx)?
            .map(|r| decode::chunk(&r))
            .transpose()
    }

    fn next_artifact(&mut self) -> Result<Option<(Uuid, Artifact)>> {
        self.artifacts
            .next(self.tx)?
            .map(|r| decode::artifact(&r))
            .transpose()
    }
}

impl ReadSnapshot for PgSnapshot<'_> {
    fn inventory(&mut self) -> Result<Inventory> {
        inventory(&mut self.tx, self.names)
    }

    fn embedding_models(&mut self) -> Result<Vec<EmbeddingModel>> {
        embedding_models(&mut self.tx, self.names)
    }

    fn counts(&mut self, filter: &StatusFilter) -> Result<Counts> {
        let n = self.names;
        let status = StatusClause::new(filter);
        let clause = status.sql;
        let sql = format!(
            "SELECT (SELECT count(*) FROM {a} a {clause}),
                    (SELECT count(*) FROM {a} a JOIN {c} c ON c.analysis_id = a.id {clause}),
                    (SELECT count(*) FROM {a} a JOIN {r} r ON r.analysis_id = a.id {clause})",
            a = n.analyses,
            c = n.chunks,
            r = n.artifacts
        );
        let row = self.tx.query_one(&sql, &status.params())?;
        Ok(Counts {
            total_analyses: row.get::<_, i64>(0) as u64,
            total_chunks: row.get::<_, i64>(1) as u64,
            total_artifacts: row.get::<_, i64>(2) as u64,
        })
    }

    fn for_each_analysis(
        &mut self,
        filter: &StatusFilter,
        visit: &mut dyn FnMut(Analysis) -> Result<()>,
    ) -> Result<()> {
        let n = self.names;
        let status = StatusClause::new(filter);
        let (clause, params) = (status.sql, status.params());
        let order = "ORDER BY a.created_at, a.id";
        let mut bind = |sql: String| -> Result<Paged> {
            Ok(Paged {
                portal: self.tx.bind(&sql, &params)?,
                page: VecDeque::new(),
                exhausted: false,
            })
        };
        let analyses = bind(format!(
            "SELECT {} FROM {} a {clause} {order}",
            schema::qualified("a", schema::ANALYSIS_COLUMNS),
            n.analyses
        ))?;
        // Children come through a lateral join on the ordered analysis keys: a nested loop over
        // the (analysis_id, chunk_index) index that streams in backup order, instead of
        // sorting every wide row (which spills to disk).
        let keys = format!(
            "(SELECT a.id, a.created_at FROM {} a {clause} {order}) a",
            n.analyses
        );
        let chunks = bind(format!(
            "SELECT {} FROM {keys} CROSS JOIN LATERAL
                 (SELECT * FROM {} c WHERE c.analysis_id = a.id ORDER BY c.chunk_index) c
             {order}, c.chunk_index",
            schema::qualified("c", schema::CHUNK_COLUMNS),
            n.chunks
        ))?;
        let artifacts = bind(format!(
            "SELECT {} FROM {keys} CROSS JOIN LATERAL
                 (SELECT * FROM {} r WHERE r.analysis_id = a.id) r
             {order}",
            schema::qualified("r", schema::ARTIFACT_COLUMNS),
            n.artifacts
        ))?;
        let mut portals = Portals {
            tx: &mut self.tx,
            analyses,
            chunks,
            artifacts,
        };
        merge::for_each_analysis(&mut portals, visit)
    }

    fn embedding_cache(&mut self) -> Result<Vec<CacheUsage>> {
        embedding_cache(&mut self.tx, self.names)
    }

    fn orphans(&mut self) -> Result<(u64, Vec<String>)> {
        let n = self.names;
        let rows = self.tx.query(
            &format!(
                "SELECT 'chunk ' || c.id || ' of missing analysis ' || c.analysis_id FROM {c} c
                  WHERE NOT EXISTS (SELECT 1 FROM {a} a WHERE a.id = c.analysis_id)
                 UNION ALL
                 SELECT 'artifact ' || r.id || ' of missing analysis ' || r.analysis_id FROM {r} r
                  WHERE NOT EXISTS (SELECT 1 FROM {a} a WHERE a.id = r.analysis_id)",
                a = n.analyses,
                c = n.chunks,
                r = n.artifacts
            ),
            &[],
        )?;
        let examples = rows
            .iter()
            .take(crate::report::EXAMPLES_PER_CHECK)
            .map(|r| r.get(0))
            .collect();
        Ok((rows.len() as u64, examples))
    }

    fn embedding_health(&mut self, model: &str, dimension: usize) -> Result<EmbeddingHealth> {
        let n = self.names;
        let row = self.tx.query_one(
            &format!(
                "SELECT count(*),
                        count(*) FILTER (WHERE embedding IS NULL),
                        count(*) FILTER (WHERE embedding IS NOT NULL AND embedding_model IS DISTINCT FROM $1),
                        count(*) FILTER (WHERE embedding IS NOT NULL AND embedding_model = $1
                                           AND vector_dims(embedding) <> $2)
                   FROM {}",
                n.chunks
            ),
            &[&model, &(dimension as i32)],
        )?;
        let mut h = EmbeddingHealth {
            chunks: row.get::<_, i64>(0) as u64,
            missing: row.get::<_, i64>(1) as u64,
            other_model: row.get::<_, i64>(2) as u64,
            wrong_dimension: row.get::<_, i64>(3) as u64,
            examples: Vec::new(),
        };
        if h.missing + h.other_model + h.wrong_dimension > 0 {
            let rows = self.tx.query(
                &format!(
                    "SELECT id::text, embedding_model, vector_dims(embedding) FROM {}
                      WHERE embedding IS NULL OR embedding_model IS DISTINCT FROM $1 OR vector_dims(embedding) <> $2
                      ORDER BY id LIMIT $3",
                    n.chunks
                ),
                &[&model, &(dimension as i32), &(crate::report::EXAMPLES_PER_CHECK as i64)],
            )?;
            for r in rows {
                let id: String = r.get(0);
                let found: Option<String> = r.get(1);
                let dims: Option<i32> = r.get(2);
                h.examples.push(match (found, dims) {
                    (_, None) => format!("chunk {id}: no embedding"),
                    (found, _) if found.as_deref() != Some(model) => {
                        format!(
                            "chunk {id}: embedded by {:?}, expected {model:?}",
                            found.unwrap_or_default()
                        )
                    }
                    (_, Some(d)) => format!("chunk {id}: dimension {d}, expected {dimension}"),
                });
            }
        }
        Ok(h)
    }
}
