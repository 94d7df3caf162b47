//! Reading: one `REPEATABLE READ, READ ONLY` transaction per snapshot; the backup's row streams
//! (analyses, chunks, artifacts, and findings where they are rows) come through portals, a page
//! at a time, and are merged by `store::merge`. Every statement is built from the [`Layout`], so
//! goldset's own tables and an application's are read by the same code; nothing here writes.

use super::super::layout::{quote_name as q, EmbeddingEncoding, Layout, TimeEncoding};
use super::super::merge::{self, RowStreams};
use super::super::{
    CacheUsage, EmbeddingHealth, EmbeddingModel, Inventory, Provenance, ReadSnapshot, Result,
};
use super::provenance::embedding_provenance;
use super::{decode, Names};
use crate::model::{Analysis, Artifact, Chunk, Counts, Finding, StatusFilter};
use postgres::types::ToSql;
use postgres::{GenericClient, Row, Transaction};
use std::collections::VecDeque;
use uuid::Uuid;

/// Rows fetched per round trip when streaming a backup.
const FETCH_ROWS: i32 = 1000;

/// What a reader needs to know: the layout, goldset's own tables, and whether goldset's record
/// of embedding models exists beside an application's tables.
pub(super) struct Reading<'c> {
    pub(super) layout: &'c Layout,
    pub(super) names: &'c Names,
    /// `schema.goldset_embeddings` exists (adopted layouts without a model column).
    pub(super) model_table: bool,
}

impl Reading<'_> {
    /// The stored status words for `filter`'s goldset words.
    fn status_clause(&self) -> String {
        format!("WHERE a.{} = ANY($1)", q(&self.layout.analyses.status))
    }

    fn statuses(&self, filter: &StatusFilter) -> Option<Vec<String>> {
        match filter {
            StatusFilter::All => None,
            StatusFilter::Only(list) => Some(
                list.iter()
                    .map(|s| self.layout.status_to_store(s).to_owned())
                    .collect(),
            ),
        }
    }

    /// `created_at` as an instant that orders correctly: text is cast (the session is UTC),
    /// wall-clock times of a mapping's `time_zone` are placed in it (as the decoder reads them).
    fn time_order(&self, alias: &str) -> String {
        let column = format!("{alias}.{}", q(&self.layout.analyses.created_at));
        let zone = &self.layout.time_zone;
        let in_zone =
            |wall: &str| format!("timezone('{}', {wall})", zone.name().replace('\'', "''"));
        match self.layout.timestamps {
            TimeEncoding::Text if zone.is_utc() => format!("({column})::timestamptz"),
            TimeEncoding::Text => format!(
                "(CASE WHEN {column} ~ '([zZ]|[+-][0-9][0-9]:[0-9][0-9])$' THEN ({column})::timestamptz ELSE {} END)",
                in_zone(&format!("({column})::timestamp"))
            ),
            TimeEncoding::Timestamp if !zone.is_utc() => in_zone(&column),
            _ => column,
        }
    }

    /// The model of chunk `c`'s embedding, and the join that provides it.
    pub(super) fn model(&self) -> (String, String) {
        let c = &self.layout.chunks;
        match (&c.embedding_model, self.model_table) {
            (Some(column), _) => (format!("c.{}", q(column)), String::new()),
            (None, true) => (
                "e.model".into(),
                // A record counts only for the text it was made from: a chunk the application
                // rewrote has no known model until goldset embeds it again.
                format!(
                    "LEFT JOIN {} e ON e.chunk_id = c.{}::text
                       AND e.content_sha256 = sha256(convert_to(c.{}, 'UTF8'))",
                    self.names.embeddings,
                    q(&c.id),
                    q(&c.content)
                ),
            ),
            (None, false) => ("NULL::text".into(), String::new()),
        }
    }

    /// The number of values in chunk `c`'s embedding.
    pub(super) fn dimension(&self) -> String {
        let e = format!("c.{}", q(&self.layout.chunks.embedding));
        match self.layout.embedding {
            EmbeddingEncoding::Vector => format!("vector_dims({e})"),
            EmbeddingEncoding::RealArray => format!("array_length({e}, 1)"),
            EmbeddingEncoding::F32Le => format!("(octet_length({e}) / 4)::int"),
            EmbeddingEncoding::Json => format!("json_array_length(({e})::json)"),
        }
    }
}

/// A read-only view of one moment.
pub(super) struct PgSnapshot<'c> {
    pub(super) tx: Transaction<'c>,
    pub(super) reading: Reading<'c>,
}

