//! A streaming writer of the canonical format: fixed key order, 2-space indentation, UTF-8 as
//! is, sorted keys in free-form objects, a final newline. Same records in, same bytes out.

use super::reader::Position;
use super::FORMAT_VERSION;
use crate::model::{Analysis, Counts};
use crate::timestamp::Timestamp;
use serde::Serialize;
use std::io::{self, BufRead, Write};

/// Writes a backup one analysis at a time.
///
/// The counts go first in the file, so they are given up front; [`BackupWriter::finish`] refuses
/// to close a file whose content disagrees with them.
pub struct BackupWriter<W: Write> {
    out: W,
    declared: Counts,
    written: Counts,
    buffer: Vec<u8>,
    /// The 1-based line being written (to place what is written for messages).
    line: u64,
    /// Bytes written so far.
    bytes: u64,
    /// Where the last analysis written starts.
    last_at: Position,
}

impl<W: Write> BackupWriter<W> {
    /// Starts a backup made at `created_at` that will hold `counts` records.
    pub fn new(mut out: W, created_at: Timestamp, counts: Counts) -> io::Result<Self> {
        let mut head = format!(
            "{{\n  \"version\": \"{FORMAT_VERSION}\",\n  \"created_at\": \"{created_at}\",\n  \"metadata\": "
        )
        .into_bytes();
        head.extend_from_slice(&indent(&pretty(&counts)?, b"  "));
        head.extend_from_slice(b",\n  \"analyses\": [");
        out.write_all(&head)?;
        Ok(BackupWriter {
            out,
            declared: counts,
            written: Counts::default(),
            buffer: Vec::new(),
            line: 1 + newlines(&head),
            bytes: head.len() as u64,
            last_at: Position::default(),
        })
    }

    /// The canonical JSON of the last analysis written (unindented), and where it starts in
    /// the file: what a reader of the file will parse, for checking it as it is written.
    pub fn last_record(&self) -> (&[u8], Position) {
        (&self.buffer, self.last_at)
    }

    /// Appends one analysis.
    pub fn write_analysis(&mut self, analysis: &Analysis) -> io::Result<()> {
        let separator: &[u8] = if self.written.total_analyses == 0 {
            b"\n    "
        } else {
            b",\n    "
        };
        self.out.write_all(separator)?;
        self.line += 1;
        self.bytes += separator.len() as u64;
        self.last_at = Position {
            line: self.line,
            column: 5,
            offset: self.bytes,
        };
        self.buffer.clear();
        write_canonical(&mut self.buffer, analysis)?;
        let lines = newlines(&self.buffer);
        self.line += lines;
        self.bytes += self.buffer.len() as u64 + 4 * lines;
        let mut lines = self.buffer.split(|&b| b == b'\n');
        if let Some(first) = lines.next() {
            self.out.write_all(first)?;
        }
        for line in lines {
            self.out.write_all(b"\n    ")?;
            self.out.write_all(line)?;
        }
        self.written.add(analysis);
        Ok(())
    }

    /// Closes the document and returns the output, after checking the counts.
    pub fn finish(mut self) -> io::Result<W> {
        if self.written != self.declared {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the backup declared {} but received {}",
                    self.declared, self.written
                ),
            ));
        }
        if self.written.total_analyses == 0 {
            self.out.write_all(b"]\n}\n")?;
        } else {
            self.out.write_all(b"\n  ]\n}\n")?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The canonical JSON of one analysis at indentation level 0 (what the writer nests).
pub fn write_canonical(out: &mut Vec<u8>, analysis: &Analysis) -> io::Result<()> {
    let mut ser =
        serde_json::Serializer::with_formatter(out, serde_json::ser::PrettyFormatter::new());
    analysis.serialize(&mut ser).map_err(io::Error::from)
}

/// The metadata file's content: the counts, pretty-printed, with a final newline.
pub fn metadata_file_content(counts: &Counts) -> io::Result<Vec<u8>> {
    let mut out = pretty(counts)?;
    out.push(b'\n');
    Ok(out)
}

fn pretty<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::new());
    value.serialize(&mut ser).map_err(io::Error::from)?;
    Ok(out)
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn indent(text: &[u8], prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 64);
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
            out.extend_from_slice(prefix);
        }
        out.extend_from_slice(line);
    }
    out
}

/// Whether two canonical backups hold the same content: every line equal except the top-level
/// `created_at` (line 3).
pub fn same_content(a: impl BufRead, b: impl BufRead) -> io::Result<bool> {
    let mut a = a.split(b'\n');
    let mut b = b.split(b'\n');
    let mut line = 0;
    loop {
        line += 1;
        match (a.next().transpose()?, b.next().transpose()?) {
            (None, None) => return Ok(true),
            (Some(x), Some(y)) => {
                let both_stamps = line == 3
                    && x.starts_with(b"  \"created_at\": ")
                    && y.starts_with(b"  \"created_at\": ");
                if x != y && !both_stamps {
                    return Ok(false);
                }
            }
            _ => return Ok(false),
        }
    }
}
