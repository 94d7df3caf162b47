//! Summary lines that take more than a format string: a restore's, and those of dry runs, which
//! read as a plan (`would replace …`), never as if something had happened.

use goldset::ops::cache::CacheSummary;
use goldset::ops::restore::RestoreSummary;
use goldset::ops::snapshot::Manifest;
use goldset::store::Inventory;
use indicatif::{HumanBytes, HumanCount};
use std::path::Path;

/// A restore's summary line; a dry run's reads as a plan (`would replace …`).
pub fn restore_text(s: &RestoreSummary) -> String {
    let dry = s.dry_run;
    let would = |done: &str, plan: &str| {
        if dry {
            plan.to_owned()
        } else {
            done.to_owned()
        }
    };
    let mut text = if dry {
        format!(
            "restore (dry run, nothing written): would restore {}",
            s.restored
        )
    } else {
        format!("restore: restored {}", s.restored)
    };
    if is_stdin(&s.file) {
        text += " from stdin";
    } else {
        text += &format!(" from {} ({})", s.file.display(), HumanBytes(s.bytes));
    }
    match &s.removed {
        Some(removed) if *removed == Inventory::default() => {
            text += &would("; the database was empty", "; the database is empty")
        }
        Some(removed) => text += &format!("; {} {removed}", would("replaced", "would replace")),
        None => {}
    }
    if let Some(d) = &s.difference {
        text += &format!(
            "; only the difference: {} analyses unchanged, {} {} ({} chunks {}, {} {} their vector), {} {}",
            d.unchanged,
            d.changed,
            would("changed", "would change"),
            d.chunks_rewritten,
            would("rewritten", "to rewrite"),
            d.vectors_kept,
            would("kept", "would keep"),
            would("deleted", "would delete"),
            d.deleted
        );
    }
    if s.skipped.total_analyses > 0 {
        text += &format!(
            "; {} {} existing analyses",
            would("skipped", "would skip"),
            s.skipped.total_analyses
        );
    }
    if s.updated > 0 {
        text += &format!(
            "; {} {} existing analyses",
            would("updated", "would update"),
            s.updated
        );
    }
    if !dry {
        text += &format!("; {} chunks embedded by {}", s.embedded, s.model);
        if s.from_cache > 0 {
            text += &format!(" ({} more from the embedding cache)", s.from_cache);
        }
    }
    let seconds = s.elapsed.as_secs_f64();
    if dry {
        text += &format!(
            "; checked in {seconds:.2}s; the database would then hold {}",
            s.after
        );
    } else {
        let rate = s.restored.total_chunks as f64 / seconds.max(1e-9);
        text += &format!(
            " in {seconds:.2}s ({} chunks/s); database now holds {}",
            HumanCount(rate.round() as u64),
            s.after
        );
    }
    text
}

/// Whether a command read its backup from stdin (`--file -`).
fn is_stdin(file: &Path) -> bool {
    #[cfg(unix)]
    if file == Path::new(super::args::STDIN_PATH) {
        return true;
    }
    file.as_os_str() == super::args::STDIO
}

/// `load --dry-run`'s line.
pub fn load_plan_text(
    file: &Path,
    manifest: &Manifest,
    held: Option<&(String, Inventory)>,
) -> String {
    let what = &manifest.snapshot.inventory;
    let plan = match held {
        None => "would create the database and load it".to_owned(),
        Some((location, h)) if *h == Inventory::default() => {
            format!("would load it into {location}, which is empty")
        }
        Some((location, h)) => format!("would replace {h} in {location}"),
    };
    format!(
        "load (dry run, nothing loaded): {} matches its manifest ({what}; {} snapshot); {plan}",
        file.display(),
        manifest.snapshot.kind
    )
}

/// `cache --prune --dry-run` / `cache --clear --dry-run`'s line.
pub fn cache_plan_text(location: &str, s: &CacheSummary, clear: bool) -> String {
    let (entries, what) = if clear {
        (s.entries(), "every entry")
    } else {
        (s.unused(), "the entries no chunk uses")
    };
    format!(
        "cache (dry run, nothing removed): would remove {what}: {entries} of the {} embeddings ({}) {location} caches",
        s.entries(),
        HumanBytes(s.bytes())
    )
}
