//! `reembed`: regenerate chunk embeddings in place with another model.
//!
//! Chunks are visited in id order, a page at a time, and only those whose embedding is missing,
//! was made by another model (or with another dimension), or was not made from the chunk's
//! current text (stale, or of unknown provenance) are embedded. By default everything happens in
//! one transaction: the database switches models all at once or not at all. With
//! `batch_commit`, every N chunks commit on their own; a run that stops keeps what it committed,
//! and running it again carries on with the chunks still to do.
//!
//! With `stale`, only the chunks whose text changed since their embedding was made are embedded
//! again — by the model that embedded the rest, which the configured embedder must be.

use super::embedding;
use super::{OpError, Progress, Unit};
use crate::embed::Embedder;
use crate::store::{ChunkText, EmbeddingModel, EmbeddingUpdate, Store, WriteTransaction};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Chunks read, embedded and updated together.
const PAGE: usize = 256;

/// How to reembed.
#[derive(Debug, Clone, Default)]
pub struct ReembedOptions {
    /// Commit every this many chunks (`None`: one transaction for everything).
    pub batch_commit: Option<usize>,
    /// Take vectors from the embedding cache where it has them.
    pub use_cache: bool,
    /// Only the stale chunks (text changed since their embedding was made), in one transaction.
    pub stale: bool,
}

/// What a reembed did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReembedSummary {
    /// The model now embedding every chunk.
    pub model: String,
    /// Its dimension.
    pub dimension: usize,
    /// The models the database held before.
    pub before: Vec<EmbeddingModel>,
    /// Chunks in the database.
    pub chunks: u64,
    /// Chunks that already had an embedding of this model made from their current text (left
    /// alone).
    pub up_to_date: u64,
    /// With `stale`: the chunks embedded again because their text had changed (first few).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale: Option<Vec<String>>,
    /// Chunks the model embedded.
    pub embedded: u64,
    /// Chunks whose vector came from the embedding cache.
    pub from_cache: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Time taken.
    #[serde(serialize_with = "crate::ops::serialize_seconds")]
    pub elapsed: Duration,
}

/// One page of chunks embedded: the last id, and how many vectors came from the model and from
/// the cache.
pub(crate) struct Page {
    last: Uuid,
    /// The chunks embedded (first few).
    ids: Vec<String>,
    pub(crate) embedded: u64,
    pub(crate) from_cache: u64,
}

/// Which chunks a page holds.
#[derive(Debug, Clone, Copy)]
enum Which {
    /// Missing, another model's, stale or of unknown provenance.
    Needing,
    /// Stale only.
    Stale,
}

/// Embeds the next page (after `after`, in id order) of chunks whose embedding is missing,
/// was not made by `embedder`, or not from their current text; `None` when there are none left.
pub(crate) fn embed_page(
    tx: &mut dyn WriteTransaction,
    embedder: &dyn Embedder,
    after: Option<Uuid>,
    page_size: usize,
    use_cache: bool,
) -> Result<Option<Page>, OpError> {
    embed_page_of(tx, embedder, Which::Needing, after, page_size, use_cache)
}

fn embed_page_of(
    tx: &mut dyn WriteTransaction,
    embedder: &dyn Embedder,
    which: Which,
    after: Option<Uuid>,
    page_size: usize,
    use_cache: bool,
) -> Result<Option<Page>, OpError> {
    let model = embedder.model_id();
    let page: Vec<ChunkText> = match which {
        Which::Needing => {
            tx.chunks_needing_embedding(model, embedder.dimension(), after, page_size)?
        }
        Which::Stale => tx.stale_chunks(after, page_size)?,
    };
    let Some(last) = page.last().map(|c| c.id) else {
        return Ok(None);
    };
    let texts: Vec<&str> = page.iter().map(|c| c.content.as_str()).collect();
    let mut lookup = embedding::lookup(tx, embedder, &texts, use_cache)?;
    let (vectors, fresh) =
        embedding::complete(embedder, &texts, std::mem::take(&mut lookup.cached))?;
    let updates: Vec<EmbeddingUpdate<'_>> = page
        .iter()
        .zip(&vectors)
        .enumerate()
        .map(|(i, (c, v))| EmbeddingUpdate {
            id: c.id,
            vector: v.as_slice(),
            text_sha256: lookup
                .digests
                .get(i)
                .copied()
                .unwrap_or_else(|| embedding::digest(&c.content)),
        })
        .collect();
    tx.set_embeddings(model, &updates)?;
    embedding::remember(tx, embedder, &lookup.digests, &vectors, &fresh)?;
    Ok(Some(Page {
        last,
        ids: page
            .iter()
            .take(crate::report::EXAMPLES_PER_CHECK)
            .map(|c| c.id.to_string())
            .collect(),
        embedded: fresh.len() as u64,
        from_cache: (page.len() - fresh.len()) as u64,
    }))
}

