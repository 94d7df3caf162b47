//! What stores say about embeddings: the values that travel between the operations and a
//! store's embedding columns, its embedding cache and its record of each embedding's text.

use uuid::Uuid;

/// SHA-256 of a chunk's text: with the model id, the key of the embedding cache.
pub type ContentDigest = [u8; 32];

/// A chunk that needs an embedding (see [`WriteTransaction::chunks_needing_embedding`](super::WriteTransaction::chunks_needing_embedding)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkText {
    /// The chunk's id.
    pub id: Uuid,
    /// Its text.
    pub content: String,
}

/// A new embedding for a stored chunk (see [`WriteTransaction::set_embeddings`](super::WriteTransaction::set_embeddings)).
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingUpdate<'a> {
    /// The chunk's id.
    pub id: Uuid,
    /// The vector.
    pub vector: &'a [f32],
    /// SHA-256 of the text the vector was made from (as read with the chunk), recorded so that
    /// a later change of the text is found stale.
    pub text_sha256: ContentDigest,
}

/// Where the stored embeddings came from, as far as the database records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// Embedded chunks whose text is no longer the text their embedding was made from.
    pub stale: u64,
    /// Their ids, in id order (as many as asked for).
    pub stale_ids: Vec<String>,
    /// Embedded chunks with no record of the text their embedding was made from (embedded
    /// before goldset recorded it, or by an application on its own).
    pub unknown: u64,
    /// The first of them, in id order.
    pub unknown_ids: Vec<String>,
}

/// An embedding as stored in BLOB/bytea columns: little-endian `f32`s.
pub fn vector_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`vector_to_blob`].
pub fn blob_to_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A model whose embeddings a database holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmbeddingModel {
    /// Model id.
    pub model: String,
    /// Vector length.
    pub dimension: usize,
    /// Chunks it embedded.
    pub chunks: u64,
}

/// How the embeddings in a database look against the expected model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbeddingHealth {
    /// Chunks checked.
    pub chunks: u64,
    /// Chunks without an embedding.
    pub missing: u64,
    /// Chunks embedded by another model.
    pub other_model: u64,
    /// Chunks whose vector has another dimension.
    pub wrong_dimension: u64,
    /// The first offending chunks, with what is wrong.
    pub examples: Vec<String>,
}

/// What the embedding cache holds for one model and vector length.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheUsage {
    /// Model id.
    pub model: String,
    /// Vector length.
    pub dimension: usize,
    /// Entries (texts).
    pub entries: u64,
    /// Bytes of vectors.
    pub bytes: u64,
    /// Entries whose text no chunk embedded by this model has: what a prune removes.
    pub unused: u64,
}
