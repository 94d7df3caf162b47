//! Embedders: turn chunk text into vectors. Operations see only the [`Embedder`] trait.
//!
//! A spec string picks one (`--embedder`, `GOLDSET_EMBEDDER`):
//! * `hash` or `hash:DIM` — [`HashEmbedder`], deterministic feature hashing, offline.
//! * `local:PATH_OR_ID` — [`LocalEmbedder`], a sentence-transformers model on the CPU (candle).
//! * `openai:MODEL` — [`OpenAiEmbedder`], any OpenAI-compatible embeddings endpoint
//!   (OpenAI, Ollama, text-embeddings-inference, vLLM, infinity, LiteLLM); MODEL may contain `:` and `/`.

mod hash;
mod key;
mod lazy;
#[cfg(feature = "local")]
pub mod local;
#[cfg(feature = "openai")]
pub mod openai;

pub use hash::HashEmbedder;
pub use key::ApiKey;
pub use lazy::LazyEmbedder;
#[cfg(feature = "local")]
pub use local::LocalEmbedder;
#[cfg(feature = "openai")]
pub use openai::OpenAiEmbedder;

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
    /// The `openai:` embedder's endpoint failed or answered something unusable.
    #[cfg(feature = "openai")]
    #[error("openai embedder: {0}")]
    OpenAi(#[from] openai::OpenAiError),
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
    /// Settles the dimension before anything is embedded. `known` is what the database holds
    /// for this model id (its embedding cache, its chunks): an embedder that has not met its
    /// model yet ([`LazyEmbedder`]) takes it on trust and meets the model only when a text must
    /// be embedded; the others return their own dimension.
    fn settle_dimension(&self, known: Option<usize>) -> Result<usize, EmbedError> {
        let _ = known;
        Ok(self.dimension())
    }
    /// Whether [`Embedder::settle_dimension`] would use a `known` dimension (only an embedder
    /// that has not met its model yet does): callers look it up only then.
    fn wants_dimension_hint(&self) -> bool {
        false
    }
}

/// What embedders beyond `hash` need to know, from flags and the environment.
#[derive(Debug, Clone, Default)]
pub struct EmbedderSettings {
    /// Base URL of an OpenAI-compatible API (`--openai-base-url`, `OPENAI_BASE_URL`).
    pub openai_base_url: Option<String>,
    /// API key for it (`--openai-api-key`, `OPENAI_API_KEY`); never printed or logged.
    pub openai_api_key: Option<ApiKey>,
    /// Texts per request (`--embed-batch-size`; default [`openai::DEFAULT_BATCH_SIZE`]).
    pub openai_batch_size: Option<usize>,
    /// Requests in flight at once (`--embed-concurrency`; default
    /// [`openai::DEFAULT_MAX_IN_FLIGHT`]).
    pub openai_max_in_flight: Option<usize>,
    /// Limit on one request, connecting included (`--embed-timeout`; default
    /// [`openai::DEFAULT_TIMEOUT`]).
    pub openai_timeout: Option<std::time::Duration>,
    /// Attempts per request, the first included, before giving up on transient failures
    /// (default: as many as [`EmbedderSettings::openai_retry_window`] allows).
    pub openai_max_attempts: Option<u32>,
    /// First retry delay, doubled for each further one (default [`openai::DEFAULT_RETRY_BASE`]).
    pub openai_retry_base: Option<std::time::Duration>,
    /// Longest retry delay before jitter (default [`openai::DEFAULT_RETRY_MAX_DELAY`]).
    pub openai_retry_max_delay: Option<std::time::Duration>,
    /// Total wait between attempts of one request before giving up (default
    /// [`openai::DEFAULT_RETRY_WINDOW`], two minutes: long enough for a server to restart).
    pub openai_retry_window: Option<std::time::Duration>,
    /// Accept answers whose `model` names another model than the one asked for (a server that
    /// renames models); by default such an answer is refused.
    pub openai_allow_model_alias: bool,
}

