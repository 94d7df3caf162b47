//! Exact search: the cosine similarity of every query with every stored chunk embedding, the
//! best `depth` chunks kept per query (ties: the lower chunk id first).
//!
//! The store streams blocks of (chunk id, vector); worker threads (`std::thread::scope`) take
//! whole blocks from a bounded channel, so memory holds a few blocks whatever the number of
//! chunks. A worker normalises and transposes its block (dimension-major), then scores four
//! queries against sixteen chunks at a time: sixteen lanes of independent multiply-adds that
//! the compiler turns into SIMD (compiled twice, for the x86-64 baseline and for AVX2 + FMA,
//! picked at run time). Each worker keeps a bounded heap per query; the heaps are merged at
//! the end.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{mpsc, Mutex};
use uuid::Uuid;

/// Queries scored together by the kernel.
const QT: usize = 4;
/// Block widths are padded to a multiple of this: the widest kernel's chunk tile.
const PAD: usize = 32;

/// One search result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The chunk.
    pub id: Uuid,
    /// Cosine similarity of the query and the chunk's embedding (0 for a zero vector).
    pub score: f32,
}

/// A kept hit, ordered so that the *worse* hit is the greater (the heap's top is the one to
/// drop): lower score, then higher id.
#[derive(Debug, Clone, Copy)]
struct Kept(Hit);

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kept {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then_with(|| self.0.id.cmp(&other.0.id))
    }
}

/// The best `depth` hits of one query.
#[derive(Debug, Clone)]
struct TopK {
    depth: usize,
    heap: BinaryHeap<Kept>,
}

impl TopK {
    fn new(depth: usize) -> Self {
        TopK {
            depth,
            heap: BinaryHeap::with_capacity(depth + 1),
        }
    }

    fn push(&mut self, hit: Hit) {
        if self.depth == 0 {
            return;
        }
        if self.heap.len() < self.depth {
            self.heap.push(Kept(hit));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if Kept(hit) < *worst {
                *worst = Kept(hit);
            }
        }
    }

    /// The lowest score that could still enter (−∞ while not full).
    fn threshold(&self) -> f32 {
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.depth => worst.0.score,
            _ => f32::NEG_INFINITY,
        }
    }

    /// The hits, best first.
    fn into_sorted(self) -> Vec<Hit> {
        let mut hits = self.heap.into_vec();
        hits.sort();
        hits.into_iter().map(|k| k.0).collect()
    }
}

/// A ranking of hits: higher score first, then lower id (what exact search and a re-sorted
/// index search both return).
pub fn rank(hits: &mut [Hit]) {
    hits.sort_by_key(|h| Kept(*h));
}

/// Scales `v` to unit length (a zero vector stays zero).
fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        let inv = 1.0 / norm;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Scores queries against a stream of chunk blocks.
pub struct ExactSearch {
    dimension: usize,
    depth: usize,
    /// The queries, unit length, tile by tile: `[tile][d][i]` (padded with zero queries).
    tiles: Vec<f32>,
    queries: usize,
}

/// A block of chunks: ids and their vectors, row after row.
type Block = (Vec<Uuid>, Vec<f32>);

impl ExactSearch {
    /// A search for `queries` (each `dimension` values) keeping `depth` hits per query.
    pub fn new(queries: &[Vec<f32>], dimension: usize, depth: usize) -> Self {
        let n_tiles = queries.len().div_ceil(QT);
        let mut tiles = vec![0f32; n_tiles * QT * dimension];
        for (q, vector) in queries.iter().enumerate() {
            let mut v = vector.clone();
            normalise(&mut v);
            let (tile, i) = (q / QT, q % QT);
            for (d, x) in v.iter().enumerate() {
                tiles[(tile * dimension + d) * QT + i] = *x;
            }
        }
        ExactSearch {
            dimension,
            depth,
            tiles,
            queries: queries.len(),
        }
    }

