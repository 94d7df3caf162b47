//! Rendering for people (text) and programs (`--format json`, one object on stdout).

use super::stdout::Stdout;
use super::Format;
use goldset::ops::backup::BackupSummary;
use goldset::ops::cache::CacheSummary;
use goldset::ops::diff::{Change, Diff};
use goldset::ops::history::LogEntry;
use goldset::ops::reembed::ReembedSummary;
use goldset::ops::restore::RestoreSummary;
use goldset::ops::snapshot::{DumpSummary, LoadSummary, Manifest};
use goldset::ops::verify::Verification;
use goldset::ops::OpError;
use goldset::report::{Report, Verdict};
use goldset::store::Inventory;
use indicatif::HumanBytes;
use serde_json::json;

/// Where and how results are shown. Everything for stdout goes through one [`Stdout`].
pub struct Output {
    format: Format,
    quiet: bool,
    stdout: Stdout,
}

/// `println!` into the output's [`Stdout`], which never panics.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        $out.stdout.line(&format!($($arg)*))
    };
}

impl Output {
    /// Output on the process's stdout.
    pub fn new(format: Format, quiet: bool) -> Self {
        Self::with_stdout(format, quiet, Stdout::new())
    }

    /// Output into `stdout`.
    pub fn with_stdout(format: Format, quiet: bool, stdout: Stdout) -> Self {
        Output {
            format,
            quiet,
            stdout,
        }
    }

    /// The writer behind this output, for commands that stream their result (`embed`).
    pub fn stdout(&self) -> &Stdout {
        &self.stdout
    }

    /// Flushes stdout; `Err` for a write error other than a closed pipe (see [`Stdout`]).
    pub fn finish(&self) -> std::io::Result<()> {
        self.stdout.finish()
    }

    fn json(&self, value: serde_json::Value) {
        say!(
            self,
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON values serialize")
        );
    }

    /// A line for people, left out with `--quiet`.
    pub fn line(&self, text: String) {
        if !self.quiet {
            self.stdout.line(&text);
        }
    }

    /// `adopt`: the proposal (its TOML on stdout for text), problems and where it was written.
    pub fn adopt(
        &self,
        location: &str,
        p: &goldset::ops::adopt::Proposal,
        toml: Option<&str>,
        written: Option<&std::path::Path>,
    ) {
        match self.format {
            Format::Json => self.json(json!({
                "ok": p.problems.is_empty(),
                "command": "adopt",
                "database": location,
                "recognised": p.recognised,
                "mapping": p.layout,
                "problems": p.problems,
                "notes": p.notes,
                "written": written,
            })),
            Format::Text => {
                if let Some(text) = toml {
                    self.stdout.line(text.trim_end());
                }
                for problem in &p.problems {
                    eprintln!("adopt: cannot map: {problem}");
                }
                match (written, p.problems.is_empty()) {
                    (Some(path), _) => self.line(format!(
                        "adopt: mapping of {location} written to {} (review it like code)",
                        path.display()
                    )),
                    (None, true) if !self.quiet => eprintln!(
                        "adopt: mapping of {location} proposed; review it, then `goldset adopt --write` adds it to goldset.toml"
                    ),
                    (None, false) => eprintln!(
                        "adopt: {} problem(s): write the missing parts of [mapping] by hand",
                        p.problems.len()
                    ),
                    _ => {}
                }
            }
        }
    }

    pub fn status(&self, command: &str, location: &str, inventory: &Inventory) {
        match self.format {
            Format::Json => self.json(json!({"ok": true, "command": command, "database": location, "inventory": inventory})),
            Format::Text => self.line(format!("{command}: {location} holds {inventory}")),
        }
    }

    pub fn cache(&self, location: &str, s: &CacheSummary) {
        match self.format {
            Format::Json => self
                .json(json!({"ok": true, "command": "cache", "database": location, "summary": s})),
            Format::Text => {
                for m in &s.models {
                    self.line(format!(
                        "  {} ({} dimensions): {} entries, {}, {} unused",
                        m.model,
                        m.dimension,
                        m.entries,
                        HumanBytes(m.bytes),
                        m.unused
                    ));
                }
                let mut text = "cache: ".to_owned();
                if let Some(r) = s.removed {
                    text += &format!("removed {} entries ({}); ", r.entries, HumanBytes(r.bytes));
                }
                if let Some(c) = s.compacted {
                    text += &format!(
                        "file compacted from {} to {}; ",
                        HumanBytes(c.bytes_before),
                        HumanBytes(c.bytes_after)
                    );
                }
                let models = s.models.len();
                text += &format!(
                    "{location} caches {} embeddings ({}) for {models} model{}, {} of them used by no chunk",
                    s.entries(),
                    HumanBytes(s.bytes()),
                    if models == 1 { "" } else { "s" },
                    s.unused()
                );
                self.line(text);
            }
        }
    }

