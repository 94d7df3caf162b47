//! A streaming reader: hands over one analysis at a time, so memory stays flat however large the
//! file is, and knows the line and column where each analysis starts.

use super::record::RawAnalysis;
use super::FORMAT_VERSION;
use crate::model::Counts;
use std::fmt;
use std::io::{self, BufRead};

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

/// What the reader hands over while it reads.
// An item is moved once, into the callback; boxing the large variant would only add an
// allocation per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Item {
    /// The `metadata` object, as soon as it is read (before the analyses in canonical files):
    /// a hint for sizing, not yet checked against the content.
    Metadata(Counts),
    /// One analysis and the position where it starts.
    Analysis(RawAnalysis, Position),
}

/// Reads a backup from `input`, calling `on_item` with the metadata and with each analysis in
/// file order. Returns the other top-level fields once the whole file is read.
///
/// The top level is scanned by hand; each analysis is cut out as one byte slice and parsed with
/// `serde_json` (so memory holds one record), and errors inside it are mapped back to positions
/// in the file and name the field at fault (`analyses[3].chunks[1].chunk_index: …`).
pub fn read_backup<R, E, F>(input: R, mut on_item: F) -> Result<Header, ReadError<E>>
where
    R: BufRead,
    F: FnMut(Item) -> Result<(), E>,
{
    let mut s = Scanner {
        input,
        offset: 0,
        line: 1,
        line_start: 0,
    };
    let mut header = Header::default();
    let mut value = Vec::new();
    let mut seen_analyses = false;
    s.skip_whitespace()?;
    s.expect(b'{', "a JSON object (the backup's top level)")?;
    s.skip_whitespace()?;
    if s.peek()? == Some(b'}') {
        return Err(s.syntax("missing field `analyses`".into()));
    }
    loop {
        s.skip_whitespace()?;
        let key_at = s.position();
        if s.peek()? != Some(b'"') {
            return Err(s.syntax("expected a key (a string)".into()));
        }
        s.capture(&mut value, "a key")?;
        let key: String = parse_at(&value, key_at, "key")?;
        s.skip_whitespace()?;
        s.expect(b':', "':' after the key")?;
        s.skip_whitespace()?;
        let at = s.position();
        match key.as_str() {
            "analyses" => {
                if std::mem::replace(&mut seen_analyses, true) {
                    return Err(s.syntax_at(key_at, "duplicate field `analyses`".into()));
                }
                read_analyses(&mut s, &mut value, &mut on_item)?;
            }
            "version" => {
                s.capture(&mut value, "version")?;
                let v: String = parse_at(&value, at, "version")?;
                if v != FORMAT_VERSION {
                    return Err(ReadError::UnsupportedVersion {
                        position: at,
                        version: v,
                    });
                }
                if header.version.replace(v).is_some() {
                    return Err(s.syntax_at(key_at, "duplicate field `version`".into()));
                }
            }
            "created_at" => {
                s.capture(&mut value, "created_at")?;
                let v: String = parse_at(&value, at, "created_at")?;
                if header.created_at.replace(v).is_some() {
                    return Err(s.syntax_at(key_at, "duplicate field `created_at`".into()));
                }
            }
            "metadata" => {
                s.capture(&mut value, "metadata")?;
                let v: Counts = parse_at(&value, at, "metadata")?;
                on_item(Item::Metadata(v)).map_err(ReadError::Aborted)?;
                if header.metadata.replace(v).is_some() {
                    return Err(s.syntax_at(key_at, "duplicate field `metadata`".into()));
                }
            }
            other => {
                let known = "version, created_at, metadata, analyses";
                return Err(s.syntax_at(
                    key_at,
                    format!("unknown field `{other}`, expected one of {known}"),
                ));
            }
        }
        s.skip_whitespace()?;
        match s.next()? {
            Some(b',') => continue,
            Some(b'}') => break,
            Some(_) => {
                return Err(s.syntax_back("expected ',' or '}' after a top-level value".into()))
            }
            None => {
                return Err(
                    s.syntax("unexpected end of file: the top-level object is not closed".into())
                )
            }
        }
    }
    s.skip_whitespace()?;
    if s.peek()?.is_some() {
        return Err(s.syntax("trailing characters after the top-level object".into()));
    }
    if !seen_analyses {
        return Err(s.syntax("missing field `analyses`".into()));
    }
    Ok(header)
}

fn read_analyses<R, E, F>(
    s: &mut Scanner<R>,
    value: &mut Vec<u8>,
    on_item: &mut F,
) -> Result<(), ReadError<E>>
where
    R: BufRead,
    F: FnMut(Item) -> Result<(), E>,
{
    s.expect(b'[', "'[' (analyses is an array)")?;
    s.skip_whitespace()?;
    if s.peek()? == Some(b']') {
        s.next()?;
        return Ok(());
    }
    for index in 0.. {
        s.skip_whitespace()?;
        let at = s.position();
        s.capture(value, &format!("analyses[{index}]"))?;
        let analysis = parse_analysis(value, index, at)
            .map_err(|(position, message)| ReadError::Syntax { position, message })?;
        on_item(Item::Analysis(analysis, at)).map_err(ReadError::Aborted)?;
        s.skip_whitespace()?;
        match s.next()? {
            Some(b',') => continue,
            Some(b']') => return Ok(()),
            Some(_) => {
                return Err(s.syntax_back(format!("expected ',' or ']' after analyses[{index}]")))
            }
            None => {
                return Err(
                    s.syntax("unexpected end of file: the analyses array is not closed".into())
                )
            }
        }
    }
    unreachable!("the loop returns when the array ends")
}

