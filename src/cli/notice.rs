//! The default embedder's notice, said when it first embeds something: a command that embeds
//! nothing (or fails before it does) stays quiet about a model it never used.

use goldset::embed::{EmbedError, Embedder};
use std::sync::Mutex;

/// An embedder that prints `note: NOTICE` on stderr before its first non-empty batch.
pub struct Noticed {
    inner: Box<dyn Embedder>,
    notice: Mutex<Option<String>>,
}

impl Noticed {
    pub fn new(inner: Box<dyn Embedder>, notice: String) -> Self {
        Noticed {
            inner,
            notice: Mutex::new(Some(notice)),
        }
    }
}

impl Embedder for Noticed {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn dimension(&self) -> usize {
        self.inner.dimension()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if !texts.is_empty() {
            let notice = self.notice.lock().map(|mut n| n.take()).unwrap_or(None);
            if let Some(notice) = notice {
                eprintln!("note: {notice}");
            }
        }
        self.inner.embed(texts)
    }

    fn preferred_batch_size(&self) -> usize {
        self.inner.preferred_batch_size()
    }

    fn worth_caching(&self) -> bool {
        self.inner.worth_caching()
    }
}