    /// `cache --prune/--clear --dry-run`: what would be removed.
    pub fn cache_plan(&self, location: &str, s: &CacheSummary, clear: bool) {
        match self.format {
            Format::Json => self.json(json!({
                "ok": true, "command": "cache", "dry_run": true, "database": location,
                "would_remove": if clear { s.entries() } else { s.unused() }, "summary": s,
            })),
            Format::Text => self.line(super::summary::cache_plan_text(location, s, clear)),
        }
    }

    pub fn backup(&self, s: &BackupSummary) {
        match self.format {
            Format::Json => self.json(json!({"ok": true, "command": "backup", "summary": s})),
            Format::Text => {
                let what = if s.unchanged { "unchanged" } else { "written" };
                self.line(format!(
                    "backup: {} {what} ({}; {}) in {:.2}s",
                    s.file.display(),
                    s.counts,
                    HumanBytes(s.bytes),
                    s.elapsed.as_secs_f64()
                ));
            }
        }
    }

    /// `backup --file -`: the backup went to stdout, so the summary goes to stderr.
    pub fn backup_to_stdout(&self, s: &BackupSummary) {
        if self.quiet {
            return;
        }
        let mut text = format!(
            "backup: written to stdout ({}; {}) in {:.2}s",
            s.counts,
            HumanBytes(s.bytes),
            s.elapsed.as_secs_f64()
        );
        if !s.metadata_file.as_os_str().is_empty() {
            text += &format!("; metadata file {}", s.metadata_file.display());
        }
        eprintln!("{text}");
    }

    pub fn restore(&self, s: &RestoreSummary) {
        match self.format {
            Format::Json => self.json(json!({"ok": true, "command": "restore", "summary": s})),
            Format::Text => {
                s.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
                self.line(super::summary::restore_text(s));
            }
        }
    }

    pub fn reembed(&self, s: &ReembedSummary) {
        match self.format {
            Format::Json => self.json(json!({"ok": true, "command": "reembed", "summary": s})),
            Format::Text if s.stale.is_some() => {
                let done = s.embedded + s.from_cache;
                let mut text = format!(
                    "reembed --stale: {done} stale chunk{} embedded again by {} ({} dimensions)",
                    if done == 1 { "" } else { "s" },
                    s.model,
                    s.dimension
                );
                let ids = s.stale.as_deref().unwrap_or_default();
                if !ids.is_empty() {
                    let more = done.saturating_sub(ids.len() as u64);
                    text += &format!(": {}", ids.join(", "));
                    if more > 0 {
                        text += &format!(" and {more} more");
                    }
                }
                if s.from_cache > 0 {
                    text += &format!(" ({} from the embedding cache)", s.from_cache);
                }
                text += &format!(
                    "; {} other chunks left alone; in {:.2}s",
                    s.up_to_date,
                    s.elapsed.as_secs_f64()
                );
                self.line(text);
            }
            Format::Text => {
                let done = s.embedded + s.from_cache;
                let mut text = format!(
                    "reembed: {done} of {} chunks now embedded by {} ({} dimensions)",
                    s.chunks, s.model, s.dimension
                );
                if s.from_cache > 0 {
                    text += &format!(", {} of them from the embedding cache", s.from_cache);
                }
                if s.up_to_date > 0 {
                    text += &format!("; {} already were", s.up_to_date);
                }
                let previous: Vec<String> = s
                    .before
                    .iter()
                    .filter(|m| m.model != s.model || m.dimension != s.dimension)
                    .map(|m| {
                        format!(
                            "{} chunks of {} ({} dimensions)",
                            m.chunks, m.model, m.dimension
                        )
                    })
                    .collect();
                if !previous.is_empty() {
                    text += &format!("; replaced {}", previous.join(", "));
                }
                text += &format!(
                    "; {} commit{} in {:.2}s",
                    s.commits,
                    if s.commits == 1 { "" } else { "s" },
                    s.elapsed.as_secs_f64()
                );
                self.line(text);
            }
        }
    }

