//! The validation rules of format 1.0 (see `docs/FORMAT.md`, "Rules").
//!
//! A [`Validator`] sees the analyses one by one, turns each valid raw record into a
//! [`model::Analysis`](crate::model::Analysis), records every problem with its place, and runs
//! the whole-file checks (unique ids, counts) in [`Validator::finish`]. Its memory is one id per
//! record and one URL per analysis, never the records.

use super::reader::{Header, Item, Position};
use super::record::{RawAnalysis, RawArtifact, RawChunk};
use crate::model::{Analysis, Artifact, Chunk, Counts};
use crate::report::{Check, Report};
use crate::timestamp::Timestamp;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;
use uuid::Uuid;

pub use super::urls::UrlPolicy;

/// A record inside another, for messages: `PARENT: chunk ID`. Formatted only when a problem
/// is reported.
struct Child<'a> {
    parent: &'a dyn fmt::Display,
    kind: &'static str,
    id: &'a dyn fmt::Display,
}

impl fmt::Display for Child<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.parent, self.kind, self.id)
    }
}

/// Checks analyses one at a time and the file as a whole.
pub struct Validator<'p> {
    source: String,
    policy: &'p UrlPolicy,
    report: Report,
    counts: Counts,
    analysis_ids: HashSet<Uuid>,
    chunk_ids: HashSet<Uuid>,
    artifact_ids: HashSet<Uuid>,
    /// 64-bit hash of each URL seen → the analysis that had it (a warning check: memory beats
    /// the one-in-2^64 chance of a false duplicate).
    urls: HashMap<u64, Uuid>,
    /// Whether to remember ids and URLs for the whole-file checks.
    whole_file: bool,
    /// Whether a metadata file that disagrees with the backup is a warning, not an error.
    metadata_file_advisory: bool,
}

impl<'p> Validator<'p> {
    /// A validator for the file named `source` (used in messages).
    pub fn new(source: impl Into<String>, policy: &'p UrlPolicy) -> Self {
        Validator {
            source: source.into(),
            policy,
            report: Report::default(),
            counts: Counts::default(),
            analysis_ids: HashSet::new(),
            chunk_ids: HashSet::new(),
            artifact_ids: HashSet::new(),
            urls: HashMap::new(),
            whole_file: true,
            metadata_file_advisory: false,
        }
    }

    /// A metadata file whose counts disagree with the backup becomes a warning (naming the
    /// counts that differ) instead of an error: the backup's own header counts, checked against
    /// its content, are the authority, and a kill between the two renames of a `backup` leaves
    /// a stale metadata file beside a good backup. Restore uses this; `verify` does not.
    pub fn metadata_file_advisory(mut self) -> Self {
        self.metadata_file_advisory = true;
        self
    }

    /// Records a problem found outside the per-record rules (a record that does not parse).
    pub fn fail(&mut self, check: Check, message: String) {
        self.report.fail(check, message);
    }

    /// A validator for reading, not checking, a file: records are validated one by one, but
    /// ids and URLs are not remembered (no duplicate checks), so memory stays constant.
    pub fn per_record(mut self) -> Self {
        self.whole_file = false;
        self
    }

    /// Sizes the id sets for the counts a file announces (capped: the counts are not yet
    /// checked), so that they do not grow by doubling.
    pub fn expect(&mut self, counts: &Counts) {
        const CAP: u64 = 1 << 20;
        if !self.whole_file {
            return;
        }
        let reserve = |n: u64| n.min(CAP) as usize;
        self.analysis_ids.reserve(reserve(counts.total_analyses));
        self.chunk_ids.reserve(reserve(counts.total_chunks));
        self.artifact_ids.reserve(reserve(counts.total_artifacts));
        self.urls.reserve(reserve(counts.total_analyses));
    }

    /// Takes one item from the reader: sizes for metadata, checks an analysis.
    pub fn item(&mut self, item: Item) -> Option<Analysis> {
        match item {
            Item::Metadata(counts) => {
                self.expect(&counts);
                None
            }
            Item::Analysis(raw, at) => self.check(raw, at),
        }
    }

    /// The first error found so far, with its check's name.
    pub fn first_error(&self) -> Option<String> {
        self.report.first_errors(1).into_iter().next()
    }

    /// Whether an error has been found so far.
    pub fn has_errors(&self) -> bool {
        self.report.has_errors()
    }

