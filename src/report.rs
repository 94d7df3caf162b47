//! Check reports: what `verify` prints and what a refused `restore` explains.
//!
//! A report has one entry per check that ran, each with a verdict, the number of problems and the
//! first few of them (memory stays bounded however many there are).

use serde::Serialize;
use std::collections::BTreeMap;

/// How many problems each check keeps to show.
pub const EXAMPLES_PER_CHECK: usize = 5;

/// The checks, in the order a report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The file is JSON of the right shape (keys, types).
    Json,
    /// `version` is present and supported.
    Version,
    /// `created_at` of the file is a valid timestamp.
    Header,
    /// Every id is a valid UUID.
    Ids,
    /// No id appears twice in the file.
    UniqueIds,
    /// Every timestamp is valid.
    Timestamps,
    /// Every analysis's chunks are numbered 0..n-1.
    ChunkIndex,
    /// Every confidence lies within 0..=1.
    Confidence,
    /// No text holds a NUL character; required text is not empty.
    Text,
    /// URLs are absolute http(s) and not placeholders.
    Urls,
    /// Two analyses share a URL (a warning).
    DuplicateUrls,
    /// `metadata` counts equal the content.
    MetadataCounts,
    /// The metadata file equals `metadata`.
    MetadataFile,
    /// The database holds every record of the file, with the same content.
    DbContent,
    /// The database holds no covered analysis that the file lacks.
    DbExtra,
    /// No chunk or artifact without its analysis.
    DbOrphans,
    /// Every chunk has an embedding, all of one model and dimension (the demanded one, if any).
    DbEmbeddings,
    /// Every embedding was made from its chunk's current text.
    DbStaleEmbeddings,
    /// A snapshot's manifest is present and readable.
    SnapshotManifest,
    /// A snapshot's size and SHA-256 equal its manifest's.
    SnapshotChecksum,
    /// The snapshot reads with its database's tools (integrity check, archive listing).
    SnapshotReadable,
    /// The snapshot holds what its manifest says.
    SnapshotCounts,
}

impl Check {
    /// The check's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Check::Json => "json",
            Check::Version => "version",
            Check::Header => "header",
            Check::Ids => "ids",
            Check::UniqueIds => "unique_ids",
            Check::Timestamps => "timestamps",
            Check::ChunkIndex => "chunk_index",
            Check::Confidence => "confidence",
            Check::Text => "text",
            Check::Urls => "urls",
            Check::DuplicateUrls => "duplicate_urls",
            Check::MetadataCounts => "metadata_counts",
            Check::MetadataFile => "metadata_file",
            Check::DbContent => "db_content",
            Check::DbExtra => "db_extra",
            Check::DbOrphans => "db_orphans",
            Check::DbEmbeddings => "db_embeddings",
            Check::DbStaleEmbeddings => "db_stale_embeddings",
            Check::SnapshotManifest => "snapshot_manifest",
            Check::SnapshotChecksum => "snapshot_checksum",
            Check::SnapshotReadable => "snapshot_readable",
            Check::SnapshotCounts => "snapshot_counts",
        }
    }
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing wrong.
    Ok,
    /// Something worth a look, not an error.
    Warning,
    /// An error.
    Fail,
    /// Not run (for example: no metadata file).
    Skipped,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The check.
    pub check: Check,
    /// Its verdict.
    pub verdict: Verdict,
    /// Number of problems found.
    pub problems: u64,
    /// The first problems, each naming its place (`file:line:col`, record ids).
    pub examples: Vec<String>,
    /// A short note for a check that passed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The outcome of a set of checks.
#[derive(Debug, Clone, Default)]
pub struct Report {
    results: BTreeMap<Check, CheckResult>,
}

impl Report {
    /// Marks `check` as run; it passes unless a problem is added.
    pub fn ran(&mut self, check: Check) -> &mut CheckResult {
        self.results.entry(check).or_insert(CheckResult {
            check,
            verdict: Verdict::Ok,
            problems: 0,
            examples: Vec::new(),
            note: None,
        })
    }

    /// Marks `check` as run with a note saying what it covered.
    pub fn pass(&mut self, check: Check, note: impl Into<String>) {
        let r = self.ran(check);
        if r.note.is_none() {
            r.note = Some(note.into());
        }
    }

    /// Marks `check` as skipped, saying why.
    pub fn skip(&mut self, check: Check, why: impl Into<String>) {
        let r = self.ran(check);
        r.verdict = Verdict::Skipped;
        r.note = Some(why.into());
    }

    /// Records an error found by `check`.
    pub fn fail(&mut self, check: Check, message: impl Into<String>) {
        self.problem(check, Verdict::Fail, message.into());
    }

    /// Records a warning found by `check`.
    pub fn warn(&mut self, check: Check, message: impl Into<String>) {
        self.problem(check, Verdict::Warning, message.into());
    }

    /// Records `total` errors found by `check`, of which `examples` are the first.
    pub fn fail_counted(&mut self, check: Check, total: u64, examples: Vec<String>) {
        let shown = examples.len() as u64;
        for e in examples {
            self.fail(check, e);
        }
        if total > shown {
            self.ran(check).problems += total - shown;
        }
    }

    fn problem(&mut self, check: Check, verdict: Verdict, message: String) {
        let r = self.ran(check);
        if r.verdict == Verdict::Skipped || verdict > r.verdict {
            r.verdict = verdict;
        }
        r.problems += 1;
        if r.examples.len() < EXAMPLES_PER_CHECK {
            r.examples.push(message);
        }
    }

    /// Whether any check failed.
    pub fn has_errors(&self) -> bool {
        self.results.values().any(|r| r.verdict == Verdict::Fail)
    }

    /// Number of checks that failed and that warned.
    pub fn tally(&self) -> (usize, usize) {
        let n = |v| self.results.values().filter(|r| r.verdict == v).count();
        (n(Verdict::Fail), n(Verdict::Warning))
    }

    /// The results, in check order.
    pub fn results(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.values()
    }

    /// The result of one check, if it ran.
    pub fn get(&self, check: Check) -> Option<&CheckResult> {
        self.results.get(&check)
    }

    /// The first error messages, for a one-paragraph explanation.
    pub fn first_errors(&self, limit: usize) -> Vec<String> {
        self.results
            .values()
            .filter(|r| r.verdict == Verdict::Fail)
            .flat_map(|r| {
                r.examples
                    .iter()
                    .map(move |e| format!("{}: {e}", r.check.name()))
            })
            .take(limit)
            .collect()
    }
}
