//! Retrieval metrics as trec_eval defines them, on a ranked run cut at `depth`.
//!
//! A document is relevant when its grade is at least 1 (trec_eval's `relevance_level`).
//! * `P_K`: relevant documents in the first K, divided by K (K even when fewer were retrieved).
//! * `recall_K`: relevant documents in the first K, divided by all relevant documents.
//! * `ndcg_cut_K`: DCG of the first K (gain = the grade, discount log2(rank + 1)) divided by the
//!   DCG of the ideal ranking of every judged relevant document, cut at K.
//! * `recip_rank`: 1 / the rank of the first relevant document.
//! * `map` (average precision): the precision at the rank of each relevant document retrieved,
//!   summed, divided by all relevant documents.
//!
//! Every measure is 0 for a query without relevant documents, as trec_eval's are. Means are
//! taken over every query (trec_eval `-c`): a query whose run is empty counts as 0, never left
//! out.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// One query's scores: `recall@K`, `precision@K`, `ndcg@K` for each K, `mrr`, `map`.
pub type Scores = BTreeMap<String, f64>;

/// The metric names for cut-offs `ks`, in report order.
pub fn names(ks: &[usize]) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in ["recall", "precision", "ndcg"] {
        names.extend(ks.iter().map(|k| format!("{prefix}@{k}")));
    }
    names.push("mrr".into());
    names.push("map".into());
    names
}

/// Scores one query: `ranking` is the run in rank order (already cut at the depth), `judged`
/// the graded relevance of documents (grades below 1 count as not relevant).
pub fn score<D: Eq + Hash>(ranking: &[D], judged: &HashMap<D, u32>, ks: &[usize]) -> Scores {
    let grade = |d: &D| judged.get(d).copied().unwrap_or(0);
    let num_rel = judged.values().filter(|&&g| g >= 1).count();
    // The ideal ranking's gains: every judged relevant document, best first.
    let mut ideal: Vec<u32> = judged.values().copied().filter(|&g| g >= 1).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let discount = |rank: usize| 1.0 / ((rank + 1) as f64).log2();
    let dcg = |gains: &mut dyn Iterator<Item = u32>, k: usize| -> f64 {
        gains
            .take(k)
            .enumerate()
            .map(|(i, g)| g as f64 * discount(i + 1))
            .sum()
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let mut out = Scores::new();
    for &k in ks {
        let hits = ranking.iter().take(k).filter(|d| grade(d) >= 1).count() as f64;
        out.insert(format!("recall@{k}"), ratio(hits, num_rel as f64));
        out.insert(format!("precision@{k}"), ratio(hits, k as f64));
        let found = dcg(&mut ranking.iter().map(grade), k);
        let best = dcg(&mut ideal.iter().copied(), k);
        out.insert(format!("ndcg@{k}"), ratio(found, best));
    }
    let first = ranking.iter().position(|d| grade(d) >= 1);
    out.insert("mrr".into(), first.map_or(0.0, |i| 1.0 / (i + 1) as f64));
    let mut hits = 0usize;
    let mut precision_sum = 0.0;
    for (i, d) in ranking.iter().enumerate() {
        if grade(d) >= 1 {
            hits += 1;
            precision_sum += hits as f64 / (i + 1) as f64;
        }
    }
    out.insert("map".into(), ratio(precision_sum, num_rel as f64));
    out
}

/// The mean of each metric over `queries` (every query counts; none: an empty map).
pub fn mean<'a>(queries: impl IntoIterator<Item = &'a Scores>) -> Scores {
    let mut sums = Scores::new();
    let mut n = 0usize;
    for scores in queries {
        n += 1;
        for (name, value) in scores {
            *sums.entry(name.clone()).or_default() += value;
        }
    }
    for value in sums.values_mut() {
        *value /= n as f64;
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&'static str, u32)]) -> HashMap<&'static str, u32> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_hand_checked_query() {
        // Relevant: a (grade 2), b (grade 1), z (grade 3, never retrieved).
        let j = judged(&[("a", 2), ("b", 1), ("z", 3), ("n", 0)]);
        let s = score(&["x", "a", "n", "b"], &j, &[1, 2, 5]);
        assert_eq!(s["precision@1"], 0.0);
        assert_eq!(s["precision@2"], 0.5);
        assert_eq!(s["precision@5"], 2.0 / 5.0);
        assert_eq!(s["recall@5"], 2.0 / 3.0);
        assert_eq!(s["mrr"], 0.5);
        assert!((s["map"] - (1.0 / 2.0 + 2.0 / 4.0) / 3.0).abs() < 1e-15);
        let dcg = 2.0 / 3f64.log2() + 1.0 / 5f64.log2();
        let ideal = 3.0 + 2.0 / 3f64.log2() + 1.0 / 2.0;
        assert!((s["ndcg@5"] - dcg / ideal).abs() < 1e-15);
        let mut expected = names(&[1, 2, 5]);
        expected.sort();
        assert_eq!(s.keys().cloned().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn no_relevant_document_scores_zero_and_means_count_every_query() {
        let none = score::<&str>(&["a"], &judged(&[("a", 0)]), &[1]);
        assert!(none.values().all(|&v| v == 0.0), "{none:?}");
        let all = score(&["a"], &judged(&[("a", 1)]), &[1]);
        let m = mean([&none, &all]);
        assert_eq!(m["precision@1"], 0.5);
        assert_eq!(m["mrr"], 0.5);
    }
}
