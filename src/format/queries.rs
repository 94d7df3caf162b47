//! The golden queries file (FORMAT.md, "Golden queries"), format "1.0": queries with their
//! relevant chunks and graded relevance, read whole (it is small) and validated with the
//! backups' `file:line:col` errors. Which chunks exist is the database's to say: see
//! [`Target`] and `ops::eval`.

use super::reader::Position;
use crate::report::{Check, Report};
use serde::de::{MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use uuid::Uuid;

/// The only queries-file version this build reads.
pub const QUERIES_VERSION: &str = "1.0";

/// Default path of the queries file.
pub const DEFAULT_QUERIES_PATH: &str = "data/golden_queries.json";

/// The most of a queries file that is read (it is loaded whole).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// The highest relevance grade.
pub const MAX_GRADE: u32 = 3;

/// What a key of `relevant` names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A chunk id (a bare UUID).
    Chunk(Uuid),
    /// Any chunk of an analysis (`analysis:<uuid>`).
    Analysis(Uuid),
    /// Any chunk of the analysis of this URL (`url:<url>`, as the backup holds it).
    Url(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Chunk(id) => write!(f, "chunk {id}"),
            Target::Analysis(id) => write!(f, "analysis {id}"),
            Target::Url(url) => write!(f, "url {url:?}"),
        }
    }
}

impl Target {
    /// Reads a key of `relevant`.
    pub fn parse(key: &str) -> Result<Target, String> {
        let uuid = |s: &str| {
            Uuid::try_parse(s).map_err(|_| {
                format!("{key:?} is not a chunk id (a UUID), analysis:<uuid> or url:<url>")
            })
        };
        if let Some(rest) = key.strip_prefix("analysis:") {
            return uuid(rest).map(Target::Analysis);
        }
        if let Some(rest) = key.strip_prefix("url:") {
            if rest.is_empty() {
                return Err("url: with no URL".into());
            }
            return Ok(Target::Url(rest.to_owned()));
        }
        uuid(key).map(Target::Chunk)
    }
}

/// One relevance judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// What is relevant.
    pub target: Target,
    /// How relevant: 1 to [`MAX_GRADE`].
    pub grade: u32,
    /// Where its key is.
    pub position: Position,
}

/// One golden query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldenQuery {
    /// Its id (unique in the file).
    pub id: String,
    /// The text that is embedded and searched for.
    pub text: String,
    /// Its relevant chunks (never empty).
    pub relevant: Vec<Judgement>,
    /// Its tags (difficulty, topic, …), unique.
    pub tags: Vec<String>,
    /// Where the query starts.
    pub position: Position,
}

/// Why a queries file was not read.
#[derive(Debug, thiserror::Error)]
pub enum QueriesError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not a valid queries file; the report names every problem.
    #[error("invalid queries file")]
    Invalid(Box<Report>),
}

/// Line starts of a text, to turn byte offsets into [`Position`]s.
pub struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    /// Indexes `text`.
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Lines { starts }
    }

    /// The position of byte `offset`.
    pub fn at(&self, offset: usize) -> Position {
        let line = self.starts.partition_point(|&s| s <= offset);
        Position {
            line: line as u64,
            column: (offset - self.starts[line - 1] + 1) as u64,
            offset: offset as u64,
        }
    }
}

/// `relevant` as written: its keys in file order (duplicates kept, to be reported).
struct Pairs<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Pairs<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Pairs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of chunk ids and grades")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Pairs<'a>, M::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, &'de RawValue>()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile<'a> {
    #[serde(borrow)]
    version: Option<&'a RawValue>,
    #[serde(borrow)]
    queries: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery<'a> {
    id: String,
    text: String,
    #[serde(borrow)]
    relevant: Pairs<'a>,
    #[serde(default)]
    tags: Vec<String>,
}

/// Reads and checks a queries file: JSON shape, version, ids, texts, grades, duplicates.
/// Whether the chunks exist is checked against the database by `ops::eval`.
pub fn read_queries(path: &Path) -> Result<Vec<GoldenQuery>, QueriesError> {
    use std::io::Read;
    // Looked at before opening: opening a FIFO waits for a writer.
    if !std::fs::metadata(path)?.is_file() {
        return Err(
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file").into(),
        );
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)?;
    parse_queries(&text, &path.display().to_string())
}