    pub fn verification(&self, v: &Verification) {
        let (failed, warned) = v.report.tally();
        match self.format {
            Format::Json => self.json(json!({
                "ok": failed == 0,
                "command": "verify",
                "file": v.file,
                "counts": v.counts,
                "failed_checks": failed,
                "warning_checks": warned,
                "checks": v.report.results().collect::<Vec<_>>(),
                "elapsed": v.elapsed.as_secs_f64(),
            })),
            Format::Text => {
                if !self.quiet || failed > 0 {
                    say!(self, "verify {}", v.file.display());
                    self.report(&v.report);
                }
                let verdict = if failed > 0 { "FAILED" } else { "OK" };
                let text = format!(
                    "verify: {verdict} ({failed} checks failed, {warned} with warnings) — {} in {:.2}s",
                    v.counts,
                    v.elapsed.as_secs_f64()
                );
                if failed > 0 {
                    say!(self, "{text}");
                } else {
                    self.line(text);
                }
            }
        }
    }

    pub fn diff(&self, d: &Diff) {
        if self.format == Format::Json {
            self.json(
                json!({"ok": true, "command": "diff", "equal": d.summary.is_equal(), "diff": d}),
            );
            return;
        }
        if d.summary.is_equal() {
            self.line(format!(
                "diff: {} and {} hold the same records ({})",
                d.old, d.new, d.new_counts
            ));
            return;
        }
        // Differences are the result: printed even with --quiet.
        say!(self, "diff {} → {}: {}", d.old, d.new, d.summary);
        for c in &d.changes {
            match c {
                Change::Added { id, url, chunks } => {
                    say!(self, "  + analysis {id} ({url}, {chunks} chunks)")
                }
                Change::Removed { id, url, chunks } => {
                    say!(self, "  - analysis {id} ({url}, {chunks} chunks)")
                }
                Change::Changed {
                    id,
                    url,
                    fields,
                    chunks,
                    artifact,
                } => {
                    say!(self, "  ~ analysis {id} ({url})");
                    for f in fields {
                        say!(self, "      {}: {:?} → {:?}", f.field, f.old, f.new);
                    }
                    for child in chunks
                        .iter()
                        .map(|c| ("chunk", c))
                        .chain(artifact.iter().map(|a| ("artifact", a)))
                    {
                        let (kind, c) = child;
                        say!(self, "      {} {kind} {}", c.change, c.id);
                        for f in &c.fields {
                            say!(self, "          {}: {:?} → {:?}", f.field, f.old, f.new);
                        }
                    }
                }
            }
        }
        if d.more_changes > 0 {
            say!(
                self,
                "  … and {} more changed analyses (--max-changes)",
                d.more_changes
            );
        }
    }

    pub fn log(&self, file: &std::path::Path, entries: &[LogEntry]) {
        if self.format == Format::Json {
            self.json(json!({"ok": true, "command": "log", "file": file, "entries": entries}));
            return;
        }
        for e in entries {
            let change = if e.changes.is_equal() {
                "no record changed".to_owned()
            } else {
                e.changes.to_string()
            };
            say!(
                self,
                "{} {} {} — {} — {}",
                e.short,
                e.date,
                e.counts,
                change,
                e.subject
            );
        }
    }

    pub fn dump(&self, s: &DumpSummary) {
        match self.format {
            Format::Json => self.json(json!({"ok": true, "command": "dump", "summary": s})),
            Format::Text => self.line(format!(
                "dump: {} written ({}; {} snapshot, {}; SHA-256 {}…) in {:.2}s",
                s.file.display(),
                s.manifest.snapshot.inventory,
                s.manifest.snapshot.kind,
                HumanBytes(s.manifest.bytes),
                &s.manifest.sha256[..12],
                s.elapsed.as_secs_f64()
            )),
        }
    }

    pub fn load(&self, s: &LoadSummary) {
        match self.format {
            Format::Json => self.json(json!({"ok": true, "command": "load", "summary": s})),
            Format::Text => {
                if let Some(note) = &s.model_note {
                    eprintln!("note: {note}");
                }
                let models: Vec<String> = s
                    .manifest
                    .snapshot
                    .embedding_models
                    .iter()
                    .map(|m| format!(" of {} ({} dimensions)", m.model, m.dimension))
                    .collect();
                self.line(format!(
                    "load: {} loaded ({}; embeddings{} kept) in {:.2}s",
                    s.file.display(),
                    s.manifest.snapshot.inventory,
                    models.join(","),
                    s.elapsed.as_secs_f64()
                ));
            }
        }
    }

