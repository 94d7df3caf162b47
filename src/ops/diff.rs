//! `diff`: what changed between two versions of a dataset — backup files or the database —
//! streamed side by side in backup order, so memory holds one analysis per side.

use super::OpError;
use crate::format::reader::{read_backup, Item, ReadError};
use crate::format::validate::{UrlPolicy, Validator};
use crate::model::{Analysis, Artifact, Chunk, Counts, StatusFilter};
use crate::store::{Store, StoreError};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use uuid::Uuid;

/// One side of a diff.
pub enum Side<'s> {
    /// A backup file.
    File(PathBuf),
    /// A backup read from any byte stream (`git show`), named for messages.
    Stream(String, Box<dyn Read + Send + 's>),
    /// The database, restricted to the statuses a backup covers.
    Database(&'s mut dyn Store, StatusFilter),
}

impl Side<'_> {
    /// A name for messages.
    pub fn name(&self) -> String {
        match self {
            Side::File(p) => p.display().to_string(),
            Side::Stream(name, _) => name.clone(),
            Side::Database(store, _) => format!("db:{}", store.location()),
        }
    }
}

/// Added, removed and changed counts of one kind of record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Present only on the new side.
    pub added: u64,
    /// Present only on the old side.
    pub removed: u64,
    /// Present on both, different.
    pub changed: u64,
}

impl Tally {
    fn any(&self) -> bool {
        self.added + self.removed + self.changed > 0
    }
}

/// Counts of a diff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Analyses.
    pub analyses: Tally,
    /// Chunks (those of added and removed analyses included).
    pub chunks: Tally,
    /// Artifacts (those of added and removed analyses included).
    pub artifacts: Tally,
}

impl Summary {
    /// Whether the two sides hold the same records.
    pub fn is_equal(&self) -> bool {
        !(self.analyses.any() || self.chunks.any() || self.artifacts.any())
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |t: &Tally| format!("+{} −{} ~{}", t.added, t.removed, t.changed);
        write!(
            f,
            "analyses {}, chunks {}, artifacts {}",
            t(&self.analyses),
            t(&self.chunks),
            t(&self.artifacts)
        )
    }
}

/// What happened to one analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum Change {
    /// Only on the new side.
    Added {
        /// Its id.
        id: Uuid,
        /// Its URL.
        url: String,
        /// Its chunks.
        chunks: usize,
    },
    /// Only on the old side.
    Removed {
        /// Its id.
        id: Uuid,
        /// Its URL.
        url: String,
        /// Its chunks.
        chunks: usize,
    },
    /// On both sides, different.
    Changed {
        /// Its id.
        id: Uuid,
        /// Its URL (new side).
        url: String,
        /// Its own fields that differ, each with a short excerpt.
        fields: Vec<FieldChange>,
        /// Chunk changes.
        chunks: Vec<ChildChange>,
        /// Artifact change, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        artifact: Option<ChildChange>,
    },
}

/// A changed field with excerpts of both values around the first difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Field name.
    pub field: String,
    /// Excerpt of the old value.
    pub old: String,
    /// Excerpt of the new value.
    pub new: String,
}

/// A chunk or artifact added, removed or changed inside a changed analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildChange {
    /// Its id.
    pub id: Uuid,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// For `changed`: the fields that differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// The outcome of a diff.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// Old side.
    pub old: String,
    /// New side.
    pub new: String,
    /// Counts (exact).
    pub summary: Summary,
    /// What the old side holds.
    pub old_counts: Counts,
    /// What the new side holds.
    pub new_counts: Counts,
    /// The first changes, in backup order (at most `max_changes`).
    pub changes: Vec<Change>,
    /// Changes not listed.
    pub more_changes: u64,
}

/// Characters of context in an excerpt.
const EXCERPT: usize = 40;