    /// Runs the search on `threads` workers: `stream` calls its argument with every block of
    /// chunk ids and vectors (`ids.len() * dimension` values) and returns what the store
    /// returned. Returns each query's hits, best first.
    pub fn run<E>(
        &self,
        threads: usize,
        stream: impl FnOnce(&mut dyn FnMut(&[Uuid], &[f32]) -> Result<(), E>) -> Result<(), E>,
    ) -> Result<Vec<Vec<Hit>>, E> {
        let threads = threads.max(1);
        let (send, receive) = mpsc::sync_channel::<Block>(threads * 2);
        let receive = Mutex::new(receive);
        let (streamed, partials) = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| scope.spawn(|| self.work(&receive)))
                .collect();
            let streamed = stream(&mut |ids: &[Uuid], values: &[f32]| {
                debug_assert_eq!(ids.len() * self.dimension, values.len());
                // A worker that died has dropped nothing: its panic surfaces at join.
                let _ = send.send((ids.to_vec(), values.to_vec()));
                Ok(())
            });
            drop(send);
            let partials: Vec<Vec<TopK>> = workers
                .into_iter()
                .map(|w| w.join().expect("a search worker panicked"))
                .collect();
            (streamed, partials)
        });
        streamed?;
        let mut merged: Vec<TopK> = (0..self.queries).map(|_| TopK::new(self.depth)).collect();
        for partial in partials {
            for (top, part) in merged.iter_mut().zip(partial) {
                for kept in part.heap {
                    top.push(kept.0);
                }
            }
        }
        Ok(merged.into_iter().map(TopK::into_sorted).collect())
    }

    /// A worker: scores blocks until the channel closes; returns its heaps.
    fn work(&self, receive: &Mutex<mpsc::Receiver<Block>>) -> Vec<TopK> {
        let mut tops: Vec<TopK> = (0..self.queries).map(|_| TopK::new(self.depth)).collect();
        let (mut transposed, mut scores) = (Vec::new(), Vec::new());
        loop {
            let block = match receive.lock() {
                Ok(r) => r.recv(),
                Err(_) => break,
            };
            let Ok((ids, mut values)) = block else { break };
            self.score_block(&ids, &mut values, &mut tops, &mut transposed, &mut scores);
        }
        tops
    }

    fn score_block(
        &self,
        ids: &[Uuid],
        values: &mut [f32],
        tops: &mut [TopK],
        transposed: &mut Vec<f32>,
        scores: &mut Vec<f32>,
    ) {
        let (n, dim) = (ids.len(), self.dimension);
        if n == 0 || dim == 0 {
            return;
        }
        let width = n.div_ceil(PAD) * PAD;
        transposed.clear();
        transposed.resize(dim * width, 0.0);
        for (c, row) in values.chunks_exact_mut(dim).enumerate() {
            normalise(row);
            for (d, x) in row.iter().enumerate() {
                transposed[d * width + c] = *x;
            }
        }
        scores.clear();
        scores.resize(QT * width, 0.0);
        for (tile, queries) in self.tiles.chunks_exact(QT * dim).enumerate() {
            kernel(queries, transposed, width, dim, scores);
            for i in 0..QT {
                let q = tile * QT + i;
                if q >= self.queries {
                    break;
                }
                let top = &mut tops[q];
                let mut threshold = top.threshold();
                for (c, &s) in scores[i * width..i * width + n].iter().enumerate() {
                    let s = if s.is_nan() { f32::NEG_INFINITY } else { s };
                    if s >= threshold {
                        top.push(Hit {
                            id: ids[c],
                            score: s,
                        });
                        threshold = top.threshold();
                    }
                }
            }
        }
    }
}

