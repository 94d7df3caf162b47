//! Reading: a deferred read transaction per snapshot (its shared lock keeps writers from
//! committing until it ends); the backup's row streams merged by `store::merge`. Every
//! statement is built from the [`Layout`], so goldset's own tables and an application's are read
//! by the same code.

use super::super::layout::{quote_name as q, EmbeddingEncoding, Layout};
use super::super::merge::{self, RowStreams};
use super::super::{
    CacheUsage, EmbeddingHealth, EmbeddingModel, Inventory, Provenance, ReadSnapshot, Result,
};
use super::decode;
use crate::model::{Analysis, Artifact, Chunk, Counts, Finding, StatusFilter};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, Rows, Transaction};

/// How a connection reads the dataset: the layout, and where goldset keeps its own tables.
#[derive(Clone, Copy)]
pub(super) struct Reading<'c> {
    pub(super) layout: &'c Layout,
    /// The embedding cache table.
    pub(super) cache: &'c str,
    /// goldset's record of embedding models beside an application's chunks, when it exists.
    pub(super) model_table: Option<&'c str>,
}

impl Reading<'_> {
    /// `WHERE a.status IN (?1, …)` (or nothing) and its parameters, in the stored words.
    fn status_clause(&self, filter: &StatusFilter) -> (String, Vec<SqlValue>) {
        match filter {
            StatusFilter::All => (String::new(), Vec::new()),
            StatusFilter::Only(list) => {
                let marks: Vec<String> = (1..=list.len()).map(|i| format!("?{i}")).collect();
                let values = list
                    .iter()
                    .map(|s| SqlValue::Text(self.layout.status_to_store(s).to_owned()))
                    .collect();
                let column = q(&self.layout.analyses.status);
                (
                    format!("WHERE a.{column} IN ({})", marks.join(", ")),
                    values,
                )
            }
        }
    }

    /// The model of chunk `c`'s embedding, and the join that provides it.
    pub(super) fn model(&self) -> (String, String) {
        let c = &self.layout.chunks;
        match (&c.embedding_model, self.model_table) {
            (Some(column), _) => (format!("c.{}", q(column)), String::new()),
            // A record counts only for the text it was made from (see the PostgreSQL store).
            (None, Some(table)) => (
                "e.model".into(),
                format!(
                    "LEFT JOIN {table} e ON e.chunk_id = c.{}
                       AND e.content_sha256 = goldset_sha256(c.{})",
                    q(&c.id),
                    q(&c.content)
                ),
            ),
            (None, None) => ("NULL".into(), String::new()),
        }
    }

    /// The SHA-256 recorded for chunk `c`'s embedding (of the text it was made from), and the
    /// join that provides it: goldset's own column, or its record beside an application's
    /// chunks (whatever text the record was made for).
    fn recorded_digest(&self) -> (String, String) {
        let c = &self.layout.chunks;
        if self.layout.owned {
            return ("c.embedding_sha256".into(), String::new());
        }
        match self.model_table {
            Some(table) => (
                "p.content_sha256".into(),
                format!("LEFT JOIN {table} p ON p.chunk_id = c.{}", q(&c.id)),
            ),
            None => ("NULL".into(), String::new()),
        }
    }

    /// The number of values in chunk `c`'s embedding.
    pub(super) fn dimension(&self) -> String {
        let e = format!("c.{}", q(&self.layout.chunks.embedding));
        match self.layout.embedding {
            EmbeddingEncoding::Json => format!("json_array_length({e})"),
            _ => format!("length({e}) / 4"),
        }
    }
}

pub(super) struct SqliteSnapshot<'c> {
    pub(super) tx: Transaction<'c>,
    pub(super) reading: Reading<'c>,
}