    /// `load --dry-run`: what loading the snapshot would replace (`held`: the database's
    /// location and what it holds; `None` when it does not exist yet).
    pub fn load_plan(
        &self,
        file: &std::path::Path,
        manifest: &Manifest,
        held: Option<&(String, Inventory)>,
    ) {
        match self.format {
            Format::Json => self.json(json!({
                "ok": true, "command": "load", "dry_run": true, "file": file,
                "manifest": manifest,
                "database": held.map(|(location, _)| location),
                "holds": held.map(|(_, inventory)| inventory),
            })),
            Format::Text => self.line(super::summary::load_plan_text(file, manifest, held)),
        }
    }

    pub fn snapshot_report(&self, file: &std::path::Path, report: &Report) {
        let (failed, warned) = report.tally();
        match self.format {
            Format::Json => self.json(json!({
                "ok": failed == 0,
                "command": "verify",
                "snapshot": file,
                "checks": report.results().collect::<Vec<_>>(),
            })),
            Format::Text => {
                if !self.quiet || failed > 0 {
                    say!(self, "verify snapshot {}", file.display());
                    self.report(report);
                }
                let verdict = if failed > 0 { "FAILED" } else { "OK" };
                let text =
                    format!("verify: {verdict} ({failed} checks failed, {warned} with warnings)");
                if failed > 0 {
                    say!(self, "{text}");
                } else {
                    self.line(text);
                }
            }
        }
    }

    fn report(&self, report: &Report) {
        for l in report_lines(report, false) {
            self.stdout.line(&l);
        }
    }

    /// Shows why the command failed: on stderr, or as JSON on stdout with `--format json` (and
    /// on stderr too when stdout failed).
    pub fn error(&self, e: &OpError) {
        if self.format == Format::Json {
            let mut value =
                json!({"ok": false, "error": e.to_string(), "exit_code": e.exit_code()});
            match e {
                OpError::Invalid { report, .. } | OpError::Unbackupable { report, .. } => {
                    value["checks"] = json!(report.results().collect::<Vec<_>>());
                }
                OpError::Conflicts { examples, .. } => value["conflicts"] = json!(examples),
                _ => {}
            }
            self.json(value);
            if self.stdout.is_open() {
                return;
            }
            // Stdout took no JSON: the error still reaches someone, on stderr.
        }
        match e {
            OpError::Invalid { report, .. } | OpError::Unbackupable { report, .. } => {
                print_report_to_stderr(report)
            }
            OpError::Conflicts { examples, count } => {
                for c in examples {
                    if c.id == c.owner {
                        eprintln!("  {} {} already exists", c.kind, c.id);
                    } else {
                        eprintln!(
                            "  {} {} already exists (in analysis {})",
                            c.kind, c.id, c.owner
                        );
                    }
                }
                if *count > examples.len() as u64 {
                    eprintln!("  … and {} more", *count - examples.len() as u64);
                }
                eprintln!("  (use --on-conflict skip or update, or --replace)");
            }
            _ => {}
        }
        eprintln!("error: {e}");
    }
}

fn report_lines(report: &Report, failures_only: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for r in report.results() {
        if failures_only && r.verdict != Verdict::Fail {
            continue;
        }
        let tag = match r.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warning => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "skip",
        };
        let detail = match r.verdict {
            Verdict::Ok | Verdict::Skipped => r.note.clone().unwrap_or_default(),
            _ => format!(
                "{} problem{}",
                r.problems,
                if r.problems == 1 { "" } else { "s" }
            ),
        };
        lines.push(format!("  {tag}  {:<19} {detail}", r.check.name()));
        if matches!(r.verdict, Verdict::Fail | Verdict::Warning) {
            for e in &r.examples {
                lines.push(format!("          {e}"));
            }
            if r.problems > r.examples.len() as u64 {
                lines.push(format!(
                    "          … and {} more",
                    r.problems - r.examples.len() as u64
                ));
            }
        }
    }
    lines
}

fn print_report_to_stderr(report: &Report) {
    for l in report_lines(report, true) {
        eprintln!("{l}");
    }
}