/// The model used when no embedder is configured and the Hugging Face cache holds it.
pub const DEFAULT_LOCAL_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// The embedder to use when none is configured: `local:` [`DEFAULT_LOCAL_MODEL`] when the local
/// Hugging Face cache holds it (nothing is downloaded unasked), otherwise `hash` — with a one-line
/// notice saying so.
pub fn default_spec() -> (String, Option<String>) {
    #[cfg(feature = "local")]
    if local::cached(DEFAULT_LOCAL_MODEL).is_some() {
        return (format!("local:{DEFAULT_LOCAL_MODEL}"), None);
    }
    #[cfg(feature = "local")]
    let why = "is not in the local Hugging Face cache";
    #[cfg(not(feature = "local"))]
    let why = "needs the local embedder, which this goldset was built without";
    (
        "hash".to_owned(),
        Some(format!(
            "embedding with `hash` (offline feature hashing, not a language model): {DEFAULT_LOCAL_MODEL} \
             {why}; choose a model with --embedder or GOLDSET_EMBEDDER"
        )),
    )
}

/// Why a spec is refused by a build without the feature its embedder needs.
#[cfg(not(all(feature = "local", feature = "openai")))]
fn not_built(spec: &str, feature: &str) -> EmbedError {
    EmbedError::InvalidSpec {
        spec: spec.to_owned(),
        reason: format!(
            "this goldset was built without the {feature} embedder; rebuild with --features {feature}"
        ),
    }
}

/// What a spec names, parsed but not built.
enum Spec<'a> {
    Hash(usize),
    #[cfg_attr(not(feature = "local"), allow(dead_code))]
    Local(&'a str),
    #[cfg_attr(not(feature = "openai"), allow(dead_code))]
    OpenAi(&'a str),
}

fn parse(spec: &str) -> Result<Spec<'_>, EmbedError> {
    let (kind, arg) = match spec.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (spec, None),
    };
    let invalid = |reason: &str| EmbedError::InvalidSpec {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    match kind {
        "hash" => match arg {
            None => Ok(Spec::Hash(hash::DEFAULT_DIMENSION)),
            Some(a) => a
                .parse::<usize>()
                .ok()
                .filter(|d| (1..=65_536).contains(d))
                .map(Spec::Hash)
                .ok_or_else(|| invalid("the dimension must be a number within 1..=65536")),
        },
        "local" => arg
            .filter(|a| !a.is_empty())
            .map(Spec::Local)
            .ok_or_else(|| invalid("local needs a model directory or id: local:PATH_OR_ID")),
        "openai" => arg
            .filter(|a| !a.trim().is_empty())
            .map(Spec::OpenAi)
            .ok_or_else(|| invalid("openai needs a model name: openai:MODEL")),
        _ => Err(invalid(
            "known embedders: hash, hash:DIM, local:PATH_OR_ID, openai:MODEL",
        )),
    }
}

/// Builds the embedder a spec names.
pub fn from_spec(spec: &str, settings: &EmbedderSettings) -> Result<Box<dyn Embedder>, EmbedError> {
    Ok(match parse(spec)? {
        Spec::Hash(dimension) => Box::new(HashEmbedder::new(dimension)),
        #[cfg(feature = "local")]
        Spec::Local(target) => {
            let dir = local::locate(target)?;
            Box::new(LocalEmbedder::load(&dir, target)?)
        }
        #[cfg(feature = "openai")]
        Spec::OpenAi(model) => Box::new(OpenAiEmbedder::connect(model, settings)?),
        #[cfg(not(feature = "local"))]
        Spec::Local(_) => return Err(not_built(spec, "local")),
        #[cfg(not(feature = "openai"))]
        Spec::OpenAi(_) => {
            let _ = settings;
            return Err(not_built(spec, "openai"));
        }
    })
}

/// Like [`from_spec`], but an `openai:` embedder is built (and its server probed) only when a
/// text must be embedded ([`LazyEmbedder`]): a restore whose texts are all in the embedding
/// cache never contacts the server. Other specs are built at once (`hash` costs nothing; a
/// `local:` model's id depends on its weights).
pub fn from_spec_lazy(
    spec: &str,
    settings: &EmbedderSettings,
) -> Result<Box<dyn Embedder>, EmbedError> {
    match parse(spec)? {
        #[cfg(feature = "openai")]
        Spec::OpenAi(model) => {
            let (model, settings) = (model.to_owned(), settings.clone());
            Ok(Box::new(LazyEmbedder::new(
                openai::model_id(&model),
                move || {
                    Ok(Box::new(OpenAiEmbedder::connect(&model, &settings)?) as Box<dyn Embedder>)
                },
            )))
        }
        _ => from_spec(spec, settings),
    }
}

