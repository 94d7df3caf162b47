//! Embedding chunk texts for `restore` and `reembed`: the embedding cache (vectors keyed by model
//! id and SHA-256 of the text, kept in the database), model calls in length-sorted batches, and
//! checks of what the model returns.
//!
//! The steps are separate functions because `restore` runs them on different threads: the cache
//! lives in the write transaction (lookups and writes on the writer thread), the model runs on
//! its own thread.

use super::OpError;
use crate::embed::Embedder;
use crate::store::{ContentDigest, WriteTransaction};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// The cache key of a text (with the model id).
pub fn digest(text: &str) -> ContentDigest {
    Sha256::digest(text.as_bytes()).into()
}

/// What the cache knows of a batch of texts.
#[derive(Debug, Default)]
pub struct Lookup {
    /// Each text's digest (empty when the embedder is not worth caching).
    pub digests: Vec<ContentDigest>,
    /// Each text's cached vector, if any.
    pub cached: Vec<Option<Vec<f32>>>,
}

impl Lookup {
    /// Nothing cached for any of `texts` texts, and no digests: for an embedder not worth
    /// caching.
    pub fn nothing_cached(texts: usize) -> Self {
        Lookup {
            digests: Vec::new(),
            cached: vec![None; texts],
        }
    }
}

/// Settles the embedder's dimension before anything is embedded. An embedder that has not met
/// its model yet (`openai:`, see [`crate::embed::LazyEmbedder`]) takes the dimension the
/// database holds for its model id — its chunks', else its embedding cache's — so that a run
/// whose texts are all cached never contacts the server; with nothing held, it meets the model
/// now.
pub fn settle_dimension(
    tx: &mut dyn WriteTransaction,
    embedder: &dyn Embedder,
) -> Result<usize, OpError> {
    if !embedder.wants_dimension_hint() {
        return Ok(embedder.dimension());
    }
    let model = embedder.model_id();
    let known = match tx
        .embedding_models()?
        .into_iter()
        .find(|m| m.model == model)
    {
        Some(m) => Some(m.dimension),
        None => tx.cached_dimension(model)?,
    };
    Ok(embedder.settle_dimension(known)?)
}

/// Looks `texts` up in the embedding cache. With `read_cache` false (`--no-cache`) nothing is
/// read, but the digests are still computed so that fresh vectors can be remembered.
pub fn lookup(
    tx: &mut dyn WriteTransaction,
    embedder: &dyn Embedder,
    texts: &[&str],
    read_cache: bool,
) -> Result<Lookup, OpError> {
    if !embedder.worth_caching() {
        return Ok(Lookup::nothing_cached(texts.len()));
    }
    let digests: Vec<ContentDigest> = texts.iter().map(|t| digest(t)).collect();
    let cached = if read_cache {
        tx.cached_embeddings(embedder.model_id(), embedder.dimension(), &digests)?
    } else {
        vec![None; texts.len()]
    };
    Ok(Lookup { digests, cached })
}

/// Vectors for every text: the cached ones as they are, the others from the model. Returns the
/// vectors, in order, and the positions that the model computed.
pub fn complete(
    embedder: &dyn Embedder,
    texts: &[&str],
    cached: Vec<Option<Vec<f32>>>,
) -> Result<(Vec<Vec<f32>>, Vec<usize>), OpError> {
    let fresh: Vec<usize> = (0..texts.len()).filter(|&i| cached[i].is_none()).collect();
    let computed = embed_texts(
        embedder,
        &fresh.iter().map(|&i| texts[i]).collect::<Vec<_>>(),
    )?;
    let mut vectors: Vec<Vec<f32>> = cached.into_iter().map(Option::unwrap_or_default).collect();
    for (&i, v) in fresh.iter().zip(computed) {
        vectors[i] = v;
    }
    Ok((vectors, fresh))
}

/// Embeds `texts` with the model, in batches of texts of similar length (padding is what a
/// neural model wastes time on), checking that one vector of the model's dimension comes back
/// for every text. The output keeps the input order.
pub fn embed_texts(embedder: &dyn Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>, OpError> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut vectors = vec![Vec::new(); texts.len()];
    let dimension = embedder.dimension();
    for group in order.chunks(embedder.preferred_batch_size().max(1)) {
        let input: Vec<&str> = group.iter().map(|&i| texts[i]).collect();
        let output = embedder.embed(&input)?;
        if output.len() != input.len() || output.iter().any(|v| v.len() != dimension) {
            return Err(OpError::EmbedderContract {
                model: embedder.model_id().to_owned(),
                reason: format!(
                    "{} vectors of dimensions {:?} for {} texts (expected {dimension} each)",
                    output.len(),
                    output.iter().map(Vec::len).collect::<HashSet<_>>(),
                    input.len()
                ),
            });
        }
        for (&i, v) in group.iter().zip(output) {
            vectors[i] = v;
        }
    }
    Ok(vectors)
}

/// Remembers the vectors at positions `fresh` in the embedding cache.
pub fn remember(
    tx: &mut dyn WriteTransaction,
    embedder: &dyn Embedder,
    digests: &[ContentDigest],
    vectors: &[Vec<f32>],
    fresh: &[usize],
) -> Result<(), OpError> {
    if digests.is_empty() || fresh.is_empty() {
        return Ok(());
    }
    let mut seen = HashSet::new();
    let entries: Vec<(ContentDigest, &[f32])> = fresh
        .iter()
        .filter(|&&i| seen.insert(digests[i]))
        .map(|&i| (digests[i], vectors[i].as_slice()))
        .collect();
    tx.cache_embeddings(embedder.model_id(), &entries)?;
    Ok(())
}
