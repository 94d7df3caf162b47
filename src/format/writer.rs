//! A streaming writer of the canonical format: fixed key order, 2-space indentation, UTF-8 as
//! is, sorted keys in free-form objects, a final newline. Same records in, same bytes out.

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
}

impl<W: Write> BackupWriter<W> {
    /// Starts a backup made at `created_at` that will hold `counts` records.
    pub fn new(mut out: W, created_at: Timestamp, counts: Counts) -> io::Result<Self> {
        write!(
            out,
            "{{\n  \"version\": \"{FORMAT_VERSION}\",\n  \"created_at\": \"{created_at}\",\n  \"metadata\": "
        )?;
        let metadata = pretty(&counts)?;
        out.write_all(&indent(&metadata, b"  "))?;
        out.write_all(b",\n  \"analyses\": [")?;
        Ok(BackupWriter {
            out,
            declared: counts,
            written: Counts::default(),
            buffer: Vec::new(),
        })
    }

    /// Appends one analysis.
    pub fn write_analysis(&mut self, analysis: &Analysis) -> io::Result<()> {
        self.out.write_all(if self.written.total_analyses == 0 {
            b"\n    "
        } else {
            b",\n    "
        })?;
        self.buffer.clear();
        write_canonical(&mut self.buffer, analysis)?;
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