/// The model a spec names, as far as it is known without loading a model or asking a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// The model id, or for `local:` the model's name (its stored id adds `@` and a digest of
    /// its weights).
    pub id: String,
    /// The vector length, when known (`hash:N`; a model's is known once it is loaded).
    pub dimension: Option<usize>,
}

impl ModelRef {
    /// Whether embeddings stored as `model` of `dimension` may come from this model.
    pub fn matches(&self, model: &str, dimension: usize) -> bool {
        let same = model == self.id
            || model
                .strip_prefix(self.id.as_str())
                .is_some_and(|digest| digest.starts_with('@'));
        same && self.dimension.is_none_or(|d| d == dimension)
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.dimension {
            Some(d) => write!(f, "{} ({d} dimensions)", self.id),
            None => f.write_str(&self.id),
        }
    }
}

/// The model `spec` names, cheaply: no model is loaded, no server asked.
pub fn model_of_spec(spec: &str) -> Result<ModelRef, EmbedError> {
    Ok(match parse(spec)? {
        Spec::Hash(dimension) => ModelRef {
            id: hash::model_id(dimension),
            dimension: Some(dimension),
        },
        #[cfg(feature = "local")]
        Spec::Local(target) => ModelRef {
            id: local::model_name(target),
            dimension: None,
        },
        #[cfg(feature = "openai")]
        Spec::OpenAi(model) => ModelRef {
            id: openai::model_id(model),
            dimension: None,
        },
        #[cfg(not(feature = "local"))]
        Spec::Local(_) => return Err(not_built(spec, "local")),
        #[cfg(not(feature = "openai"))]
        Spec::OpenAi(_) => return Err(not_built(spec, "openai")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            from_spec("hash", &EmbedderSettings::default())
                .unwrap()
                .dimension(),
            384
        );
        assert_eq!(
            from_spec("hash:1024", &EmbedderSettings::default())
                .unwrap()
                .dimension(),
            1024
        );
        assert!(from_spec("hash:0", &EmbedderSettings::default()).is_err());
        assert!(from_spec("hash:x", &EmbedderSettings::default()).is_err());
        assert!(from_spec("bogus", &EmbedderSettings::default()).is_err());
    }

    #[test]
    fn a_spec_names_its_model_without_building_it() {
        let hash = model_of_spec("hash:32").unwrap();
        assert_eq!(
            hash.id,
            from_spec("hash:32", &Default::default())
                .unwrap()
                .model_id()
        );
        assert!(hash.matches("goldset-hash-v1-32", 32));
        assert!(!hash.matches("goldset-hash-v1-384", 384));
        assert!(!hash.matches("goldset-hash-v1-32", 31));

        #[cfg(feature = "local")]
        {
            let local = model_of_spec("local:sentence-transformers/all-MiniLM-L6-v2").unwrap();
            assert_eq!(local.dimension, None);
            assert!(local.matches("sentence-transformers/all-MiniLM-L6-v2@0123456789ab", 384));
            assert!(!local.matches("sentence-transformers/all-MiniLM-L6-v2-x@0123456789ab", 384));
            assert!(!local.matches("BAAI/bge-small-en@0123456789ab", 384));
        }
        #[cfg(feature = "openai")]
        {
            let openai = model_of_spec("openai:text-embedding-3-small").unwrap();
            assert!(openai.matches("openai:text-embedding-3-small", 1536));
            assert!(!openai.matches("openai:text-embedding-3-large", 3072));
        }

        assert!(model_of_spec("hash:0").is_err());
        assert!(model_of_spec("local:").is_err());
        assert!(model_of_spec("bogus").is_err());
    }

    #[cfg(not(all(feature = "local", feature = "openai")))]
    #[test]
    fn a_spec_for_an_embedder_left_out_of_the_build_says_how_to_get_it() {
        #[cfg(not(feature = "local"))]
        for e in [
            model_of_spec("local:m").unwrap_err(),
            from_spec("local:m", &EmbedderSettings::default())
                .err()
                .unwrap(),
        ] {
            assert!(
                e.to_string().contains("rebuild with --features local"),
                "{e}"
            );
        }
        #[cfg(not(feature = "openai"))]
        for e in [
            model_of_spec("openai:m").unwrap_err(),
            from_spec("openai:m", &EmbedderSettings::default())
                .err()
                .unwrap(),
        ] {
            assert!(
                e.to_string().contains("rebuild with --features openai"),
                "{e}"
            );
        }
    }
}
