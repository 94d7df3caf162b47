//! Embedders: turn chunk text into vectors. Operations see only the [`Embedder`] trait.
//!
//! A spec string picks one (`--embedder`, `GOLDSET_EMBEDDER`):
//! * `hash` or `hash:DIM` — [`HashEmbedder`], deterministic feature hashing, offline.
//! * `local:PATH_OR_ID` — [`LocalEmbedder`], a sentence-transformers model on the CPU (candle).

mod hash;
pub mod local;

pub use hash::HashEmbedder;
pub use local::LocalEmbedder;

/// Why an embedder could not be built or could not embed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The spec names no known embedder or has bad parameters.
    #[error("invalid embedder spec {spec:?}: {reason}")]
    InvalidSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The model failed on a batch.
    #[error("embedding failed: {0}")]
    Failed(String),
}

/// Turns texts into fixed-dimension vectors.
pub trait Embedder: Send + Sync {
    /// Identifies the model; stored with every embedding it makes.
    fn model_id(&self) -> &str;
    /// Length of every vector.
    fn dimension(&self) -> usize;
    /// Embeds a batch of texts, one vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// How many texts a call to [`Embedder::embed`] should carry.
    fn preferred_batch_size(&self) -> usize {
        64
    }
    /// Whether a vector costs more to compute than to look up in the database's embedding
    /// cache (true for real models; false for `hash`, which is cheaper than the lookup).
    fn worth_caching(&self) -> bool {
        true
    }
}

/// What embedders beyond `hash` need to know, from flags and the environment.
#[derive(Debug, Clone, Default)]
pub struct EmbedderSettings {
    /// Base URL of an OpenAI-compatible API (`--openai-base-url`, `OPENAI_BASE_URL`).
    pub openai_base_url: Option<String>,
    /// API key for it (`OPENAI_API_KEY`); never printed or logged.
    pub openai_api_key: Option<String>,
}

/// The embedder used when none is configured.
pub const DEFAULT_SPEC: &str = "hash";

/// Builds the embedder a spec names.
pub fn from_spec(spec: &str, settings: &EmbedderSettings) -> Result<Box<dyn Embedder>, EmbedError> {
    let _ = settings;
    let (kind, arg) = match spec.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (spec, None),
    };
    let invalid = |reason: &str| EmbedError::InvalidSpec {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    match kind {
        "hash" => {
            let dimension = match arg {
                None => hash::DEFAULT_DIMENSION,
                Some(a) => a
                    .parse::<usize>()
                    .ok()
                    .filter(|d| (1..=65_536).contains(d))
                    .ok_or_else(|| invalid("the dimension must be a number within 1..=65536"))?,
            };
            Ok(Box::new(HashEmbedder::new(dimension)))
        }
        "local" => {
            let target = arg
                .filter(|a| !a.is_empty())
                .ok_or_else(|| invalid("local needs a model directory or id: local:PATH_OR_ID"))?;
            let dir = local::locate(target)?;
            Ok(Box::new(LocalEmbedder::load(&dir, target)?))
        }
        _ => Err(invalid("known embedders: hash, hash:DIM, local:PATH_OR_ID")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(from_spec("hash", &EmbedderSettings::default()).unwrap().dimension(), 384);
        assert_eq!(from_spec("hash:1024", &EmbedderSettings::default()).unwrap().dimension(), 1024);
        assert!(from_spec("hash:0", &EmbedderSettings::default()).is_err());
        assert!(from_spec("hash:x", &EmbedderSettings::default()).is_err());
        assert!(from_spec("bogus", &EmbedderSettings::default()).is_err());
    }
}