/// What the tables hold.
pub(super) fn inventory(conn: &Connection, r: Reading<'_>) -> Result<Inventory> {
    let l = r.layout;
    let mut inv = Inventory::default();
    let mut stmt = conn.prepare(&format!(
        "SELECT coalesce({}, ''), count(*) FROM {} GROUP BY 1",
        q(&l.analyses.status),
        q(&l.analyses.table)
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let status: String = row.get(0)?;
        *inv.analyses_by_status
            .entry(l.status_from_store(&status).to_owned())
            .or_default() += row.get::<_, i64>(1)? as u64;
    }
    let count = |table: &str| -> Result<u64> {
        Ok(
            conn.query_row(&format!("SELECT count(*) FROM {}", q(table)), [], |row| {
                row.get::<_, i64>(0)
            })? as u64,
        )
    };
    inv.chunks = count(&l.chunks.table)?;
    inv.artifacts = match &l.artifacts {
        Some(t) => count(&t.table)?,
        None => 0,
    };
    Ok(inv)
}

/// The models and dimensions of the stored embeddings, with chunk counts.
pub(super) fn embedding_models(conn: &Connection, r: Reading<'_>) -> Result<Vec<EmbeddingModel>> {
    let (model, join) = r.model();
    let mut stmt = conn.prepare(&format!(
        "SELECT {model}, {}, count(*) FROM {} c {join}
         WHERE c.{} IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC, 1",
        r.dimension(),
        q(&r.layout.chunks.table),
        q(&r.layout.chunks.embedding)
    ))?;
    let rows = stmt.query_map([], |row| {
        Ok(EmbeddingModel {
            model: row.get::<_, Option<String>>(0)?.unwrap_or_default(),
            dimension: row.get::<_, Option<i64>>(1)?.unwrap_or(0) as usize,
            chunks: row.get::<_, i64>(2)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stale chunks and chunks of unknown provenance (see [`ReadSnapshot::embedding_provenance`]).
pub(super) fn embedding_provenance(
    conn: &Connection,
    r: Reading<'_>,
    limit: Option<usize>,
) -> Result<Provenance> {
    let (digest, join) = r.recorded_digest();
    let c = &r.layout.chunks;
    let mut stmt = conn.prepare(&format!(
        "SELECT c.{id}, {digest} IS NULL FROM {table} c {join}
          WHERE c.{emb} IS NOT NULL AND {digest} IS NOT goldset_sha256(c.{content})
          ORDER BY c.{id}",
        id = q(&c.id),
        table = q(&c.table),
        emb = q(&c.embedding),
        content = q(&c.content),
    ))?;
    let mut rows = stmt.query([])?;
    let mut p = Provenance::default();
    while let Some(row) = rows.next()? {
        let id = chunk_id(row.get(0)?);
        if row.get::<_, bool>(1)? {
            p.unknown += 1;
            if p.unknown_ids.len() < crate::report::EXAMPLES_PER_CHECK {
                p.unknown_ids.push(id);
            }
        } else {
            p.stale += 1;
            if limit.is_none_or(|n| p.stale_ids.len() < n) {
                p.stale_ids.push(id);
            }
        }
    }
    Ok(p)
}

/// A chunk id as goldset writes it (hyphenated), whatever form the column keeps it in; as
/// stored when it is no UUID.
pub(super) fn chunk_id(stored: String) -> String {
    match uuid::Uuid::try_parse(stored.trim()) {
        Ok(id) => id.to_string(),
        Err(_) => stored,
    }
}

/// The (model, text digest) pairs that chunks use (never NULL, so `NOT IN` works).
pub(super) fn used_cache_keys(r: Reading<'_>) -> String {
    let (model, join) = r.model();
    format!(
        "SELECT DISTINCT {model}, goldset_sha256(c.{}) FROM {} c {join}
          WHERE {model} IS NOT NULL",
        q(&r.layout.chunks.content),
        q(&r.layout.chunks.table)
    )
}

fn embedding_cache(conn: &Connection, r: Reading<'_>) -> Result<Vec<CacheUsage>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [r.cache],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!(
        "WITH used (model, digest) AS ({})
         SELECT c.model, length(c.embedding) / 4, count(*), sum(length(c.embedding)), sum(u.model IS NULL)
           FROM {} c LEFT JOIN used u ON u.model = c.model AND u.digest = c.content_sha256
          GROUP BY 1, 2 ORDER BY 1, 2",
        used_cache_keys(r),
        r.cache
    ))?;
    let rows = stmt.query_map([], |row| {
        Ok(CacheUsage {
            model: row.get(0)?,
            dimension: row.get::<_, i64>(1)? as usize,
            entries: row.get::<_, i64>(2)? as u64,
            bytes: row.get::<_, i64>(3)? as u64,
            unused: row.get::<_, i64>(4)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The result sets of a backup.
struct RowsOf<'s> {
    layout: &'s Layout,
    analyses: Rows<'s>,
    chunks: Rows<'s>,
    artifacts: Option<Rows<'s>>,
    findings: Option<Rows<'s>>,
}

impl RowStreams for RowsOf<'_> {
    /// The analysis id as stored (text).
    type Key = String;

    fn next_analysis(&mut self) -> Result<Option<(String, Analysis)>> {
        match self.analyses.next()? {
            Some(row) => {
                let analysis = decode::analysis(row, self.layout)?;
                Ok(Some((decode::key(row, 0)?, analysis)))
            }
            None => Ok(None),
        }
    }

    fn next_chunk(&mut self) -> Result<Option<(String, Chunk)>> {
        self.chunks
            .next()?
            .map(|row| decode::chunk(row, self.layout))
            .transpose()
    }

    fn next_artifact(&mut self) -> Result<Option<(String, Artifact)>> {
        let Some(rows) = &mut self.artifacts else {
            return Ok(None);
        };
        rows.next()?
            .map(|row| decode::artifact(row, self.layout))
            .transpose()
    }

    fn next_finding(&mut self) -> Result<Option<(String, Finding)>> {
        let Some(rows) = &mut self.findings else {
            return Ok(None);
        };
        rows.next()?
            .map(|row| decode::finding(row, self.layout))
            .transpose()
    }
}

/// The SELECT of one backup stream: `columns` of `table` joined to the analyses `clause`
/// covers, in backup order, then `child_order`.
fn child_sql(
    l: &Layout,
    clause: &str,
    columns: &str,
    table: &str,
    owner: &str,
    child_order: &str,
) -> String {
    let a = &l.analyses;
    format!(
        "SELECT {columns} FROM {} a JOIN {} x ON x.{} = a.{} {clause}
          ORDER BY a.{}, a.{}{child_order}",
        q(&a.table),
        q(table),
        q(owner),
        q(&a.id),
        q(&a.created_at),
        q(&a.id),
    )
}

impl ReadSnapshot for SqliteSnapshot<'_> {
    fn inventory(&mut self) -> Result<Inventory> {
        inventory(&self.tx, self.reading)
    }

    fn embedding_models(&mut self) -> Result<Vec<EmbeddingModel>> {
        embedding_models(&self.tx, self.reading)
    }

    fn embedding_provenance(&mut self, limit: Option<usize>) -> Result<Provenance> {
        embedding_provenance(&self.tx, self.reading, limit)
    }

    fn counts(&mut self, filter: &StatusFilter) -> Result<Counts> {
        let l = self.reading.layout;
        let (clause, values) = self.reading.status_clause(filter);
        let count = |sql: String| -> Result<u64> {
            Ok(self
                .tx
                .query_row(&sql, params_from_iter(values.iter()), |r| {
                    r.get::<_, i64>(0)
                })? as u64)
        };
        let (a, aid) = (q(&l.analyses.table), q(&l.analyses.id));
        let children = |table: &str, owner: &str| {
            format!(
                "SELECT count(*) FROM {a} a JOIN {} x ON x.{} = a.{aid} {clause}",
                q(table),
                q(owner)
            )
        };
        Ok(Counts {
            total_analyses: count(format!("SELECT count(*) FROM {a} a {clause}"))?,
            total_chunks: count(children(&l.chunks.table, &l.chunks.analysis_id))?,
            total_artifacts: match &l.artifacts {
                Some(t) => count(children(&t.table, &t.analysis_id))?,
                None => 0,
            },
        })
    }

    fn for_each_analysis(
        &mut self,
        filter: &StatusFilter,
        visit: &mut dyn FnMut(Analysis) -> Result<()>,
    ) -> Result<()> {
        let l = self.reading.layout;
        let (clause, values) = self.reading.status_clause(filter);
        let a = &l.analyses;
        let findings = match &a.findings {
            Some(column) => format!("a.{}", q(column)),
            None => "NULL".into(),
        };
        let mut analyses = self.tx.prepare(&format!(
            "SELECT a.{}, a.{}, a.{}, a.{}, a.{}, {findings} FROM {} a {clause} ORDER BY a.{}, a.{}",
            q(&a.id),
            q(&a.url),
            q(&a.content_type),
            q(&a.status),
            q(&a.created_at),
            q(&a.table),
            q(&a.created_at),
            q(&a.id),
        ))?;
        let c = &l.chunks;
        let optional = |column: &Option<String>| match column {
            Some(name) => format!("x.{}", q(name)),
            None => "NULL".into(),
        };
        let mut chunks = self.tx.prepare(&child_sql(
            l,
            &clause,
            &format!(
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
            &format!(", x.{}", q(&c.chunk_index)),
        ))?;
        let mut artifacts = match &l.artifacts {
            Some(t) => Some(self.tx.prepare(&child_sql(
                l,
                &clause,
                &format!(
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
            ))?),
            None => None,
        };
        let mut findings = match &l.findings {
            Some(f) => Some(self.tx.prepare(&child_sql(
                l,
                &clause,
                &format!(
                    "x.{}, x.{}, x.{}, x.{}, x.{}, {}",
                    q(&f.analysis_id),
                    q(&f.agent),
                    q(&f.category),
                    q(&f.content),
                    q(&f.confidence),
                    optional(&f.metadata)
                ),
                &f.table,
                &f.analysis_id,
                &format!(", x.{}", q(&f.position)),
            ))?),
            None => None,
        };
        let params = || params_from_iter(values.iter());
        let mut streams = RowsOf {
            layout: l,
            analyses: analyses.query(params())?,
            chunks: chunks.query(params())?,
            artifacts: match &mut artifacts {
                Some(stmt) => Some(stmt.query(params())?),
                None => None,
            },
            findings: match &mut findings {
                Some(stmt) => Some(stmt.query(params())?),
                None => None,
            },
        };
        merge::for_each_analysis(&mut streams, visit)
    }

    fn embedding_cache(&mut self) -> Result<Vec<CacheUsage>> {
        embedding_cache(&self.tx, self.reading)
    }

    fn orphans(&mut self) -> Result<(u64, Vec<String>)> {
        let l = self.reading.layout;
        let (a, aid) = (q(&l.analyses.table), q(&l.analyses.id));
        let orphans_of = |kind: &str, table: &str, id: &str, owner: &str| {
            format!(
                "SELECT '{kind} ' || {id} || ' of missing analysis ' || {owner} FROM {}
                  WHERE {owner} NOT IN (SELECT {aid} FROM {a})",
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
        let mut stmt = self.tx.prepare(&parts.join(" UNION ALL "))?;
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

    fn for_each_embedding(
        &mut self,
        model: &str,
        dimension: usize,
        visit: &mut super::super::EmbeddingVisitor<'_>,
    ) -> Result<()> {
        super::vectors::for_each_embedding(&self.tx, self.reading, model, dimension, visit)
    }

    fn embedding_health(&mut self, model: &str, dimension: usize) -> Result<EmbeddingHealth> {
        let r = self.reading;
        let (found, join) = r.model();
        let c = &r.layout.chunks;
        let mut stmt = self.tx.prepare(&format!(
            "SELECT c.{id}, {found}, CASE WHEN c.{e} IS NULL THEN NULL ELSE {dims} END
               FROM {table} c {join} ORDER BY c.{id}",
            id = q(&c.id),
            e = q(&c.embedding),
            dims = r.dimension(),
            table = q(&c.table),
        ))?;
        let mut rows = stmt.query([])?;
        let mut h = EmbeddingHealth::default();
        while let Some(row) = rows.next()? {
            h.chunks += 1;
            let id = decode::key(row, 0)?;
            let found_model: Option<String> = row.get(1)?;
            let dims: Option<i64> = row.get(2)?;
            let problem = match (found_model, dims) {
                (_, None) => {
                    h.missing += 1;
                    Some("no embedding".to_owned())
                }
                (found, _) if found.as_deref() != Some(model) => {
                    h.other_model += 1;
                    Some(match found {
                        Some(found) => format!("embedded by {found:?}, expected {model:?}"),
                        None => format!(
                            "no record of the model that embedded it, expected {model:?} (restore or reembed with goldset to record it)"
                        ),
                    })
                }
                (_, Some(d)) if d as usize != dimension => {
                    h.wrong_dimension += 1;
                    Some(format!("dimension {d}, expected {dimension}"))
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
