//! A streaming reader: hands over one analysis at a time, so memory stays flat however large the
//! file is, and knows the line and column where each analysis starts.

use super::record::RawAnalysis;
use super::FORMAT_VERSION;
use crate::model::Counts;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;
use std::io::{self, BufRead, Read};
use std::rc::Rc;

/// A place in the file: 1-based line and column (in bytes), and the byte offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: u64,
    /// 1-based column, counted in bytes.
    pub column: u64,
    /// Bytes before this position.
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The top-level fields other than `analyses`, as found (each may be missing).
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// `version` (always [`FORMAT_VERSION`] when present: others are refused while reading).
    pub version: Option<String>,
    /// `created_at`, as written.
    pub created_at: Option<String>,
    /// `metadata`.
    pub metadata: Option<Counts>,
}

/// Why a file could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not JSON, or JSON of the wrong shape (missing or unknown keys, wrong types, …).
    #[error("{position}: {message}")]
    Syntax {
        /// Where the parser stopped.
        position: Position,
        /// What it found wrong.
        message: String,
    },
    /// A `version` this build does not read.
    #[error("{position}: unsupported format version {version:?} (this goldset reads {FORMAT_VERSION:?})")]
    UnsupportedVersion {
        /// Where the version is.
        position: Position,
        /// The version found.
        version: String,
    },
    /// The callback asked to stop.
    #[error("{0}")]
    Aborted(E),
}

/// Reads a backup from `input`, calling `on_analysis` for each analysis in file order with the
/// position where it starts. Returns the other top-level fields once the whole file is read.
///
/// `input` should be buffered: it is read a byte at a time.
pub fn read_backup<R, E, F>(input: R, on_analysis: F) -> Result<Header, ReadError<E>>
where
    R: BufRead,
    F: FnMut(RawAnalysis, Position) -> Result<(), E>,
{
    let position = Rc::new(Cell::new(Position {
        line: 1,
        column: 1,
        offset: 0,
    }));
    let tracked = Tracked {
        inner: input,
        position: Rc::clone(&position),
    };
    let mut state = State {
        on_analysis,
        position: Rc::clone(&position),
        header: Header::default(),
        aborted: None,
        bad_version: None,
    };
    let mut de = serde_json::Deserializer::from_reader(tracked);
    let result = (&mut de)
        .deserialize_map(TopVisitor { state: &mut state })
        .and_then(|()| de.end());
    match result {
        Ok(()) => Ok(state.header),
        Err(e) => {
            if let Some(err) = state.aborted.take() {
                return Err(ReadError::Aborted(err));
            }
            if let Some((version, position)) = state.bad_version.take() {
                return Err(ReadError::UnsupportedVersion { position, version });
            }
            if e.is_io() {
                return Err(ReadError::Io(io::Error::from(e)));
            }
            Err(ReadError::Syntax {
                position: Position {
                    line: e.line() as u64,
                    column: e.column() as u64,
                    offset: position.get().offset,
                },
                message: strip_position(&e),
            })
        }
    }
}

/// serde_json's message without its trailing " at line L column C".
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Counts lines and columns of the bytes handed to the parser.
struct Tracked<R> {
    inner: R,
    position: Rc<Cell<Position>>,
}

impl<R: BufRead> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.inner.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        let mut p = self.position.get();
        for &b in &available[..n] {
            if b == b'\n' {
                p.line += 1;
                p.column = 1;
            } else {
                p.column += 1;
            }
        }
        p.offset += n as u64;
        self.position.set(p);
        self.inner.consume(n);
        Ok(n)
    }
}

struct State<F, E> {
    on_analysis: F,
    position: Rc<Cell<Position>>,
    header: Header,
    aborted: Option<E>,
    bad_version: Option<(String, Position)>,
}

struct TopVisitor<'s, F, E> {
    state: &'s mut State<F, E>,
}

const TOP_FIELDS: &[&str] = &["version", "created_at", "metadata", "analyses"];