/// [`read_queries`] on text; `name` is the file name errors start with.
pub fn parse_queries(text: &str, name: &str) -> Result<Vec<GoldenQuery>, QueriesError> {
    let lines = Lines::new(text);
    let mut report = Report::default();
    let offset_of = |raw: &RawValue| raw.get().as_ptr() as usize - text.as_ptr() as usize;
    let place = |offset: usize| format!("{name}:{}", lines.at(offset));
    let file: RawFile = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            report.fail(
                Check::Json,
                format!("{name}:{}:{}: {e}", e.line(), e.column()),
            );
            return Err(QueriesError::Invalid(Box::new(report)));
        }
    };
    match file.version {
        None => report.fail(Check::Version, format!("{name}: missing field `version` (expected {QUERIES_VERSION:?})")),
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(v) if v == QUERIES_VERSION => report.pass(Check::Version, QUERIES_VERSION),
            Ok(v) => report.fail(
                Check::Version,
                format!("{}: unsupported queries format version {v:?} (this goldset reads {QUERIES_VERSION:?})", place(offset_of(raw))),
            ),
            Err(_) => report.fail(Check::Version, format!("{}: `version` must be a string", place(offset_of(raw)))),
        },
    }
    let mut queries = Vec::new();
    let mut ids: HashMap<String, Position> = HashMap::new();
    report.ran(Check::Json);
    for (n, raw) in file.queries.iter().enumerate() {
        let start = offset_of(raw);
        let position = lines.at(start);
        let raw_query: RawQuery = match serde_json::from_str(raw.get()) {
            Ok(q) => q,
            Err(e) => {
                // The error's place is relative to the query's own text.
                let at = if e.line() <= 1 {
                    Position {
                        column: position.column + e.column() as u64 - 1,
                        ..position
                    }
                } else {
                    Position {
                        line: position.line + e.line() as u64 - 1,
                        column: e.column() as u64,
                        ..position
                    }
                };
                report.fail(Check::Json, format!("{name}:{at}: queries[{n}]: {e}"));
                continue;
            }
        };
        let here = format!("{name}:{position}: query {:?}", raw_query.id);
        let id_ok = !raw_query.id.trim().is_empty()
            && raw_query.id.trim() == raw_query.id
            && !raw_query.id.contains('\0');
        if !id_ok {
            report.fail(
                Check::Ids,
                format!("{here}: an id must be non-empty text without surrounding spaces"),
            );
        }
        if let Some(first) = ids.get(&raw_query.id) {
            report.fail(
                Check::UniqueIds,
                format!("{here}: id repeats (first at {first})"),
            );
        } else {
            ids.insert(raw_query.id.clone(), position);
        }
        if raw_query.text.trim().is_empty() || raw_query.text.contains('\0') {
            report.fail(
                Check::Text,
                format!("{here}: `text` must be non-empty and hold no NUL"),
            );
        }
        if raw_query.relevant.0.is_empty() {
            report.fail(
                Check::Json,
                format!("{here}: `relevant` is empty (a query needs at least one relevant chunk)"),
            );
        }
        let mut relevant: Vec<Judgement> = Vec::new();
        let mut seen: HashMap<Target, Position> = HashMap::new();
        for (key, value) in &raw_query.relevant.0 {
            let value_at = offset_of(value);
            let key_position = lines.at(key_start(text, value_at));
            let at = format!("{name}:{key_position}: query {:?}", raw_query.id);
            let target = match Target::parse(key) {
                Ok(t) => t,
                Err(why) => {
                    report.fail(Check::Ids, format!("{at}: {why}"));
                    continue;
                }
            };
            let grade = match serde_json::from_str::<u32>(value.get()) {
                Ok(g) if (1..=MAX_GRADE).contains(&g) => g,
                _ => {
                    report.fail(
                        Check::Json,
                        format!("{}: query {:?}: {target}: grade {} is not an integer from 1 to {MAX_GRADE}", place(value_at), raw_query.id, value.get()),
                    );
                    continue;
                }
            };
            if let Some(first) = seen.get(&target) {
                report.fail(
                    Check::UniqueIds,
                    format!("{at}: {target} repeats (first at {first})"),
                );
                continue;
            }
            seen.insert(target.clone(), key_position);
            relevant.push(Judgement {
                target,
                grade,
                position: key_position,
            });
        }
        let mut tags = raw_query.tags.clone();
        tags.sort();
        tags.dedup();
        if tags.len() != raw_query.tags.len() || tags.iter().any(|t| t.trim().is_empty()) {
            report.fail(
                Check::Json,
                format!("{here}: `tags` must be non-empty texts, each once"),
            );
        }
        queries.push(GoldenQuery {
            id: raw_query.id,
            text: raw_query.text,
            relevant,
            tags: raw_query.tags,
            position,
        });
    }
    if report.has_errors() {
        return Err(QueriesError::Invalid(Box::new(report)));
    }
    report.pass(Check::Json, format!("{} queries", queries.len()));
    Ok(queries)
}