/// `scores[i][c]` = query `i` of the tile · chunk `c` (`transposed` is `[d][c]`, `width`
/// chunks wide, a multiple of [`PAD`]). The widest variant the CPU has runs: AVX-512 (32
/// chunks a tile), AVX2 + FMA (16), or the target's baseline (16; NEON on aarch64 has FMA).
fn kernel(queries: &[f32], transposed: &[f32], width: usize, dim: usize, scores: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for (checked here).
            unsafe { kernel_avx512(queries, transposed, width, dim, scores) };
            return;
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            unsafe { kernel_avx2(queries, transposed, width, dim, scores) };
            return;
        }
    }
    kernel_generic::<16, { cfg!(target_arch = "aarch64") }>(queries, transposed, width, dim, scores)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn kernel_avx512(
    queries: &[f32],
    transposed: &[f32],
    width: usize,
    dim: usize,
    scores: &mut [f32],
) {
    kernel_generic::<32, true>(queries, transposed, width, dim, scores)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(
    queries: &[f32],
    transposed: &[f32],
    width: usize,
    dim: usize,
    scores: &mut [f32],
) {
    kernel_generic::<16, true>(queries, transposed, width, dim, scores)
}

/// The kernel's loops: tiles of [`QT`] queries × `CT` chunks, `QT × CT` independent sums.
/// `FMA`: fused multiply-adds (only where the target has them in hardware — elsewhere
/// `mul_add` would be a library call).
#[inline(always)]
fn kernel_generic<const CT: usize, const FMA: bool>(
    queries: &[f32],
    transposed: &[f32],
    width: usize,
    dim: usize,
    scores: &mut [f32],
) {
    for c0 in (0..width).step_by(CT) {
        let mut acc = [[0f32; CT]; QT];
        for d in 0..dim {
            let column: &[f32; CT] = transposed[d * width + c0..d * width + c0 + CT]
                .try_into()
                .expect("CT values");
            let q: &[f32; QT] = queries[d * QT..d * QT + QT].try_into().expect("QT values");
            for i in 0..QT {
                for l in 0..CT {
                    acc[i][l] = if FMA {
                        q[i].mul_add(column[l], acc[i][l])
                    } else {
                        acc[i][l] + q[i] * column[l]
                    };
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            scores[i * width + c0..i * width + c0 + CT].copy_from_slice(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain scalar reference: every cosine, sorted by score then id.
    fn reference(queries: &[Vec<f32>], chunks: &[(Uuid, Vec<f32>)], depth: usize) -> Vec<Vec<Hit>> {
        let cos = |a: &[f32], b: &[f32]| {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            if n(a) == 0.0 || n(b) == 0.0 {
                0.0
            } else {
                dot / n(a) / n(b)
            }
        };
        queries
            .iter()
            .map(|q| {
                let mut hits: Vec<Hit> = chunks
                    .iter()
                    .map(|(id, v)| Hit {
                        id: *id,
                        score: cos(q, v) as f32,
                    })
                    .collect();
                rank(&mut hits);
                hits.truncate(depth);
                hits
            })
            .collect()
    }

    #[test]
    fn equals_a_scalar_reference_with_ties_blocks_and_threads() {
        let dim = 19;
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        };
        let chunks: Vec<(Uuid, Vec<f32>)> = (0..301u128)
            .map(|i| {
                (
                    Uuid::from_u128(i * 7919 % 1000),
                    (0..dim).map(|_| next()).collect(),
                )
            })
            .collect();
        // The same vectors under other ids: exact ties, broken by id.
        let mut chunks = chunks;
        for i in 0..20 {
            let v = chunks[i].1.clone();
            chunks.push((Uuid::from_u128(5000 + i as u128), v));
        }
        chunks.push((Uuid::from_u128(9999), vec![0.0; dim]));
        let queries: Vec<Vec<f32>> = (0..7).map(|_| (0..dim).map(|_| next()).collect()).collect();
        let expected = reference(&queries, &chunks, 25);
        for threads in [1, 3] {
            for block in [1, 16, 50, 1000] {
                let search = ExactSearch::new(&queries, dim, 25);
                let got = search
                    .run::<()>(threads, |visit| {
                        for part in chunks.chunks(block) {
                            let ids: Vec<Uuid> = part.iter().map(|c| c.0).collect();
                            let values: Vec<f32> = part.iter().flat_map(|c| c.1.clone()).collect();
                            visit(&ids, &values)?;
                        }
                        Ok(())
                    })
                    .unwrap();
                for (g, e) in got.iter().zip(&expected) {
                    let ids = |h: &[Hit]| h.iter().map(|h| h.id).collect::<Vec<_>>();
                    assert_eq!(ids(g), ids(e), "threads {threads}, block {block}");
                    for (a, b) in g.iter().zip(e) {
                        assert!((a.score - b.score).abs() < 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn fewer_chunks_than_depth_and_no_queries() {
        let search = ExactSearch::new(&[vec![1.0, 0.0]], 2, 10);
        let got = search
            .run::<()>(2, |visit| visit(&[Uuid::from_u128(1)], &[0.0, 2.0]))
            .unwrap();
        assert_eq!(
            got,
            vec![vec![Hit {
                id: Uuid::from_u128(1),
                score: 0.0
            }]]
        );
        let none = ExactSearch::new(&[], 2, 10)
            .run::<()>(2, |_| Ok(()))
            .unwrap();
        assert!(none.is_empty());
    }
}