    /// Checks one analysis found at `at`. Returns it validated, or `None` if it has errors
    /// (which are in the report).
    pub fn check(&mut self, raw: RawAnalysis, at: Position) -> Option<Analysis> {
        let place = format!("{}:{}: analysis {}", self.source, at, raw.id);
        let errors_before = self.error_count();
        self.counts.total_analyses += 1;
        self.counts.total_chunks += raw.chunks.len() as u64;
        self.counts.total_artifacts += u64::from(raw.artifact.is_some());

        let id = self.uuid(&raw.id, &place, "id");
        if let Some(id) = id {
            if self.whole_file && !self.analysis_ids.insert(id) {
                self.report
                    .fail(Check::UniqueIds, format!("{place}: analysis id repeats"));
            }
        }
        let created_at = match parse_in_range(&raw.created_at) {
            Ok(t) => Some(t),
            Err(e) => {
                self.report
                    .fail(Check::Timestamps, format!("{place}: created_at: {e}"));
                None
            }
        };
        match self.policy.check(&raw.url) {
            Some(why) => self
                .report
                .fail(Check::Urls, format!("{place}: url {:?} {why}", raw.url)),
            None => {
                let key = url_key(&raw.url);
                if let (Some(_), Some(first)) = (id, self.urls.get(&key)) {
                    let msg = format!("{place}: url {} also used by analysis {first}", raw.url);
                    self.report.warn(Check::DuplicateUrls, msg);
                } else if let Some(id) = id.filter(|_| self.whole_file) {
                    self.urls.insert(key, id);
                }
            }
        }
        self.text(&place, "url", &raw.url, true);
        self.text(&place, "status", &raw.status, true);
        self.text(&place, "content_type", &raw.content_type, false);
        for (i, f) in raw.findings.iter().enumerate() {
            let fplace = Child {
                parent: &place,
                kind: "finding",
                id: &i,
            };
            if !(0.0..=1.0).contains(&f.confidence) {
                let msg = format!("{fplace}: confidence {} is outside 0..1", f.confidence);
                self.report.fail(Check::Confidence, msg);
            }
            self.text(&fplace, "agent", &f.agent, false);
            self.text(&fplace, "category", &f.category, false);
            self.text(&fplace, "content", &f.content, false);
            if let Some(m) = &f.metadata {
                self.json_text(&fplace, "metadata", map_has_nul(m));
            }
        }
        let mut findings = raw.findings;
        for f in &mut findings {
            if f.confidence == 0.0 {
                f.confidence = 0.0;
            }
            f.metadata
                .iter_mut()
                .flat_map(|m| m.values_mut())
                .for_each(canonical_numbers);
        }
        let chunks = self.chunks(&place, raw.chunks);
        let artifact = raw.artifact.and_then(|a| self.artifact(&place, a));

        if self.error_count() > errors_before {
            return None;
        }
        Some(Analysis {
            id: id?,
            url: raw.url,
            content_type: raw.content_type,
            status: raw.status,
            created_at: created_at?,
            findings,
            chunks: chunks?,
            artifact,
        })
    }

    fn chunks(&mut self, place: &dyn fmt::Display, raw: Vec<RawChunk>) -> Option<Vec<Chunk>> {
        let n = raw.len() as i64;
        let mut index_seen = vec![false; raw.len()];
        let mut out = Vec::with_capacity(raw.len());
        let mut all_ids_valid = true;
        for c in raw {
            let cplace = Child {
                parent: &place,
                kind: "chunk",
                id: &c.id,
            };
            let id = self.uuid(&c.id, place, "chunk id");
            if let Some(id) = id {
                if self.whole_file && !self.chunk_ids.insert(id) {
                    self.report
                        .fail(Check::UniqueIds, format!("{cplace}: chunk id repeats"));
                }
            }
            if c.chunk_index < 0 || c.chunk_index >= n {
                let msg = format!(
                    "{cplace}: chunk_index {} is outside 0..{}",
                    c.chunk_index,
                    n - 1
                );
                self.report.fail(Check::ChunkIndex, msg);
            } else if std::mem::replace(&mut index_seen[c.chunk_index as usize], true) {
                let msg = format!("{cplace}: chunk_index {} repeats", c.chunk_index);
                self.report.fail(Check::ChunkIndex, msg);
            }
            self.text(&cplace, "content", &c.content, false);
            self.text(&cplace, "content_type", &c.content_type, false);
            for (name, v) in [
                ("section_title", &c.section_title),
                ("section_path", &c.section_path),
            ] {
                if let Some(v) = v {
                    self.text(&cplace, name, v, false);
                }
            }
            match id {
                Some(id) => out.push(Chunk {
                    id,
                    content: c.content,
                    section_title: c.section_title,
                    section_path: c.section_path,
                    content_type: c.content_type,
                    chunk_index: c.chunk_index,
                }),
                None => all_ids_valid = false,
            }
        }
        if !all_ids_valid {
            return None;
        }
        out.sort_by_key(|c| c.chunk_index);
        Some(out)
    }

