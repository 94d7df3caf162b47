//! `eval`: scores retrieval on the golden dataset. The golden queries (`format::queries`) are
//! embedded with the configured model (through the embedding cache, like chunks), searched
//! against the stored chunk embeddings — exactly ([`search`], the rows streamed) or through the
//! database's own vector index — and scored with trec_eval's measures ([`metrics`]); a
//! [`baseline`] file keeps the scores to compare later runs with.
//!
//! Everything the database says is read from one snapshot: the embeddings' health, stale
//! vectors, which chunks the queries' keys name, the dataset's content digest, the search.

pub mod baseline;
pub mod metrics;
pub mod search;

use super::{embedding, OpError};
use crate::embed::Embedder;
use crate::format::queries::{read_queries, GoldenQuery, QueriesError, Target};
use crate::format::writer::write_canonical;
use crate::model::StatusFilter;
use crate::report::{Check, Report};
use crate::store::{ReadSnapshot, Store};
use metrics::Scores;
use search::{ExactSearch, Hit};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How chunks are searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    /// Brute-force cosine over every stored embedding (the reference answer).
    Exact,
    /// The database's nearest-neighbour search (`ORDER BY embedding <=> q LIMIT depth`), through
    /// the application's index when there is one: PostgreSQL only.
    Index,
}

/// What to evaluate, and how.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The golden queries file.
    pub queries: PathBuf,
    /// The cut-offs of `recall@K`, `precision@K`, `ndcg@K`.
    pub ks: Vec<usize>,
    /// Results per query (the run that `mrr` and `map` see).
    pub depth: usize,
    /// How to search.
    pub search: SearchMode,
    /// Score even when some stored vectors were made from text the chunk no longer holds.
    pub allow_stale: bool,
    /// Read and write query vectors in the embedding cache (otherwise nothing is written).
    pub use_cache: bool,
    /// Search threads (0: one per CPU).
    pub threads: usize,
}

/// One query's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryOutcome {
    /// Its id.
    pub id: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its scores.
    pub metrics: Scores,
    /// The chunks its keys name, with their grades.
    pub relevant: usize,
    /// The ranking, best first (`depth` hits at most).
    #[serde(skip)]
    pub ranking: Vec<Hit>,
}

/// What an evaluation found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalSummary {
    /// The queries file.
    pub queries_file: PathBuf,
    /// The model that embedded queries and chunks.
    pub model: String,
    /// Its dimension.
    pub dimension: usize,
    /// How chunks were searched.
    pub search: SearchMode,
    /// The cut-offs.
    pub ks: Vec<usize>,
    /// Results per query.
    pub depth: usize,
    /// Chunk embeddings searched (exact search; 0 for an index search).
    pub chunks: u64,
    /// SHA-256 (hex) of the dataset's content: every analysis's canonical JSON, in backup order.
    pub dataset_sha256: String,
    /// Stale vectors scored anyway (`--allow-stale`).
    pub stale: usize,
    /// Query vectors taken from the embedding cache.
    pub from_cache: usize,
    /// Means over all queries.
    pub metrics: Scores,
    /// Means over the queries of each tag.
    pub per_tag: BTreeMap<String, Scores>,
    /// Every query, in file order.
    pub queries: Vec<QueryOutcome>,
    /// Time the search took.
    #[serde(serialize_with = "crate::ops::serialize_seconds")]
    pub search_time: Duration,
    /// Time taken in all.
    #[serde(serialize_with = "crate::ops::serialize_seconds")]
    pub elapsed: Duration,
}