/// Embeds, in `tx`, every chunk whose embedding is missing or was not made by `embedder`;
/// returns how many came from the model and from the cache.
pub(crate) fn embed_all_stale(
    tx: &mut dyn WriteTransaction,
    embedder: &dyn Embedder,
    use_cache: bool,
) -> Result<(u64, u64), OpError> {
    let (mut embedded, mut from_cache, mut after) = (0, 0, None);
    while let Some(page) = embed_page(tx, embedder, after, PAGE, use_cache)? {
        after = Some(page.last);
        embedded += page.embedded;
        from_cache += page.from_cache;
    }
    Ok((embedded, from_cache))
}

/// Gives every chunk in `store` an embedding made by `embedder` from its current text (with
/// `options.stale`: only the stale chunks).
pub fn reembed(
    store: &mut dyn Store,
    embedder: &dyn Embedder,
    options: &ReembedOptions,
    progress: &dyn Progress,
) -> Result<ReembedSummary, OpError> {
    if options.stale {
        return reembed_stale(store, embedder, options, progress);
    }
    let started = Instant::now();
    let mut tx = store.begin()?;
    let (model, dimension) = (
        embedder.model_id(),
        embedding::settle_dimension(&mut *tx, embedder)?,
    );
    let before = tx.embedding_models()?;
    let chunks = tx.inventory()?.chunks;
    let up_to_date: u64 = before
        .iter()
        .filter(|m| m.model == model && m.dimension == dimension)
        .map(|m| m.chunks)
        .sum();
    progress.start("reembed", chunks - up_to_date, Unit::Chunks);
    // While old and new vectors coexist, the vector column may have to accept both.
    tx.prepare_embeddings(dimension)?;
    let (mut embedded, mut from_cache, mut commits, mut uncommitted) = (0u64, 0u64, 0u64, 0usize);
    let mut after: Option<Uuid> = None;
    let page_size = options.batch_commit.map_or(PAGE, |n| n.clamp(1, PAGE));
    while let Some(page) = embed_page(&mut *tx, embedder, after, page_size, options.use_cache)? {
        after = Some(page.last);
        embedded += page.embedded;
        from_cache += page.from_cache;
        uncommitted += (page.embedded + page.from_cache) as usize;
        progress.set(embedded + from_cache);
        if options.batch_commit.is_some_and(|n| uncommitted >= n) {
            tx.commit()?;
            commits += 1;
            uncommitted = 0;
            tx = store.begin()?;
        }
    }
    // Every vector is now of `dimension`: PostgreSQL types the column again.
    tx.prepare_embeddings(dimension)?;
    tx.commit()?;
    progress.finish();
    Ok(ReembedSummary {
        model: model.to_owned(),
        dimension,
        before,
        chunks,
        // Every chunk not embedded now was up to date (stale ones and those of unknown
        // provenance were embedded even where the model matched).
        up_to_date: chunks.saturating_sub(embedded + from_cache),
        stale: None,
        embedded,
        from_cache,
        commits: commits + 1,
        elapsed: started.elapsed(),
    })
}

/// `reembed --stale`: embeds again, in one transaction, exactly the chunks whose text changed
/// since their embedding was made, with the model that made the database's embeddings.
fn reembed_stale(
    store: &mut dyn Store,
    embedder: &dyn Embedder,
    options: &ReembedOptions,
    progress: &dyn Progress,
) -> Result<ReembedSummary, OpError> {
    let started = Instant::now();
    let mut tx = store.begin()?;
    let before = tx.embedding_models()?;
    let chunks = tx.inventory()?.chunks;
    let model = embedder.model_id().to_owned();
    // ("": chunks whose model is not recorded — beside an application's tables without a model
    // column, the stale chunks themselves.)
    if let Some(other) = before
        .iter()
        .find(|m| m.model != model && !m.model.is_empty())
    {
        return Err(OpError::Refused(format!(
            "the database holds {} chunks embedded by {}; `reembed --stale` re-embeds only the \
             stale chunks, with the model of the others: give --embedder for {} (or reembed \
             every chunk with the new model: `goldset reembed` without --stale)",
            other.chunks, other.model, other.model
        )));
    }
    let dimension = embedding::settle_dimension(&mut *tx, embedder)?;
    if let Some(other) = before
        .iter()
        .find(|m| m.dimension != dimension && !m.model.is_empty())
    {
        return Err(OpError::Refused(format!(
            "the database holds {} chunks of {} dimensions, but {model} makes {dimension}",
            other.chunks, other.dimension
        )));
    }
    progress.start("reembed", 0, Unit::Chunks);
    let (mut embedded, mut from_cache, mut after) = (0u64, 0u64, None);
    let mut ids = Vec::new();
    while let Some(page) = embed_page_of(
        &mut *tx,
        embedder,
        Which::Stale,
        after,
        PAGE,
        options.use_cache,
    )? {
        after = Some(page.last);
        embedded += page.embedded;
        from_cache += page.from_cache;
        ids.extend(page.ids);
        ids.truncate(crate::report::EXAMPLES_PER_CHECK);
        progress.set(embedded + from_cache);
    }
    tx.commit()?;
    progress.finish();
    Ok(ReembedSummary {
        model,
        dimension,
        before,
        chunks,
        up_to_date: chunks - embedded - from_cache,
        stale: Some(ids),
        embedded,
        from_cache,
        commits: 1,
        elapsed: started.elapsed(),
    })
}
