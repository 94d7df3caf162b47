//! The evaluation baseline (FORMAT.md, "Evaluation baseline"): the scores of one `eval`, kept in
//! a canonical JSON file beside the backup (`eval --save`), and the comparison of a later run
//! with it (`eval --check`).

use super::metrics::Scores;
use super::{EvalSummary, OpError, SearchMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The only baseline version this build reads and writes.
pub const BASELINE_VERSION: &str = "1.0";

/// Default path of the baseline file.
pub const DEFAULT_BASELINE_PATH: &str = "data/golden_eval.json";

/// A baseline file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// [`BASELINE_VERSION`].
    pub version: String,
    /// The model that embedded queries and chunks.
    pub model: String,
    /// Its dimension.
    pub dimension: usize,
    /// The dataset's content digest ([`EvalSummary::dataset_sha256`]).
    pub dataset_sha256: String,
    /// `exact` or `index`.
    pub search: String,
    /// Results per query.
    pub depth: usize,
    /// Means over all queries, by metric.
    pub metrics: Scores,
    /// Each query's scores, by query id then metric.
    pub queries: BTreeMap<String, Scores>,
}

impl Baseline {
    /// The baseline of an evaluation.
    pub fn of(s: &EvalSummary) -> Baseline {
        Baseline {
            version: BASELINE_VERSION.into(),
            model: s.model.clone(),
            dimension: s.dimension,
            dataset_sha256: s.dataset_sha256.clone(),
            search: match s.search {
                SearchMode::Exact => "exact",
                SearchMode::Index => "index",
            }
            .into(),
            depth: s.depth,
            metrics: s.metrics.clone(),
            queries: s
                .queries
                .iter()
                .map(|q| (q.id.clone(), q.metrics.clone()))
                .collect(),
        }
    }

    /// Its canonical JSON: keys sorted (the structs' order at the top), two-space indent, numbers
    /// as their shortest round-trip form, a final newline.
    pub fn to_canonical(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a baseline serializes");
        text.push('\n');
        text
    }

    /// Reads a baseline file.
    pub fn read(path: &Path) -> Result<Baseline, OpError> {
        let text = std::fs::read_to_string(path).map_err(OpError::io(path))?;
        let baseline: Baseline = serde_json::from_str(&text).map_err(|e| OpError::Manifest {
            path: path.to_owned(),
            reason: format!("{}:{}: {e}", e.line(), e.column()),
        })?;
        if baseline.version != BASELINE_VERSION {
            return Err(OpError::Manifest {
                path: path.to_owned(),
                reason: format!(
                    "unsupported baseline version {:?} (this goldset reads {BASELINE_VERSION:?})",
                    baseline.version
                ),
            });
        }
        Ok(baseline)
    }

    /// Writes the baseline atomically; a file that already holds the same bytes is left alone.
    /// Returns whether it was written.
    pub fn save(&self, path: &Path) -> Result<bool, OpError> {
        let text = self.to_canonical();
        if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
            return Ok(false);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(OpError::io(dir))?;
        }
        crate::ops::atomic::write_file(path, text.as_bytes()).map_err(OpError::io(path))?;
        Ok(true)
    }
}

/// A query's metric that went down.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Worse {
    /// The query.
    pub query: String,
    /// The metric.
    pub metric: String,
    /// The baseline's value.
    pub before: f64,
    /// This run's.
    pub after: f64,
}

/// How a run compares with a baseline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    /// The baseline file.
    pub baseline: PathBuf,
    /// What fails the check: mean metrics that dropped more than the tolerance, queries that
    /// lost all their relevant hits.
    pub failures: Vec<String>,
    /// Mean metrics now and in the baseline (those both have).
    pub deltas: BTreeMap<String, (f64, f64)>,
    /// Every query metric that went down (a look, not a failure).
    pub worse: Vec<Worse>,
    /// What differs in the setting (model, dataset, depth, queries).
    pub notes: Vec<String>,
}

impl Comparison {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Differences smaller than this are rounding, not change.
const EPSILON: f64 = 1e-12;

/// Compares `now` with `baseline`: a mean metric that dropped more than `max_drop`, or a query
/// whose relevant hits (any in the top `depth`: `mrr` > 0) all went, fails the check.
pub fn compare(now: &EvalSummary, baseline: &Baseline, path: &Path, max_drop: f64) -> Comparison {
    let mut c = Comparison {
        baseline: path.to_owned(),
        failures: Vec::new(),
        deltas: BTreeMap::new(),
        worse: Vec::new(),
        notes: Vec::new(),
    };
    if baseline.model != now.model || baseline.dimension != now.dimension {
        c.notes.push(format!(
            "model: {} ({} dims) in the baseline, {} ({} dims) now",
            baseline.model, baseline.dimension, now.model, now.dimension
        ));
    }
    if baseline.dataset_sha256 != now.dataset_sha256 {
        c.notes
            .push("the dataset changed since the baseline was saved".into());
    }
    if baseline.depth != now.depth {
        c.notes.push(format!(
            "depth {} in the baseline, {} now",
            baseline.depth, now.depth
        ));
    }
    for (metric, &after) in &now.metrics {
        let Some(&before) = baseline.metrics.get(metric) else {
            c.notes.push(format!("{metric}: not in the baseline"));
            continue;
        };
        c.deltas.insert(metric.clone(), (before, after));
        if before - after > max_drop + EPSILON {
            c.failures.push(format!(
                "{metric} dropped by {:.4} ({before:.4} → {after:.4}; tolerance {max_drop})",
                before - after
            ));
        }
    }
    for q in &now.queries {
        let Some(old) = baseline.queries.get(&q.id) else {
            c.notes
                .push(format!("query {:?}: not in the baseline", q.id));
            continue;
        };
        let had = old.get("mrr").copied().unwrap_or(0.0) > 0.0;
        let has = q.metrics.get("mrr").copied().unwrap_or(0.0) > 0.0;
        if had && !has {
            c.failures.push(format!(
                "query {:?} lost all its relevant hits (none in the top {})",
                q.id, now.depth
            ));
        }
        for (metric, &after) in &q.metrics {
            if let Some(&before) = old.get(metric) {
                if before - after > EPSILON {
                    c.worse.push(Worse {
                        query: q.id.clone(),
                        metric: metric.clone(),
                        before,
                        after,
                    });
                }
            }
        }
    }
    let current: std::collections::HashSet<&str> =
        now.queries.iter().map(|q| q.id.as_str()).collect();
    for id in baseline
        .queries
        .keys()
        .filter(|id| !current.contains(id.as_str()))
    {
        c.notes.push(format!(
            "query {id:?}: in the baseline, not in the queries file"
        ));
    }
    c
}