/// Evaluates retrieval over `store` with `embedder`.
pub fn evaluate(
    store: &mut dyn Store,
    embedder: &dyn Embedder,
    options: &EvalOptions,
) -> Result<EvalSummary, OpError> {
    let started = Instant::now();
    let path = &options.queries;
    let queries = read_queries(path).map_err(|e| match e {
        QueriesError::Io(source) => OpError::Io {
            path: path.clone(),
            source,
        },
        QueriesError::Invalid(report) => OpError::Invalid {
            path: path.clone(),
            report,
        },
    })?;
    if options.depth == 0 || options.ks.contains(&0) {
        return Err(OpError::Refused(
            "--depth and every --k must be at least 1".into(),
        ));
    }
    let (vectors, from_cache) = embed_queries(store, embedder, &queries, options.use_cache)?;
    let (model, dimension) = (embedder.model_id(), embedder.dimension());
    let mut snapshot = store.snapshot()?;
    check_embeddings(snapshot.as_mut(), model, dimension)?;
    let stale = snapshot.embedding_provenance(Some(5))?;
    if stale.stale > 0 && !options.allow_stale {
        return Err(OpError::Refused(format!(
            "{} chunks have embeddings of a text they no longer hold (e.g. {}); scores over them would mislead: run `goldset reembed --stale` first, or pass --allow-stale",
            stale.stale,
            stale.stale_ids.join(", ")
        )));
    }
    let (judged, dataset_sha256) = resolve(snapshot.as_mut(), &queries, path)?;
    let search_started = Instant::now();
    let (rankings, chunks) = match options.search {
        SearchMode::Exact => {
            let threads = match options.threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            };
            let exact = ExactSearch::new(&vectors, dimension, options.depth);
            let mut chunks = 0u64;
            let rankings = exact.run(threads, |visit| {
                snapshot.for_each_embedding(model, dimension, &mut |ids, values| {
                    chunks += ids.len() as u64;
                    visit(ids, values)
                })
            })?;
            (rankings, chunks)
        }
        SearchMode::Index => {
            let mut rankings = Vec::with_capacity(vectors.len());
            for v in &vectors {
                let mut hits: Vec<Hit> = snapshot
                    .nearest(v, options.depth)?
                    .into_iter()
                    .map(|(id, score)| Hit {
                        id,
                        score: score as f32,
                    })
                    .collect();
                search::rank(&mut hits);
                rankings.push(hits);
            }
            (rankings, 0)
        }
    };
    let search_time = search_started.elapsed();
    drop(snapshot);
    let mut outcomes = Vec::with_capacity(queries.len());
    for ((q, ranking), judged) in queries.iter().zip(rankings).zip(judged) {
        let ids: Vec<Uuid> = ranking.iter().map(|h| h.id).collect();
        outcomes.push(QueryOutcome {
            id: q.id.clone(),
            tags: q.tags.clone(),
            metrics: metrics::score(&ids, &judged, &options.ks),
            relevant: judged.len(),
            ranking,
        });
    }
    let mut tags: BTreeMap<String, Vec<&Scores>> = BTreeMap::new();
    for o in &outcomes {
        for t in &o.tags {
            tags.entry(t.clone()).or_default().push(&o.metrics);
        }
    }
    let per_tag = tags
        .into_iter()
        .map(|(t, scores)| (t, metrics::mean(scores)))
        .collect();
    Ok(EvalSummary {
        queries_file: path.clone(),
        model: model.to_owned(),
        dimension,
        search: options.search,
        ks: options.ks.clone(),
        depth: options.depth,
        chunks,
        dataset_sha256,
        stale: stale.stale as usize,
        from_cache,
        metrics: metrics::mean(outcomes.iter().map(|o| &o.metrics)),
        per_tag,
        queries: outcomes,
        search_time,
        elapsed: started.elapsed(),
    })
}

