//! `goldset eval`: score retrieval on the golden queries; `--save` a baseline, `--check` against
//! one (exit 1 when a metric drops more than `--max-drop` or a query loses all its hits).

use super::args::{CacheUse, LockArgs};
use super::{Context, Create, Format};
use goldset::format::queries::DEFAULT_QUERIES_PATH;
use goldset::ops::eval::baseline::{compare, Baseline, Comparison, DEFAULT_BASELINE_PATH};
use goldset::ops::eval::{evaluate, metrics, EvalOptions, EvalSummary, SearchMode};
use goldset::ops::OpError;
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The golden queries file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_QUERIES_PATH)]
    pub queries: PathBuf,
    /// Cut-offs of recall@K, precision@K and ndcg@K (repeat or separate with commas).
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    pub k: Vec<usize>,
    /// Results per query: the ranking that mrr and map see.
    #[arg(long, default_value_t = 100)]
    pub depth: usize,
    /// exact: brute-force cosine over every stored embedding; index: the database's own
    /// nearest-neighbour search through the application's pgvector index (PostgreSQL).
    #[arg(long, value_enum, default_value_t = SearchArg::Exact)]
    pub search: SearchArg,
    /// Write the scores as the baseline to compare later runs with.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = DEFAULT_BASELINE_PATH)]
    pub save: Option<PathBuf>,
    /// Compare with a baseline: exit 1 when a mean metric drops more than --max-drop or a query
    /// loses all its relevant hits.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = DEFAULT_BASELINE_PATH)]
    pub check: Option<PathBuf>,
    /// The largest drop of a mean metric that --check lets pass.
    #[arg(long, default_value_t = 0.02, value_name = "X")]
    pub max_drop: f64,
    /// Score even when some stored embeddings were made from a text the chunk no longer holds.
    #[arg(long)]
    pub allow_stale: bool,
    /// Search threads [default: one per CPU].
    #[arg(long, hide = true, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub cache: CacheUse,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// `--search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchArg {
    /// Brute-force cosine over every stored embedding.
    Exact,
    /// The database's vector index (PostgreSQL + pgvector).
    Index,
}

/// Runs the evaluation; 1 when `--check` fails.
pub fn run(ctx: &Context, args: &EvalArgs) -> Result<i32, OpError> {
    if !(args.max_drop.is_finite() && args.max_drop >= 0.0) {
        return Err(OpError::Refused("--max-drop must be a number ≥ 0".into()));
    }
    let embedder = ctx.embedder()?;
    let options = EvalOptions {
        queries: args.queries.clone(),
        ks: args.k.clone(),
        depth: args.depth,
        search: match args.search {
            SearchArg::Exact => SearchMode::Exact,
            SearchArg::Index => SearchMode::Index,
        },
        allow_stale: args.allow_stale,
        use_cache: args.cache.use_cache(),
        threads: args.threads,
    };
    let mut store = if options.use_cache {
        ctx.open_store(Create::No, args.lock.wait())?
    } else {
        ctx.open_existing()?
    };
    let summary = evaluate(store.as_mut(), embedder.as_ref(), &options)?;
    let comparison = match &args.check {
        Some(path) => Some(compare(
            &summary,
            &Baseline::read(path)?,
            path,
            args.max_drop,
        )),
        None => None,
    };
    let passed = comparison.as_ref().is_none_or(Comparison::passed);
    // A failed check leaves the baseline as it was.
    let saved = match &args.save {
        Some(path) if passed => Baseline::of(&summary).save(path)?.then_some(path),
        _ => None,
    };
    show(
        ctx,
        &summary,
        comparison.as_ref(),
        args.save.as_ref(),
        saved,
    );
    Ok(if passed { 0 } else { 1 })
}