impl<'de, F, E> Visitor<'de> for TopVisitor<'_, F, E>
where
    F: FnMut(RawAnalysis, Position) -> Result<(), E>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with version, created_at, metadata and analyses")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen_analyses = false;
        while let Some(key) = map.next_key::<String>()? {
            let header = &mut self.state.header;
            match key.as_str() {
                "version" => {
                    let v: String = map.next_value()?;
                    if header.version.is_some() {
                        return Err(de::Error::duplicate_field("version"));
                    }
                    if v != FORMAT_VERSION {
                        let at = self.state.position.get();
                        self.state.bad_version = Some((v, at));
                        return Err(de::Error::custom("unsupported format version"));
                    }
                    header.version = Some(v);
                }
                "created_at" => {
                    let v: String = map.next_value()?;
                    if header.created_at.replace(v).is_some() {
                        return Err(de::Error::duplicate_field("created_at"));
                    }
                }
                "metadata" => {
                    let v: Counts = map.next_value()?;
                    if header.metadata.replace(v).is_some() {
                        return Err(de::Error::duplicate_field("metadata"));
                    }
                }
                "analyses" => {
                    if seen_analyses {
                        return Err(de::Error::duplicate_field("analyses"));
                    }
                    seen_analyses = true;
                    map.next_value_seed(AnalysesSeed { state: self.state })?;
                }
                other => return Err(de::Error::unknown_field(other, TOP_FIELDS)),
            }
        }
        if !seen_analyses {
            return Err(de::Error::missing_field("analyses"));
        }
        Ok(())
    }
}

struct AnalysesSeed<'s, F, E> {
    state: &'s mut State<F, E>,
}

impl<'de, F, E> DeserializeSeed<'de> for AnalysesSeed<'_, F, E>
where
    F: FnMut(RawAnalysis, Position) -> Result<(), E>,
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F, E> Visitor<'de> for AnalysesSeed<'_, F, E>
where
    F: FnMut(RawAnalysis, Position) -> Result<(), E>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of analyses")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for index in 0.. {
            let seed = OneAnalysis {
                position: &self.state.position,
                index,
            };
            let Some((analysis, start)) = seq.next_element_seed(seed)? else {
                return Ok(());
            };
            if let Err(e) = (self.state.on_analysis)(analysis, start) {
                self.state.aborted = Some(e);
                return Err(de::Error::custom("stopped"));
            }
        }
        unreachable!("the loop runs until the array ends")
    }
}

/// Deserializes one analysis and notes where it began.
struct OneAnalysis<'p> {
    position: &'p Rc<Cell<Position>>,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for OneAnalysis<'_> {
    type Value = (RawAnalysis, Position);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        // The parser has already read (peeked) the opening brace: step back one column.
        let mut start = self.position.get();
        start.column = start.column.saturating_sub(1).max(1);
        start.offset = start.offset.saturating_sub(1);
        // Name the field at fault: `analyses[3].chunks[1].chunk_index: invalid type …`.
        let analysis = serde_path_to_error::deserialize(d).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            let message = message
                .rfind(" at line ")
                .map_or(&message[..], |i| &message[..i]);
            let field = if path == "." {
                String::new()
            } else {
                format!(".{path}")
            };
            de::Error::custom(format_args!("analyses[{}]{field}: {message}", self.index))
        })?;
        Ok((analysis, start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<(Header, Vec<(String, Position)>), ReadError<()>> {
        let mut seen = Vec::new();
        let header = read_backup(text.as_bytes(), |a, at| {
            seen.push((a.id, at));
            Ok(())
        })?;
        Ok((header, seen))
    }

    const ONE: &str = r#"{"version": "1.0", "created_at": "2024-01-01T00:00:00Z",
 "metadata": {"total_analyses": 1, "total_chunks": 0, "total_artifacts": 0},
 "analyses": [
   {"id": "a", "url": "u", "content_type": "c", "status": "s", "created_at": "t",
    "findings": [], "chunks": [], "artifact": null}
 ]}"#;

    #[test]
    fn streams_analyses_with_positions() {
        let (header, seen) = read(ONE).unwrap();
        assert_eq!(header.version.as_deref(), Some("1.0"));
        assert_eq!(header.metadata.unwrap().total_analyses, 1);
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].1.line, seen[0].1.column), (4, 4));
    }

    #[test]
    fn refuses_other_versions_and_unknown_fields() {
        let err = read(&ONE.replace("\"1.0\"", "\"2.0\"")).unwrap_err();
        assert!(
            matches!(err, ReadError::UnsupportedVersion { ref version, .. } if version == "2.0")
        );
        let err = read(&ONE.replace("\"url\"", "\"extra\": 1, \"url\"")).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
        let err = read(&ONE.replace("\"metadata\"", "\"notes\": 1, \"metadata\"")).unwrap_err();
        assert!(err.to_string().contains("unknown field `notes`"), "{err}");
    }

    #[test]
    fn refuses_trailing_garbage_and_truncation() {
        assert!(matches!(
            read(&format!("{ONE} x")),
            Err(ReadError::Syntax { .. })
        ));
        assert!(matches!(
            read(&ONE[..ONE.len() - 5]),
            Err(ReadError::Syntax { .. })
        ));
        assert!(matches!(read(""), Err(ReadError::Syntax { .. })));
        assert!(matches!(read("[]"), Err(ReadError::Syntax { .. })));
    }
}