/// Compares `old` with `new`. Both must be in backup order (as goldset writes them); keeps the
/// first `max_changes` changes in detail and counts all.
pub fn diff<'s>(old: Side<'s>, new: Side<'s>, max_changes: usize) -> Result<Diff, OpError> {
    let (old_name, new_name) = (old.name(), new.name());
    std::thread::scope(|scope| {
        let old_rx = spawn_side(scope, old);
        let new_rx = spawn_side(scope, new);
        let mut d = Diff {
            old: old_name.clone(),
            new: new_name.clone(),
            summary: Summary::default(),
            old_counts: Counts::default(),
            new_counts: Counts::default(),
            changes: Vec::new(),
            more_changes: 0,
        };
        let (mut old_counts, mut new_counts) = (Counts::default(), Counts::default());
        let mut next_old = next(&old_rx, &old_name, None, &mut old_counts)?;
        let mut next_new = next(&new_rx, &new_name, None, &mut new_counts)?;
        loop {
            let change = match (next_old.take(), next_new.take()) {
                (None, None) => break,
                (Some(o), None) => {
                    next_old = next(&old_rx, &old_name, Some(&o), &mut old_counts)?;
                    removed(&mut d.summary, o)
                }
                (None, Some(n)) => {
                    next_new = next(&new_rx, &new_name, Some(&n), &mut new_counts)?;
                    added(&mut d.summary, n)
                }
                (Some(o), Some(n)) => {
                    let (ko, kn) = ((o.created_at, o.id), (n.created_at, n.id));
                    if ko < kn {
                        next_old = next(&old_rx, &old_name, Some(&o), &mut old_counts)?;
                        next_new = Some(n);
                        removed(&mut d.summary, o)
                    } else if kn < ko {
                        next_new = next(&new_rx, &new_name, Some(&n), &mut new_counts)?;
                        next_old = Some(o);
                        added(&mut d.summary, n)
                    } else {
                        next_old = next(&old_rx, &old_name, Some(&o), &mut old_counts)?;
                        next_new = next(&new_rx, &new_name, Some(&n), &mut new_counts)?;
                        compare(&mut d.summary, &o, &n)
                    }
                }
            };
            if let Some(c) = change {
                if d.changes.len() < max_changes {
                    d.changes.push(c);
                } else {
                    d.more_changes += 1;
                }
            }
        }
        d.old_counts = old_counts;
        d.new_counts = new_counts;
        Ok(d)
    })
}

type Stream = Receiver<Result<Analysis, OpError>>;

/// Reads a side on its own thread, sending its analyses in order.
fn spawn_side<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    side: Side<'env>,
) -> Stream {
    let (tx, rx) = sync_channel(16);
    scope.spawn(move || {
        let result = match side {
            Side::File(path) => match File::open(&path) {
                Ok(f) => read_side(&path.display().to_string(), f, &tx),
                Err(e) => Err(OpError::Io { path, source: e }),
            },
            Side::Stream(name, reader) => read_side(&name, reader, &tx),
            Side::Database(store, filter) => read_database(store, &filter, &tx),
        };
        if let Err(e) = result {
            let _ = tx.send(Err(e));
        }
    });
    rx
}

fn read_side(
    name: &str,
    input: impl Read,
    tx: &SyncSender<Result<Analysis, OpError>>,
) -> Result<(), OpError> {
    let policy = UrlPolicy {
        deny_hosts: Vec::new(),
        deny_words: Vec::new(),
    };
    // Diffing reads records; proving a file whole is verify's job.
    let mut validator = Validator::new(name, &policy).per_record();
    let read = read_backup(BufReader::with_capacity(1 << 16, input), |item| {
        let is_analysis = matches!(item, Item::Analysis(..));
        match validator.item(item) {
            Some(a) => tx.send(Ok(a)).map_err(|_| Stopped),
            None if is_analysis => Err(Invalid),
            None => Ok(()),
        }
    });
    match read {
        Ok(_) => Ok(()),
        Err(ReadError::Aborted(Stopped)) => Ok(()),
        Err(ReadError::Aborted(Invalid)) => {
            let first = validator
                .first_error()
                .unwrap_or_else(|| "invalid record".into());
            Err(OpError::NotABackup {
                name: name.into(),
                reason: first,
            })
        }
        Err(ReadError::Io(e)) => Err(OpError::Io {
            path: name.into(),
            source: e,
        }),
        Err(e) => Err(OpError::NotABackup {
            name: name.into(),
            reason: e.to_string(),
        }),
    }
}