/// Shows the result: a table for people, one JSON object for programs.
pub(super) fn show(
    ctx: &Context,
    s: &EvalSummary,
    check: Option<&Comparison>,
    save: Option<&PathBuf>,
    saved: Option<&PathBuf>,
) {
    let out = ctx.out.stdout();
    let passed = check.is_none_or(Comparison::passed);
    if ctx.global.format == Format::Json {
        let queries: serde_json::Map<String, serde_json::Value> = s
            .queries
            .iter()
            .map(|q| (q.id.clone(), json!(q.metrics)))
            .collect();
        let value = json!({
            "ok": passed,
            "command": "eval",
            "queries_file": s.queries_file,
            "model": s.model,
            "dimension": s.dimension,
            "search": s.search,
            "ks": s.ks,
            "depth": s.depth,
            "chunks": s.chunks,
            "dataset_sha256": s.dataset_sha256,
            "stale": s.stale,
            "from_cache": s.from_cache,
            "metrics": s.metrics,
            "per_tag": s.per_tag,
            "queries": queries,
            "check": check,
            "saved": saved,
            "search_seconds": (s.search_time.as_secs_f64() * 1000.0).round() / 1000.0,
            "elapsed_seconds": (s.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        });
        out.line(&serde_json::to_string_pretty(&value).expect("JSON values serialize"));
        return;
    }
    if !ctx.global.quiet {
        let searched = match s.search {
            SearchMode::Exact => format!("exact search over {} chunks", s.chunks),
            SearchMode::Index => "the database's index".to_owned(),
        };
        out.line(&format!(
            "eval: {} queries, {searched} ({}, {} dims, depth {}) in {:.2} s",
            s.queries.len(),
            s.model,
            s.dimension,
            s.depth,
            s.elapsed.as_secs_f64()
        ));
        if s.stale > 0 {
            out.line(&format!(
                "eval: scored over {} stale embeddings (--allow-stale)",
                s.stale
            ));
        }
        for line in table(s, check) {
            out.line(&line);
        }
    }
    if let Some(c) = check {
        for note in &c.notes {
            eprintln!("eval: note: {note}");
        }
        let mut worse = c.worse.clone();
        worse.sort_by(|a, b| (b.before - b.after).total_cmp(&(a.before - a.after)));
        if !worse.is_empty() && !ctx.global.quiet {
            out.line(&format!(
                "queries that got worse ({} metric values):",
                worse.len()
            ));
            for w in worse.iter().take(10) {
                out.line(&format!(
                    "  {:<24} {:<14} {:.4} → {:.4}",
                    w.query, w.metric, w.before, w.after
                ));
            }
        }
        if c.passed() {
            if !ctx.global.quiet {
                out.line(&format!("eval: check against {}: ok", c.baseline.display()));
            }
        } else {
            for f in &c.failures {
                out.line(&format!("  FAIL  {f}"));
            }
            out.line(&format!(
                "eval: check against {} FAILED: {} problem(s)",
                c.baseline.display(),
                c.failures.len()
            ));
        }
    }
    if !ctx.global.quiet {
        match (save, saved) {
            (Some(p), Some(_)) => out.line(&format!("eval: baseline written to {}", p.display())),
            (Some(p), None) if passed => {
                out.line(&format!("eval: baseline {} unchanged", p.display()))
            }
            (Some(p), None) => out.line(&format!(
                "eval: baseline {} not written (the check failed)",
                p.display()
            )),
            _ => {}
        }
    }
}

/// Metrics down, `all` then each tag across (and the baseline's value beside with `--check`).
fn table(s: &EvalSummary, check: Option<&Comparison>) -> Vec<String> {
    let names = metrics::names(&s.ks);
    let mut header = format!("{:<14} {:>8}", "metric", "all");
    if check.is_some() {
        header.push_str(&format!(" {:>9} {:>8}", "baseline", "change"));
    }
    for tag in s.per_tag.keys() {
        header.push_str(&format!(" {:>10}", truncate(tag, 10)));
    }
    let mut lines = vec![header];
    for name in names {
        let value = s.metrics.get(&name).copied().unwrap_or(0.0);
        let mut line = format!("{name:<14} {value:>8.4}");
        if let Some(c) = check {
            match c.deltas.get(&name) {
                Some((before, after)) => {
                    line.push_str(&format!(" {before:>9.4} {:>+8.4}", after - before))
                }
                None => line.push_str(&format!(" {:>9} {:>8}", "-", "-")),
            }
        }
        for scores in s.per_tag.values() {
            line.push_str(&format!(
                " {:>10.4}",
                scores.get(&name).copied().unwrap_or(0.0)
            ));
        }
        lines.push(line);
    }
    lines
}

fn truncate(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

/// `--eval` of `restore` and `reembed`: score retrieval once the command has committed.
#[derive(Debug, clap::Args)]
pub struct EvalAfter {
    /// After committing, run `eval` on the golden queries (data/golden_queries.json) and say
    /// the result; with a baseline (data/golden_eval.json), check against it (exit 1 when the
    /// check fails — what was committed stays).
    #[arg(long)]
    pub eval: bool,
}

/// Runs `eval` with its defaults after `command` committed, and shows the command's own summary
/// (`text` for people, `summary` as JSON) with the result. Returns the exit code.
pub(super) fn after(
    ctx: &Context,
    command: &str,
    summary: serde_json::Value,
    text: &dyn Fn(),
    store: &mut dyn goldset::store::Store,
    embedder: &dyn goldset::embed::Embedder,
) -> Result<i32, OpError> {
    let options = EvalOptions {
        queries: PathBuf::from(DEFAULT_QUERIES_PATH),
        ks: vec![1, 5, 10],
        depth: 100,
        search: SearchMode::Exact,
        allow_stale: false,
        use_cache: true,
        threads: 0,
    };
    let baseline = PathBuf::from(DEFAULT_BASELINE_PATH);
    let result = evaluate(store, embedder, &options).and_then(|s| {
        let check = if baseline.is_file() {
            Some(compare(&s, &Baseline::read(&baseline)?, &baseline, 0.02))
        } else {
            None
        };
        Ok((s, check))
    });
    let passed = match &result {
        Ok((_, check)) => check.as_ref().is_none_or(Comparison::passed),
        Err(_) => false,
    };
    if ctx.global.format == Format::Json {
        let eval = match &result {
            Ok((s, check)) => json!({
                "model": s.model, "queries": s.queries.len(), "metrics": s.metrics, "check": check,
            }),
            Err(e) => json!({"error": e.to_string(), "exit_code": e.exit_code()}),
        };
        let value = json!({"ok": passed, "command": command, "summary": summary, "eval": eval});
        ctx.out
            .stdout()
            .line(&serde_json::to_string_pretty(&value).expect("JSON values serialize"));
        return Ok(match &result {
            Ok(_) if passed => 0,
            Ok(_) => 1,
            Err(e) => e.exit_code(),
        });
    }
    text();
    let (s, check) = match result {
        Ok(r) => r,
        Err(e) => {
            return Err(OpError::Refused(format!(
                "{command} committed, but eval could not run: {e}"
            )))
        }
    };
    let pick = |name: &str| s.metrics.get(name).copied().unwrap_or(0.0);
    let mut line = format!(
        "{command}: eval over {} queries: recall@10 {:.3}, ndcg@10 {:.3}, mrr {:.3}, map {:.3}",
        s.queries.len(),
        pick("recall@10"),
        pick("ndcg@10"),
        pick("mrr"),
        pick("map")
    );
    match &check {
        Some(c) if c.passed() => line += &format!("; check against {}: ok", c.baseline.display()),
        Some(c) => {
            line += &format!(
                "; check against {} FAILED: {}",
                c.baseline.display(),
                c.failures.join("; ")
            )
        }
        None => {
            line += &format!(
                "; no baseline at {} (goldset eval --save writes one)",
                baseline.display()
            )
        }
    }
    if passed {
        ctx.out.line(line);
    } else {
        ctx.out.stdout().line(&line);
    }
    Ok(if passed { 0 } else { 1 })
}
