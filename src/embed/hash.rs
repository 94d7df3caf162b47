//! A deterministic feature-hashing embedder: no model, no network, same vector on every machine.
//!
//! Text is lower-cased and split into runs of alphanumeric characters. Every word (unigram) and
//! every pair of neighbouring words (bigram) is hashed with 64-bit FNV-1a (the `fnv` crate); the hash picks a
//! coordinate (`h % dim`) and a sign (bit 63), and the vector is L2-normalised. Texts without any
//! word get the zero vector. Similar texts get similar vectors, which is enough for tests and for
//! air-gapped use; it is not a semantic model.

use super::{EmbedError, Embedder};
use fnv::FnvHasher;
use std::hash::Hasher;

/// Dimension used by `hash` without a `:DIM`.
pub const DEFAULT_DIMENSION: usize = 384;

/// The model id of [`HashEmbedder`]s of `dimension`.
pub fn model_id(dimension: usize) -> String {
    format!("goldset-hash-v1-{dimension}")
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dimension: usize,
    model_id: String,
}

impl HashEmbedder {
    /// A hashing embedder producing `dimension`-long vectors.
    pub fn new(dimension: usize) -> Self {
        HashEmbedder {
            dimension,
            model_id: model_id(dimension),
        }
    }

    /// Embeds one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dimension];
        let mut previous: Option<u64> = None;
        let mut word = FnvHasher::default();
        let mut in_word = false;
        let mut add = |h: u64| {
            let i = (h % self.dimension as u64) as usize;
            v[i] += if h >> 63 == 0 { 1.0 } else { -1.0 };
        };
        // A trailing non-alphanumeric sentinel closes the last word.
        for c in text.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() {
                // Fast path, same result as the general one below.
                word.write_u8(c.to_ascii_lowercase() as u8);
                in_word = true;
            } else if !c.is_ascii() && c.is_alphanumeric() {
                for lc in c.to_lowercase() {
                    let mut buf = [0u8; 4];
                    word.write(lc.encode_utf8(&mut buf).as_bytes());
                }
                in_word = true;
            } else if in_word {
                let hash = word.finish();
                add(hash);
                if let Some(p) = previous {
                    // Bigram: the first word's hash continued with a separator and the second's.
                    let mut bigram = FnvHasher::with_key(p);
                    bigram.write(&0xffu64.to_le_bytes());
                    bigram.write(&hash.to_le_bytes());
                    add(bigram.finish());
                }
                previous = Some(hash);
                word = FnvHasher::default();
                in_word = false;
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

impl Embedder for HashEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }

    fn preferred_batch_size(&self) -> usize {
        1024
    }

    fn worth_caching(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn deterministic_normalised_and_case_insensitive() {
        let e = HashEmbedder::new(384);
        let a = e.embed_one("Write-ahead logging keeps readers and writers apart.");
        assert_eq!(
            a,
            e.embed_one("write ahead LOGGING keeps readers and writers apart")
        );
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(a.len(), 384);
    }

    #[test]
    fn similar_texts_are_closer_than_unrelated_ones() {
        let e = HashEmbedder::new(384);
        let a = e.embed_one("the backup file is written atomically through a temp file");
        let b = e.embed_one("the backup file is written through a temporary file");
        let c = e.embed_one("cosine similarity of sentence embeddings");
        assert!(cosine(&a, &b) > cosine(&a, &c) + 0.3);
    }

    #[test]
    fn empty_text_is_the_zero_vector() {
        let e = HashEmbedder::new(8);
        assert_eq!(e.embed_one("  … "), vec![0.0; 8]);
    }

    #[test]
    fn known_vector_is_stable() {
        // Pins the algorithm: a change here changes every stored embedding (and the model id
        // must change with it).
        let v = HashEmbedder::new(8).embed_one("Golden dataset, backup!");
        let s = 1.0 / 3f32.sqrt();
        assert_eq!(v, vec![0.0, -s, 0.0, -s, s, 0.0, 0.0, 0.0]);
    }
}