    fn artifact(&mut self, place: &dyn fmt::Display, a: RawArtifact) -> Option<Artifact> {
        let aplace = Child {
            parent: &place,
            kind: "artifact",
            id: &a.id,
        };
        let id = self.uuid(&a.id, place, "artifact id");
        if let Some(id) = id {
            if self.whole_file && !self.artifact_ids.insert(id) {
                self.report
                    .fail(Check::UniqueIds, format!("{aplace}: artifact id repeats"));
            }
        }
        if let Some(summary) = &a.summary {
            self.text(&aplace, "summary", summary, false);
        }
        self.json_text(&aplace, "key_findings", a.key_findings.iter().any(has_nul));
        self.json_text(&aplace, "metadata", map_has_nul(&a.metadata));
        let (mut key_findings, mut metadata) = (a.key_findings, a.metadata);
        key_findings.iter_mut().for_each(canonical_numbers);
        metadata.values_mut().for_each(canonical_numbers);
        Some(Artifact {
            id: id?,
            summary: a.summary,
            key_findings,
            metadata,
        })
    }

    fn uuid(&mut self, text: &str, place: &dyn fmt::Display, what: &str) -> Option<Uuid> {
        match Uuid::try_parse(text) {
            Ok(id) => Some(id),
            Err(e) => {
                self.report.fail(
                    Check::Ids,
                    format!("{place}: {what} {text:?} is not a UUID ({e})"),
                );
                None
            }
        }
    }

    fn text(&mut self, place: &dyn fmt::Display, field: &str, value: &str, required: bool) {
        if value.contains('\0') {
            self.report.fail(
                Check::Text,
                format!("{place}: {field} contains a NUL character"),
            );
        }
        if required && value.trim().is_empty() {
            self.report
                .fail(Check::Text, format!("{place}: {field} is empty"));
        }
    }

    fn json_text(&mut self, place: &dyn fmt::Display, field: &str, has_nul: bool) {
        if has_nul {
            self.report.fail(
                Check::Text,
                format!("{place}: {field} contains a NUL character"),
            );
        }
    }

    fn error_count(&self) -> u64 {
        self.report
            .results()
            .filter(|r| r.verdict == crate::report::Verdict::Fail)
            .map(|r| r.problems)
            .sum()
    }

    /// The counts of what has been seen so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Runs the whole-file checks against the header (and the metadata file, when there is one)
    /// and returns the report with the counts of the content.
    pub fn finish(mut self, header: &Header, metadata_file: MetadataFile) -> (Report, Counts) {
        let src = &self.source;
        let r = &mut self.report;
        r.pass(Check::Json, "well-formed");
        match &header.version {
            Some(v) => r.pass(Check::Version, format!("format {v}")),
            None => r.fail(
                Check::Version,
                format!("{src}: the top-level version is missing"),
            ),
        }
        match &header.created_at {
            None => r.fail(
                Check::Header,
                format!("{src}: the top-level created_at is missing"),
            ),
            Some(t) => match parse_in_range(t) {
                Ok(_) => r.pass(Check::Header, format!("created {t}")),
                Err(e) => r.fail(Check::Header, format!("{src}: created_at: {e}")),
            },
        }
        let content = self.counts;
        let n = content.total_analyses + content.total_chunks + content.total_artifacts;
        r.pass(Check::Ids, format!("{n} ids"));
        r.pass(Check::UniqueIds, format!("{n} ids, none repeated"));
        r.pass(Check::Timestamps, "all valid");
        r.pass(Check::ChunkIndex, "every analysis numbered 0..n-1");
        r.pass(Check::Confidence, "all within 0..1");
        r.pass(Check::Text, "no NUL characters");
        r.pass(Check::Urls, "absolute http(s), no placeholders");
        r.pass(Check::DuplicateUrls, "every URL once");
        match header.metadata {
            None => r.fail(
                Check::MetadataCounts,
                format!("{src}: the top-level metadata is missing"),
            ),
            Some(m) if m != content => r.fail(
                Check::MetadataCounts,
                format!("{src}: metadata says {m}, the file holds {content}"),
            ),
            Some(_) => r.pass(Check::MetadataCounts, format!("{content}")),
        }
        match metadata_file {
            MetadataFile::Absent(why) => r.skip(Check::MetadataFile, why),
            MetadataFile::Unreadable(e) => r.fail(Check::MetadataFile, e),
            MetadataFile::Read { path, counts } => {
                if counts != content {
                    let message = format!(
                        "{path}: says {counts}, the backup holds {content} ({})",
                        count_differences(&counts, &content)
                    );
                    if self.metadata_file_advisory {
                        r.warn(
                            Check::MetadataFile,
                            format!("{message}; stale, ignored: the backup's own counts agree with its content"),
                        );
                    } else {
                        r.fail(Check::MetadataFile, message);
                    }
                } else {
                    r.pass(Check::MetadataFile, format!("{path} agrees"));
                }
            }
        }
        (self.report, content)
    }