/// The offset of the key whose value starts at `value`: back over `"key" :` (the key's
/// closing quote, then to its opening quote not escaped by a backslash). Falls back to the
/// value's own offset.
fn key_start(text: &str, value: usize) -> usize {
    let b = text.as_bytes();
    let mut i = value;
    let skip_space = |i: &mut usize| {
        while *i > 0 && b[*i - 1].is_ascii_whitespace() {
            *i -= 1;
        }
    };
    skip_space(&mut i);
    if i == 0 || b[i - 1] != b':' {
        return value;
    }
    i -= 1;
    skip_space(&mut i);
    if i == 0 || b[i - 1] != b'"' {
        return value;
    }
    i -= 1; // at the closing quote
    while i > 0 {
        i -= 1;
        if b[i] == b'"' {
            let backslashes = b[..i].iter().rev().take_while(|&&c| c == b'\\').count();
            if backslashes % 2 == 0 {
                return i;
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    fn errors(text: &str) -> Vec<String> {
        match parse_queries(text, "q.json") {
            Ok(q) => panic!("accepted: {q:?}"),
            Err(QueriesError::Invalid(r)) => r.first_errors(50),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn reads_a_valid_file_with_every_key_form() {
        let text = format!(
            "{{\"version\": \"1.0\", \"queries\": [\n  {{\"id\": \"q-1\", \"text\": \"how?\",\n   \"relevant\": {{\"{A}\": 2, \"analysis:{A}\": 1, \"url:https://x.org/a\": 3}}, \"tags\": [\"easy\"]}}\n]}}"
        );
        let q = parse_queries(&text, "q.json").unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].position.line, 2);
        assert_eq!(
            q[0].relevant[0].target,
            Target::Chunk(Uuid::parse_str(A).unwrap())
        );
        assert_eq!(q[0].relevant[0].position.line, 3);
        assert_eq!(
            q[0].relevant[0].position.column, 17,
            "the key's opening quote"
        );
        assert_eq!(
            q[0].relevant[2].target,
            Target::Url("https://x.org/a".into())
        );
        assert_eq!(q[0].relevant[2].grade, 3);
    }

    #[test]
    fn refuses_bad_files_saying_where() {
        let e = errors(&format!(
            "{{\"version\": \"1.0\", \"queries\": [\n{{\"id\": \"q-1\", \"text\": \"a\", \"relevant\": {{}}}},\n{{\"id\": \"q-1\", \"text\": \" \", \"relevant\": {{\"{A}\": 1, \"{A}\": 4, \"nope\": 1}}}}\n]}}"
        ));
        let all = e.join("\n");
        assert!(
            all.contains("q.json:2:1: query \"q-1\": `relevant` is empty"),
            "{all}"
        );
        assert!(
            all.contains("q.json:3:1: query \"q-1\": id repeats (first at 2:1)"),
            "{all}"
        );
        assert!(
            all.contains("q.json:3:1: query \"q-1\": `text` must be non-empty"),
            "{all}"
        );
        assert!(
            all.contains("grade 4 is not an integer from 1 to 3"),
            "{all}"
        );
        assert!(all.contains("\"nope\" is not a chunk id"), "{all}");
        let e = errors("{\"version\": \"2.0\", \"queries\": []}");
        assert!(
            e[0].contains("q.json:1:13: unsupported queries format version \"2.0\""),
            "{e:?}"
        );
        let e = errors("{\"version\": \"1.0\",\n \"queries\": [{\"id\": \"q\", \"txt\": 1}]}");
        assert!(e[0].starts_with("json: q.json:2:"), "{e:?}");
        assert!(e[0].contains("unknown field `txt`"), "{e:?}");
        let e = errors("{\"version\": \"1.0\", \"queries\": [}");
        assert!(e[0].starts_with("json: q.json:1:"), "{e:?}");
    }

    #[test]
    fn duplicate_relevant_keys_are_refused() {
        let e = errors(&format!(
            "{{\"version\": \"1.0\", \"queries\": [{{\"id\": \"q\", \"text\": \"t\", \"relevant\": {{\"{A}\": 1, \"{}\": 2}}}}]}}",
            A.to_uppercase()
        ));
        assert!(
            e.iter().any(|m| m.contains(&format!("chunk {A} repeats"))),
            "{e:?}"
        );
    }
}