/// Why a side's reader stopped.
#[derive(Debug)]
enum SideStop {
    Stopped,
    Invalid,
}
use SideStop::{Invalid, Stopped};

impl std::fmt::Display for SideStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stopped => "stopped",
            Invalid => "invalid record",
        })
    }
}

fn read_database(
    store: &mut dyn Store,
    filter: &StatusFilter,
    tx: &SyncSender<Result<Analysis, OpError>>,
) -> Result<(), OpError> {
    let mut snapshot = store.snapshot()?;
    match snapshot.for_each_analysis(filter, &mut |a| {
        tx.send(Ok(a)).map_err(|_| StoreError::Stopped)
    }) {
        Ok(()) | Err(StoreError::Stopped) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The next analysis of a side, checking that the side is in backup order.
fn next(
    rx: &Stream,
    name: &str,
    previous: Option<&Analysis>,
    counts: &mut Counts,
) -> Result<Option<Analysis>, OpError> {
    match rx.recv() {
        Err(_) => Ok(None),
        Ok(Err(e)) => Err(e),
        Ok(Ok(a)) => {
            counts.add(&a);
            if let Some(p) = previous {
                if (a.created_at, a.id) <= (p.created_at, p.id) {
                    return Err(OpError::Refused(format!(
                        "{name} is not in backup order at analysis {} (diff needs files as goldset writes them: \
                         restore the file and back it up once to put it in order)",
                        a.id
                    )));
                }
            }
            Ok(Some(a))
        }
    }
}

fn added(s: &mut Summary, a: Analysis) -> Option<Change> {
    s.analyses.added += 1;
    s.chunks.added += a.chunks.len() as u64;
    s.artifacts.added += u64::from(a.artifact.is_some());
    Some(Change::Added {
        id: a.id,
        url: a.url,
        chunks: a.chunks.len(),
    })
}

fn removed(s: &mut Summary, a: Analysis) -> Option<Change> {
    s.analyses.removed += 1;
    s.chunks.removed += a.chunks.len() as u64;
    s.artifacts.removed += u64::from(a.artifact.is_some());
    Some(Change::Removed {
        id: a.id,
        url: a.url,
        chunks: a.chunks.len(),
    })
}

/// Excerpts of `old` and `new` around their first difference.
pub fn excerpt(old: &str, new: &str) -> (String, String) {
    let common = old
        .chars()
        .zip(new.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let cut = |s: &str| -> String {
        let start = common.saturating_sub(EXCERPT / 2);
        let text: String = s.chars().skip(start).take(EXCERPT).collect();
        let more = s.chars().count() > start + EXCERPT;
        format!(
            "{}{text}{}",
            if start > 0 { "…" } else { "" },
            if more { "…" } else { "" }
        )
    };
    (cut(old), cut(new))
}

fn field(fields: &mut Vec<FieldChange>, name: &str, old: &str, new: &str) {
    if old != new {
        let (o, n) = excerpt(old, new);
        fields.push(FieldChange {
            field: name.into(),
            old: o,
            new: n,
        });
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn chunk_fields(o: &Chunk, n: &Chunk) -> Vec<FieldChange> {
    let mut f = Vec::new();
    field(&mut f, "content", &o.content, &n.content);
    field(
        &mut f,
        "section_title",
        &json(&o.section_title),
        &json(&n.section_title),
    );
    field(
        &mut f,
        "section_path",
        &json(&o.section_path),
        &json(&n.section_path),
    );
    field(&mut f, "content_type", &o.content_type, &n.content_type);
    field(
        &mut f,
        "chunk_index",
        &o.chunk_index.to_string(),
        &n.chunk_index.to_string(),
    );
    f
}

fn artifact_fields(o: &Artifact, n: &Artifact) -> Vec<FieldChange> {
    let mut f = Vec::new();
    field(&mut f, "summary", &json(&o.summary), &json(&n.summary));
    field(
        &mut f,
        "key_findings",
        &json(&o.key_findings),
        &json(&n.key_findings),
    );
    field(&mut f, "metadata", &json(&o.metadata), &json(&n.metadata));
    f
}

fn compare(s: &mut Summary, o: &Analysis, n: &Analysis) -> Option<Change> {
    let mut fields = Vec::new();
    field(&mut fields, "url", &o.url, &n.url);
    field(
        &mut fields,
        "content_type",
        &o.content_type,
        &n.content_type,
    );
    field(&mut fields, "status", &o.status, &n.status);
    field(
        &mut fields,
        "findings",
        &json(&o.findings),
        &json(&n.findings),
    );

    let chunks = compare_chunks(s, o, n);
    let artifact = compare_artifacts(s, o, n);
    if fields.is_empty() && chunks.is_empty() && artifact.is_none() {
        return None;
    }
    // An analysis whose chunks or artifact changed counts as changed too.
    s.analyses.changed += 1;
    Some(Change::Changed {
        id: n.id,
        url: n.url.clone(),
        fields,
        chunks,
        artifact,
    })
}

/// The chunks removed, added and changed between `o` and `n`, counted in `s`.
fn compare_chunks(s: &mut Summary, o: &Analysis, n: &Analysis) -> Vec<ChildChange> {
    let mut chunks = Vec::new();
    let old_chunks: HashMap<Uuid, &Chunk> = o.chunks.iter().map(|c| (c.id, c)).collect();
    let new_ids: std::collections::HashSet<Uuid> = n.chunks.iter().map(|c| c.id).collect();
    for c in &o.chunks {
        if !new_ids.contains(&c.id) {
            s.chunks.removed += 1;
            chunks.push(ChildChange {
                id: c.id,
                change: "removed",
                fields: Vec::new(),
            });
        }
    }
    for c in &n.chunks {
        match old_chunks.get(&c.id) {
            None => {
                s.chunks.added += 1;
                chunks.push(ChildChange {
                    id: c.id,
                    change: "added",
                    fields: Vec::new(),
                });
            }
            Some(old) => {
                let f = chunk_fields(old, c);
                if !f.is_empty() {
                    s.chunks.changed += 1;
                    chunks.push(ChildChange {
                        id: c.id,
                        change: "changed",
                        fields: f,
                    });
                }
            }
        }
    }
    chunks
}

/// How the artifact changed between `o` and `n`, if it did, counted in `s`.
fn compare_artifacts(s: &mut Summary, o: &Analysis, n: &Analysis) -> Option<ChildChange> {
    match (&o.artifact, &n.artifact) {
        (None, None) => None,
        (Some(a), None) => {
            s.artifacts.removed += 1;
            Some(ChildChange {
                id: a.id,
                change: "removed",
                fields: Vec::new(),
            })
        }
        (None, Some(a)) => {
            s.artifacts.added += 1;
            Some(ChildChange {
                id: a.id,
                change: "added",
                fields: Vec::new(),
            })
        }
        (Some(a), Some(b)) if a.id != b.id => {
            s.artifacts.removed += 1;
            s.artifacts.added += 1;
            Some(ChildChange {
                id: b.id,
                change: "replaced",
                fields: Vec::new(),
            })
        }
        (Some(a), Some(b)) => {
            let f = artifact_fields(a, b);
            if f.is_empty() {
                None
            } else {
                s.artifacts.changed += 1;
                Some(ChildChange {
                    id: b.id,
                    change: "changed",
                    fields: f,
                })
            }
        }
    }
}