    /// Records a structural error (bad JSON, wrong types) that stopped the reading.
    pub fn into_structural_failure(mut self, check: Check, message: String) -> Report {
        self.report.fail(check, message);
        self.report
    }
}

/// A timestamp that parses and lies within the years a backup can write (0001–9999 in UTC,
/// after its offset is applied): `0000-12-31T23:30:00-01:00` is a valid text, but no backup
/// could write it back.
pub fn parse_in_range(text: &str) -> Result<Timestamp, String> {
    let t = Timestamp::parse(text).map_err(|e| e.to_string())?;
    if !(Timestamp::MIN..=Timestamp::MAX).contains(&t) {
        return Err(format!(
            "{text:?} is outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999Z once in UTC"
        ));
    }
    Ok(t)
}

/// `total_chunks 2 ≠ 86, total_artifacts 3 ≠ 20`: which counts of two sets differ.
fn count_differences(said: &Counts, holds: &Counts) -> String {
    [
        ("total_analyses", said.total_analyses, holds.total_analyses),
        ("total_chunks", said.total_chunks, holds.total_chunks),
        (
            "total_artifacts",
            said.total_artifacts,
            holds.total_artifacts,
        ),
    ]
    .iter()
    .filter(|(_, a, b)| a != b)
    .map(|(name, a, b)| format!("{name} {a} ≠ {b}"))
    .collect::<Vec<_>>()
    .join(", ")
}

fn url_key(url: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    url.hash(&mut h);
    h.finish()
}

/// Gives a number the one form that every store keeps: `-0.0` becomes `0.0`, and a whole float
/// of 1e16 or more that fits a 64-bit integer becomes that integer (PostgreSQL's `jsonb` turns
/// `1e19` into `10000000000000000000`; equal numbers, but another type once read back).
pub fn canonical_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f == 0.0 {
                *v = Value::from(0.0);
            } else if f.fract() == 0.0 && f.abs() >= 1e16 {
                if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
                    *v = Value::from(f as i64);
                } else if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    *v = Value::from(f as u64);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(canonical_numbers),
        Value::Object(o) => o.values_mut().for_each(canonical_numbers),
        _ => {}
    }
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => map_has_nul(o),
        _ => false,
    }
}

fn map_has_nul(m: &Map<String, Value>) -> bool {
    m.iter().any(|(k, v)| k.contains('\0') || has_nul(v))
}

/// What is known of the metadata file that goes with a backup.
#[derive(Debug, Clone)]
pub enum MetadataFile {
    /// There is none to check; the text says why.
    Absent(String),
    /// It exists but could not be read or parsed.
    Unreadable(String),
    /// Its counts.
    Read {
        /// Its path, for messages.
        path: String,
        /// What it says.
        counts: Counts,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_take_one_form() {
        let mut v = serde_json::json!([-0.0, 1e19, -1e17, 1e16, 2.5, 1e300, 3.0, 5, 1e20]);
        canonical_numbers(&mut v);
        assert_eq!(
            v.to_string(),
            "[0.0,10000000000000000000,-100000000000000000,10000000000000000,2.5,1e+300,3.0,5,1e+20]"
        );
    }
}