/// The queries' vectors, in order, and how many came from the embedding cache. The cache is a
/// write transaction of its own, committed before the search's snapshot opens; with
/// `use_cache` false (or an embedder not worth caching) nothing is written.
fn embed_queries(
    store: &mut dyn Store,
    embedder: &dyn Embedder,
    queries: &[GoldenQuery],
    use_cache: bool,
) -> Result<(Vec<Vec<f32>>, usize), OpError> {
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    if !use_cache || !embedder.worth_caching() || texts.is_empty() {
        return Ok((embedding::embed_texts(embedder, &texts)?, 0));
    }
    let mut tx = store.begin()?;
    let lookup = embedding::lookup(tx.as_mut(), embedder, &texts, true)?;
    let (vectors, fresh) = embedding::complete(embedder, &texts, lookup.cached)?;
    embedding::remember(tx.as_mut(), embedder, &lookup.digests, &vectors, &fresh)?;
    tx.commit()?;
    Ok((vectors, texts.len() - fresh.len()))
}

/// Refuses to score when some chunk lacks an embedding of the model (a partial or mixed index
/// would make the scores meaningless).
fn check_embeddings(
    snapshot: &mut dyn ReadSnapshot,
    model: &str,
    dimension: usize,
) -> Result<(), OpError> {
    let health = snapshot.embedding_health(model, dimension)?;
    let off = health.missing + health.other_model + health.wrong_dimension;
    if off > 0 {
        return Err(OpError::Refused(format!(
            "{off} of {} chunks have no embedding of {model:?} with {dimension} dimensions (e.g. {}); run `goldset reembed` with this --embedder first",
            health.chunks,
            health.examples.join("; ")
        )));
    }
    Ok(())
}

/// Each query's judged chunks (keys resolved: an analysis or URL means each of its chunks,
/// with the key's grade; a chunk named twice keeps its highest grade), and the dataset's
/// content digest. Keys naming nothing in the database are reported with their place.
fn resolve(
    snapshot: &mut dyn ReadSnapshot,
    queries: &[GoldenQuery],
    path: &std::path::Path,
) -> Result<(Vec<HashMap<Uuid, u32>>, String), OpError> {
    let targets: HashSet<&Target> = queries
        .iter()
        .flat_map(|q| &q.relevant)
        .map(|j| &j.target)
        .collect();
    let mut found: HashMap<Target, Vec<Uuid>> = HashMap::new();
    let mut digest = Sha256::new();
    let mut buffer = Vec::new();
    snapshot.for_each_analysis(&StatusFilter::All, &mut |a| {
        buffer.clear();
        write_canonical(&mut buffer, &a).expect("writing to memory cannot fail");
        digest.update(&buffer);
        let chunk_ids = || a.chunks.iter().map(|c| c.id).collect::<Vec<_>>();
        for key in [Target::Analysis(a.id), Target::Url(a.url.clone())] {
            if targets.contains(&key) {
                found.entry(key).or_default().extend(chunk_ids());
            }
        }
        for c in &a.chunks {
            let key = Target::Chunk(c.id);
            if targets.contains(&key) {
                found.insert(key, vec![c.id]);
            }
        }
        Ok(())
    })?;
    let mut report = Report::default();
    let name = path.display();
    let mut judged = Vec::with_capacity(queries.len());
    for q in queries {
        let mut grades: HashMap<Uuid, u32> = HashMap::new();
        for j in &q.relevant {
            match found.get(&j.target) {
                Some(chunks) if !chunks.is_empty() => {
                    for id in chunks {
                        let g = grades.entry(*id).or_default();
                        *g = (*g).max(j.grade);
                    }
                }
                Some(_) => report.fail(
                    Check::DbContent,
                    format!(
                        "{name}:{}: query {:?}: {} has no chunks",
                        j.position, q.id, j.target
                    ),
                ),
                None => report.fail(
                    Check::DbContent,
                    format!(
                        "{name}:{}: query {:?}: {} is not in the database",
                        j.position, q.id, j.target
                    ),
                ),
            }
        }
        judged.push(grades);
    }
    if report.has_errors() {
        return Err(OpError::Invalid {
            path: path.to_owned(),
            report: Box::new(report),
        });
    }
    let hex: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((judged, hex))
}
