//! An embedder met only when a vector must be computed: a restore whose texts the embedding
//! cache holds never loads the model or contacts the server.

use super::{EmbedError, Embedder};
use std::sync::{Mutex, OnceLock};

/// Builds the real embedder, once.
type Build = Box<dyn FnOnce() -> Result<Box<dyn Embedder>, EmbedError> + Send>;

/// Wraps an embedder whose model id is known without building it (`openai:MODEL`). Its
/// dimension is taken from what the database holds for that model id
/// ([`Embedder::settle_dimension`]) or learned by building it; the first text to embed builds
/// it (for `openai:`, the server's probe), and its vectors must then have the settled dimension.
pub struct LazyEmbedder {
    model_id: String,
    build: Mutex<Option<Build>>,
    /// The built embedder, or why building it failed.
    built: OnceLock<Result<Box<dyn Embedder>, String>>,
    /// The dimension, once settled.
    dimension: OnceLock<usize>,
}

impl LazyEmbedder {
    /// An embedder with this model id that `build` makes when it is first needed.
    pub fn new(
        model_id: String,
        build: impl FnOnce() -> Result<Box<dyn Embedder>, EmbedError> + Send + 'static,
    ) -> Self {
        LazyEmbedder {
            model_id,
            build: Mutex::new(Some(Box::new(build))),
            built: OnceLock::new(),
            dimension: OnceLock::new(),
        }
    }

    /// Whether the real embedder was built (the server contacted, the model loaded).
    pub fn is_built(&self) -> bool {
        self.built.get().is_some_and(Result::is_ok)
    }

    /// The real embedder, built now if it was not yet. The first failure is returned as it
    /// came; later calls repeat its message.
    fn inner(&self) -> Result<&dyn Embedder, EmbedError> {
        if let Some(built) = self.built.get() {
            return built.as_deref().map_err(|e| EmbedError::Failed(e.clone()));
        }
        let mut build = self.build.lock().unwrap_or_else(|e| e.into_inner());
        let Some(make) = build.take() else {
            // Another thread built it while this one waited for the lock.
            return self.inner();
        };
        tracing::info!(model = %self.model_id, "first text not in the embedding cache: meeting the model");
        match make() {
            Ok(embedder) => {
                let _ = self.built.set(Ok(embedder));
                self.inner()
            }
            Err(e) => {
                let _ = self.built.set(Err(e.to_string()));
                Err(e)
            }
        }
    }
}

impl Embedder for LazyEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The settled dimension; before [`Embedder::settle_dimension`], the model's own (building
    /// it), or 0 when it cannot be built (the error comes again from [`Embedder::embed`]).
    fn dimension(&self) -> usize {
        match self.settle_dimension(None) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("{e}");
                0
            }
        }
    }

    fn settle_dimension(&self, known: Option<usize>) -> Result<usize, EmbedError> {
        if let Some(&d) = self.dimension.get() {
            return Ok(d);
        }
        let d = match known {
            Some(d) if !self.is_built() => d,
            _ => self.inner()?.dimension(),
        };
        Ok(*self.dimension.get_or_init(|| d))
    }

    fn wants_dimension_hint(&self) -> bool {
        self.dimension.get().is_none() && !self.is_built()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inner = self.inner()?;
        let settled = *self.dimension.get_or_init(|| inner.dimension());
        if inner.dimension() != settled {
            return Err(EmbedError::Failed(format!(
                "{} makes vectors of {} dimensions, but the database holds vectors of {settled} \
                 for this model id (in its embedding cache or its chunks); clear the cache \
                 (`goldset cache --clear`) or restore with --replace",
                self.model_id,
                inner.dimension()
            )));
        }
        inner.embed(texts)
    }

    fn preferred_batch_size(&self) -> usize {
        match self.built.get() {
            Some(Ok(inner)) => inner.preferred_batch_size(),
            _ => 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::HashEmbedder;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn counted(dimension: usize) -> (LazyEmbedder, Arc<AtomicUsize>) {
        let builds = Arc::new(AtomicUsize::new(0));
        let b = builds.clone();
        let lazy = LazyEmbedder::new(format!("goldset-hash-v1-{dimension}"), move || {
            b.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(HashEmbedder::new(dimension)) as Box<dyn Embedder>)
        });
        (lazy, builds)
    }

    #[test]
    fn a_known_dimension_is_taken_without_building_and_checked_once_built() {
        let (lazy, builds) = counted(16);
        assert_eq!(lazy.settle_dimension(Some(16)).unwrap(), 16);
        assert_eq!(lazy.dimension(), 16);
        assert!(lazy.embed(&[]).unwrap().is_empty());
        assert_eq!(builds.load(Ordering::SeqCst), 0, "nothing built yet");
        let v = lazy.embed(&["a text"]).unwrap();
        assert_eq!(v[0], HashEmbedder::new(16).embed(&["a text"]).unwrap()[0]);
        lazy.embed(&["another"]).unwrap();
        assert_eq!(builds.load(Ordering::SeqCst), 1, "built once");

        let (wrong, _) = counted(16);
        wrong.settle_dimension(Some(8)).unwrap();
        let e = wrong.embed(&["x"]).unwrap_err().to_string();
        assert!(
            e.contains("16 dimensions") && e.contains("holds vectors of 8"),
            "{e}"
        );
    }

    #[test]
    fn without_a_known_dimension_it_builds_and_a_failure_is_kept() {
        let (lazy, builds) = counted(24);
        assert_eq!(lazy.settle_dimension(None).unwrap(), 24);
        assert_eq!(builds.load(Ordering::SeqCst), 1);

        let failing = LazyEmbedder::new("openai:m".into(), || {
            Err(EmbedError::Failed("server down".into()))
        });
        assert_eq!(failing.settle_dimension(Some(4)).unwrap(), 4);
        for _ in 0..2 {
            let e = failing.embed(&["x"]).unwrap_err().to_string();
            assert!(e.contains("server down"), "{e}");
        }
    }
}