/// What the tables hold.
pub(super) fn inventory(client: &mut impl GenericClient, r: &Reading<'_>) -> Result<Inventory> {
    let l = r.layout;
    let mut inv = Inventory::default();
    for row in client.query(
        &format!(
            "SELECT coalesce(({})::text, ''), count(*) FROM {} GROUP BY 1",
            q(&l.analyses.status),
            q(&l.analyses.table)
        ),
        &[],
    )? {
        let status: String = row.get(0);
        *inv.analyses_by_status
            .entry(l.status_from_store(&status).to_owned())
            .or_default() += row.get::<_, i64>(1) as u64;
    }
    let artifacts = match &l.artifacts {
        Some(t) => format!("(SELECT count(*) FROM {})", q(&t.table)),
        None => "0::bigint".into(),
    };
    let counts = client.query_one(
        &format!(
            "SELECT (SELECT count(*) FROM {}), {artifacts}",
            q(&l.chunks.table)
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
    r: &Reading<'_>,
) -> Result<Vec<EmbeddingModel>> {
    let (model, join) = r.model();
    let rows = client.query(
        &format!(
            "SELECT coalesce({model}, ''), {}, count(*) FROM {} c {join}
              WHERE c.{} IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC, 1",
            r.dimension(),
            q(&r.layout.chunks.table),
            q(&r.layout.chunks.embedding),
        ),
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|row| EmbeddingModel {
            model: row.get(0),
            dimension: row.get::<_, Option<i32>>(1).unwrap_or(0) as usize,
            chunks: row.get::<_, i64>(2) as u64,
        })
        .collect())
}

/// The (model, text digest) pairs that chunks use.
pub(super) fn used_cache_keys(r: &Reading<'_>) -> String {
    let (model, join) = r.model();
    format!(
        "SELECT DISTINCT {model} AS model, sha256(convert_to(c.{}, 'UTF8')) AS digest
           FROM {} c {join} WHERE {model} IS NOT NULL",
        q(&r.layout.chunks.content),
        q(&r.layout.chunks.table),
    )
}

fn embedding_cache(client: &mut impl GenericClient, r: &Reading<'_>) -> Result<Vec<CacheUsage>> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&r.names.cache])?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client.query(
        &format!(
            "WITH used AS ({})
             SELECT c.model, octet_length(c.embedding) / 4, count(*),
                    sum(octet_length(c.embedding))::bigint, count(*) FILTER (WHERE u.model IS NULL)
               FROM {} c LEFT JOIN used u ON u.model = c.model AND u.digest = c.content_sha256
              GROUP BY 1, 2 ORDER BY 1, 2",
            used_cache_keys(r),
            r.names.cache
        ),
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|row| CacheUsage {
            model: row.get(0),
            dimension: row.get::<_, i32>(1) as usize,
            entries: row.get::<_, i64>(2) as u64,
            bytes: row.get::<_, i64>(3) as u64,
            unused: row.get::<_, i64>(4) as u64,
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

/// The portals of a backup, on the snapshot's transaction.
struct Portals<'s, 'c> {
    tx: &'s mut Transaction<'c>,
    layout: &'s Layout,
    analyses: Paged,
    chunks: Paged,
    artifacts: Option<Paged>,
    findings: Option<Paged>,
}

impl RowStreams for Portals<'_, '_> {
    type Key = Uuid;

    fn next_analysis(&mut self) -> Result<Option<(Uuid, Analysis)>> {
        match self.analyses.next(self.tx)? {
            Some(row) => decode::analysis(&row, self.layout).map(|a| Some((a.id, a))),
            None => Ok(None),
        }
    }

    fn next_chunk(&mut self) -> Result<Option<(Uuid, Chunk)>> {
        self.chunks
            .next(self.tx)?
            .map(|r| decode::chunk(&r, self.layout))
            .transpose()
    }

    fn next_artifact(&mut self) -> Result<Option<(Uuid, Artifact)>> {
        let Some(paged) = &mut self.artifacts else {
            return Ok(None);
        };
        paged
            .next(self.tx)?
            .map(|r| decode::artifact(&r, self.layout))
            .transpose()
    }

    fn next_finding(&mut self) -> Result<Option<(Uuid, Finding)>> {
        let Some(paged) = &mut self.findings else {
            return Ok(None);
        };
        paged
            .next(self.tx)?
            .map(|r| decode::finding(&r, self.layout))
            .transpose()
    }
}

impl ReadSnapshot for PgSnapshot<'_> {
    fn inventory(&mut self) -> Result<Inventory> {
        inventory(&mut self.tx, &self.reading)
    }

    fn embedding_models(&mut self) -> Result<Vec<EmbeddingModel>> {
        embedding_models(&mut self.tx, &self.reading)
    }

    fn counts(&mut self, filter: &StatusFilter) -> Result<Counts> {
        let r = &self.reading;
        let l = r.layout;
        let statuses = r.statuses(filter);
        let clause = if statuses.is_some() {
            r.status_clause()
        } else {
            String::new()
        };
        let (a, aid) = (q(&l.analyses.table), q(&l.analyses.id));
        let artifacts = match &l.artifacts {
            Some(t) => format!(
                "(SELECT count(*) FROM {a} a JOIN {} r ON r.{} = a.{aid} {clause})",
                q(&t.table),
                q(&t.analysis_id)
            ),
            None => "0::bigint".into(),
        };
        let sql = format!(
            "SELECT (SELECT count(*) FROM {a} a {clause}),
                    (SELECT count(*) FROM {a} a JOIN {c} c ON c.{cid} = a.{aid} {clause}),
                    {artifacts}",
            c = q(&l.chunks.table),
            cid = q(&l.chunks.analysis_id),
        );
        let params: Vec<&(dyn ToSql + Sync)> = match &statuses {
            Some(s) => vec![s],
            None => Vec::new(),
        };
        let row = self.tx.query_one(&sql, &params)?;
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
        let r = &self.reading;
        let l = r.layout;
        let statuses = r.statuses(filter);
        let clause = if statuses.is_some() {
            r.status_clause()
        } else {
            String::new()
        };
        let params: Vec<&(dyn ToSql + Sync)> = match &statuses {
            Some(s) => vec![s],
            None => Vec::new(),
        };
        let (at, aid) = (r.time_order("a"), format!("a.{}", q(&l.analyses.id)));
        let order = format!("ORDER BY {at}, {aid}");
        let a = &l.analyses;
        let findings = match &a.findings {
            Some(column) => format!("a.{}", q(column)),
            None => "NULL::jsonb".into(),
        };
        let analyses_sql = format!(
            "SELECT {aid}, a.{}, a.{}, a.{}, a.{}, {findings} FROM {} a {clause} {order}",
            q(&a.url),
            q(&a.content_type),
            q(&a.status),
            q(&a.created_at),
            q(&a.table)
        );
        // Children come through a lateral join on the ordered analysis keys: a nested loop over
        // the (analysis id, child order) index that streams in backup order, instead of
        // sorting every wide row (which spills to disk).
        let keys = format!(
            "(SELECT {aid} AS k_id, {at} AS k_at FROM {} a {clause} {order}) k",
            q(&a.table)
        );
        let child = |select: String, table: &str, owner: &str, child_order: &str| {
            format!(
                "SELECT {select} FROM {keys} CROSS JOIN LATERAL
                     (SELECT * FROM {} x WHERE x.{} = k.k_id {child_order}) x
                 ORDER BY k.k_at, k.k_id{}",
                q(table),
                q(owner),
                child_order.replace("ORDER BY x.", ", x.")
            )
        };
        let c = &l.chunks;
        let optional = |column: &Option<String>| match column {
            Some(name) => format!("x.{}", q(name)),
            None => "NULL::text".into(),
        };
        let chunks_sql = child(
            format!(
                "x.{}, x.{}, x.{}, x.{}, {}, {}, x.{}",
                q(&c.id),
                q(&c.analysis_id),
                q(&c.chunk_index),
                q(&c.content),
                optional(&c.section_title),
                optional(&c.section_path),
                q(&c.content_type)
            ),
            &c.table,
            &c.analysis_id,
            &format!("ORDER BY x.{}", q(&c.chunk_index)),
        );
        let artifacts_sql = l.artifacts.as_ref().map(|t| {
            child(
                format!(
                    "x.{}, x.{}, x.{}, x.{}, x.{}",
                    q(&t.id),
                    q(&t.analysis_id),
                    q(&t.summary),
                    q(&t.key_findings),
                    q(&t.metadata)
                ),
                &t.table,
                &t.analysis_id,
                "",
            )
        });
        let findings_sql = l.findings.as_ref().map(|f| {
            child(
                format!(
                    "x.{}, x.{}, x.{}, x.{}, (x.{})::float8, {}",
                    q(&f.analysis_id),
                    q(&f.agent),
                    q(&f.category),
                    q(&f.content),
                    q(&f.confidence),
                    match &f.metadata {
                        Some(m) => format!("x.{}", q(m)),
                        None => "NULL::jsonb".into(),
                    }
                ),
                &f.table,
                &f.analysis_id,
                &format!("ORDER BY x.{}", q(&f.position)),
            )
        });
        let tx = &mut self.tx;
        let mut bind = |sql: &str| -> Result<Paged> {
            tracing::debug!(sql, "backup stream");
            Ok(Paged {
                portal: tx.bind(sql, &params)?,
                page: VecDeque::new(),
                exhausted: false,
            })
        };
        let analyses = bind(&analyses_sql)?;
        let chunks = bind(&chunks_sql)?;
        let artifacts = artifacts_sql.as_deref().map(&mut bind).transpose()?;
        let findings = findings_sql.as_deref().map(&mut bind).transpose()?;
        let mut portals = Portals {
            tx,
            layout: l,
            analyses,
            chunks,
            artifacts,
            findings,
        };
        merge::for_each_analysis(&mut portals, visit)
    }

    fn embedding_cache(&mut self) -> Result<Vec<CacheUsage>> {
        embedding_cache(&mut self.tx, &self.reading)
    }

    fn orphans(&mut self) -> Result<(u64, Vec<String>)> {
        let l = self.reading.layout;
        let (a, aid) = (q(&l.analyses.table), q(&l.analyses.id));
        let orphans_of = |kind: &str, table: &str, id: &str, owner: &str| {
            format!(
                "SELECT '{kind} ' || x.{id}::text || ' of missing analysis ' || x.{owner}::text
                   FROM {} x WHERE NOT EXISTS (SELECT 1 FROM {a} a WHERE a.{aid} = x.{owner})",
                q(table),
                id = q(id),
                owner = q(owner)
            )
        };
        let mut parts = vec![orphans_of(
            "chunk",
            &l.chunks.table,
            &l.chunks.id,
            &l.chunks.analysis_id,
        )];
        if let Some(t) = &l.artifacts {
            parts.push(orphans_of("artifact", &t.table, &t.id, &t.analysis_id));
        }
        if let Some(f) = &l.findings {
            parts.push(orphans_of("finding", &f.table, &f.position, &f.analysis_id));
        }
        let rows = self.tx.query(&parts.join(" UNION ALL "), &[])?;
        let examples = rows
            .iter()
            .take(crate::report::EXAMPLES_PER_CHECK)
            .map(|r| r.get(0))
            .collect();
        Ok((rows.len() as u64, examples))
    }

    fn embedding_provenance(&mut self, limit: Option<usize>) -> Result<Provenance> {
        embedding_provenance(&mut self.tx, &self.reading, limit)
    }

    fn for_each_embedding(
        &mut self,
        model: &str,
        dimension: usize,
        visit: &mut super::super::EmbeddingVisitor<'_>,
    ) -> Result<()> {
        super::vectors::for_each_embedding(&mut self.tx, &self.reading, model, dimension, visit)
    }

    fn nearest(&mut self, query: &[f32], depth: usize) -> Result<Vec<(Uuid, f64)>> {
        super::vectors::nearest(&mut self.tx, &self.reading, query, depth)
    }

    fn embedding_health(&mut self, model: &str, dimension: usize) -> Result<EmbeddingHealth> {
        let r = &self.reading;
        let (found, join) = r.model();
        let dims = r.dimension();
        let c = &r.layout.chunks;
        let (table, id, e) = (q(&c.table), q(&c.id), format!("c.{}", q(&c.embedding)));
        let row = self.tx.query_one(
            &format!(
                "SELECT count(*),
                        count(*) FILTER (WHERE {e} IS NULL),
                        count(*) FILTER (WHERE {e} IS NOT NULL AND {found} IS DISTINCT FROM $1),
                        count(*) FILTER (WHERE {e} IS NOT NULL AND {found} = $1 AND {dims} <> $2)
                   FROM {table} c {join}"
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
                    "SELECT c.{id}::text, {found}, {dims} FROM {table} c {join}
                      WHERE {e} IS NULL OR {found} IS DISTINCT FROM $1 OR {dims} <> $2
                      ORDER BY c.{id} LIMIT $3"
                ),
                &[
                    &model,
                    &(dimension as i32),
                    &(crate::report::EXAMPLES_PER_CHECK as i64),
                ],
            )?;
            for row in rows {
                let id: String = row.get(0);
                let found: Option<String> = row.get(1);
                let dims: Option<i32> = row.get(2);
                h.examples.push(match (found, dims) {
                    (_, None) => format!("chunk {id}: no embedding"),
                    (found, _) if found.as_deref() != Some(model) => match found {
                        Some(found) => format!("chunk {id}: embedded by {found:?}, expected {model:?}"),
                        None => format!(
                            "chunk {id}: no record of the model that embedded it, expected {model:?} (restore or reembed with goldset to record it)"
                        ),
                    },
                    (_, Some(d)) => format!("chunk {id}: dimension {d}, expected {dimension}"),
                });
            }
        }
        Ok(h)
    }
}