/// Parses `analyses[index]`, the bytes `value` found at `at`; an error comes with its place in
/// the file and names the field at fault.
pub fn parse_analysis(
    value: &[u8],
    index: u64,
    at: Position,
) -> Result<RawAnalysis, (Position, String)> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(value)).map_err(
        |e| {
            let path = e.path().to_string();
            let field = if path == "." {
                String::new()
            } else {
                format!(".{path}")
            };
            let inner = e.into_inner();
            (
                within(at, &inner),
                format!("analyses[{index}]{field}: {}", strip_position(&inner)),
            )
        },
    )
}

/// Parses a captured value that starts at `at`.
fn parse_at<T: serde::de::DeserializeOwned, E>(
    value: &[u8],
    at: Position,
    what: &str,
) -> Result<T, ReadError<E>> {
    serde_json::from_slice(value).map_err(|e| ReadError::Syntax {
        position: within(at, &e),
        message: format!("{what}: {}", strip_position(&e)),
    })
}

/// The file position of an error that serde_json located within a value starting at `start`.
fn within(start: Position, e: &serde_json::Error) -> Position {
    let (line, column) = (e.line() as u64, e.column() as u64);
    if line <= 1 {
        Position {
            line: start.line,
            column: start.column + column.saturating_sub(1),
            offset: start.offset,
        }
    } else {
        Position {
            line: start.line + line - 1,
            column,
            offset: start.offset,
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

/// Reads bytes and knows where it is.
struct Scanner<R> {
    input: R,
    offset: u64,
    line: u64,
    /// Offset of the first byte of the current line.
    line_start: u64,
}

impl<R: BufRead> Scanner<R> {
    fn position(&self) -> Position {
        Position {
            line: self.line,
            column: self.offset - self.line_start + 1,
            offset: self.offset,
        }
    }

    fn syntax<E>(&self, message: String) -> ReadError<E> {
        self.syntax_at(self.position(), message)
    }

    /// An error about the byte just read.
    fn syntax_back<E>(&self, message: String) -> ReadError<E> {
        let mut p = self.position();
        p.column = p.column.saturating_sub(1).max(1);
        self.syntax_at(p, message)
    }

    fn syntax_at<E>(&self, position: Position, message: String) -> ReadError<E> {
        ReadError::Syntax { position, message }
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        Ok(self.input.fill_buf()?.first().copied())
    }

    /// Consumes `n` bytes of the current buffer, keeping the position.
    fn advance(&mut self, n: usize) {
        let buf = &self.input.fill_buf().expect("buffer already filled")[..n];
        if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
            self.line += buf.iter().filter(|&&b| b == b'\n').count() as u64;
            self.line_start = self.offset + last as u64 + 1;
        }
        self.offset += n as u64;
        self.input.consume(n);
    }

    fn next(&mut self) -> io::Result<Option<u8>> {
        let b = self.peek()?;
        if b.is_some() {
            self.advance(1);
        }
        Ok(b)
    }

    fn skip_whitespace(&mut self) -> io::Result<()> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            let n = buf
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
                .count();
            let all = n == buf.len();
            self.advance(n);
            if !all {
                return Ok(());
            }
        }
    }

    fn expect<E>(&mut self, byte: u8, what: &str) -> Result<(), ReadError<E>> {
        match self.peek()? {
            Some(b) if b == byte => {
                self.advance(1);
                Ok(())
            }
            Some(_) => Err(self.syntax(format!("expected {what}"))),
            None => Err(self.syntax(format!("unexpected end of file, expected {what}"))),
        }
    }

    /// Copies one JSON value into `out` without interpreting it (strings and nesting are
    /// tracked, so that it ends in the right place); `serde_json` checks it afterwards.
    fn capture<E>(&mut self, out: &mut Vec<u8>, what: &str) -> Result<(), ReadError<E>> {
        out.clear();
        let start = self.position();
        let first = match self.peek()? {
            Some(b) => b,
            None => return Err(self.syntax(format!("unexpected end of file, expected {what}"))),
        };
        if !matches!(first, b'{' | b'[' | b'"') {
            // A scalar: up to the next delimiter.
            loop {
                let buf = self.input.fill_buf()?;
                let n = buf
                    .iter()
                    .take_while(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                    .count();
                let all = n == buf.len() && n > 0;
                out.extend_from_slice(&buf[..n]);
                self.advance(n);
                if !all {
                    return Ok(());
                }
            }
        }
        let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Err(self.syntax(format!(
                    "unexpected end of file inside {what} (which starts at {start}): the file is truncated"
                )));
            }
            let mut end = None;
            for (i, &b) in buf.iter().enumerate() {
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                }
                if depth == 0 && !in_string {
                    end = Some(i + 1);
                    break;
                }
            }
            let n = end.unwrap_or(buf.len());
            out.extend_from_slice(&buf[..n]);
            self.advance(n);
            if end.is_some() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Read = (Header, Vec<(String, Position)>);

    fn read(text: &str) -> Result<Read, ReadError<String>> {
        let mut seen = Vec::new();
        let header = read_backup(text.as_bytes(), |item| {
            if let Item::Analysis(a, at) = item {
                seen.push((a.id, at));
            }
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
