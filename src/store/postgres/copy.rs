//! Rows in PostgreSQL's binary `COPY` format, encoded apart from any connection.
//!
//! The format (PostgreSQL docs, "COPY — Binary Format"): an 11-byte signature, a 32-bit flags
//! field and a 32-bit header-extension length (both 0 here); then per row a 16-bit field count
//! and, per field, a 32-bit byte length (-1 for NULL) followed by the value in the type's binary
//! send format; a 16-bit -1 ends the data. Values are encoded by their `ToSql` implementations,
//! exactly as `postgres::binary_copy` would.
//!
//! Encoding apart from the connection is what lets a bulk load keep one `COPY` of chunks open
//! for a whole restore while the rows of the other tables wait in a spool file.

use super::super::{Result, StoreError};
use bytes::{BufMut, BytesMut};
use postgres::types::{IsNull, ToSql, Type};
use std::io::{self, Write};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Bytes buffered before they are handed to the writer.
const FLUSH_AT: usize = 64 * 1024;

/// A writer of binary `COPY` data for rows of fixed column types.
pub struct BinaryRows<W: Write> {
    out: W,
    columns: Vec<String>,
    types: Vec<Type>,
    buf: BytesMut,
}

impl<W: Write> BinaryRows<W> {
    /// Starts the data (writes the header) for rows of these columns and types.
    pub fn new(out: W, columns: &[&str], types: Vec<Type>) -> Self {
        debug_assert_eq!(columns.len(), types.len());
        let mut buf = BytesMut::with_capacity(FLUSH_AT + 8192);
        buf.put_slice(SIGNATURE);
        buf.put_i32(0);
        buf.put_i32(0);
        BinaryRows {
            out,
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            types,
            buf,
        }
    }

    /// Appends one row; `values` holds one value per column, in order.
    pub fn write(&mut self, values: &[&(dyn ToSql + Sync)]) -> Result<()> {
        assert_eq!(values.len(), self.types.len(), "one value per column");
        self.buf.put_i16(values.len() as i16);
        for (i, (value, ty)) in values.iter().zip(&self.types).enumerate() {
            let at = self.buf.len();
            self.buf.put_i32(0);
            let encoded = value
                .to_sql_checked(ty, &mut self.buf)
                .map_err(|e| self.encode_error(i, e.to_string()))?;
            let len = match encoded {
                IsNull::Yes => -1,
                IsNull::No => i32::try_from(self.buf.len() - at - 4)
                    .map_err(|_| self.encode_error(i, "value longer than 2 GiB".into()))?,
            };
            self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        if self.buf.len() >= FLUSH_AT {
            self.flush_buffer()?;
        }
        Ok(())
    }

    /// Ends the data (writes the trailer) and returns the writer, flushed.
    pub fn finish(mut self) -> Result<W> {
        self.buf.put_i16(-1);
        self.flush_buffer()?;
        self.out.flush().map_err(io_error)?;
        Ok(self.out)
    }

    fn flush_buffer(&mut self) -> Result<()> {
        self.out.write_all(&self.buf).map_err(io_error)?;
        self.buf.clear();
        Ok(())
    }

    fn encode_error(&self, column: usize, reason: String) -> StoreError {
        StoreError::Encode {
            column: self.columns[column].clone(),
            reason,
        }
    }
}

/// The error behind a failed write: the server's own, when the writer was a `COPY`.
pub fn io_error(e: io::Error) -> StoreError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<postgres::Error>())
    {
        Some(_) => {
            let inner = e.into_inner().expect("checked above");
            match inner.downcast::<postgres::Error>() {
                Ok(pg) => StoreError::Postgres(*pg),
                Err(other) => StoreError::Io(io::Error::other(other)),
            }
        }
        None => StoreError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[&str] = &["id", "name", "note"];

    #[test]
    fn encodes_header_rows_nulls_and_trailer() {
        let mut rows = BinaryRows::new(
            Vec::new(),
            COLUMNS,
            vec![Type::INT4, Type::TEXT, Type::TEXT],
        );
        rows.write(&[&7i32, &"ab", &None::<String>]).unwrap();
        let bytes = rows.finish().unwrap();
        let mut expected = SIGNATURE.to_vec();
        expected.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend(3i16.to_be_bytes());
        expected.extend(4i32.to_be_bytes());
        expected.extend(7i32.to_be_bytes());
        expected.extend(2i32.to_be_bytes());
        expected.extend(b"ab");
        expected.extend((-1i32).to_be_bytes());
        expected.extend((-1i16).to_be_bytes());
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_column() {
        let mut rows = BinaryRows::new(
            Vec::new(),
            COLUMNS,
            vec![Type::INT4, Type::INT4, Type::TEXT],
        );
        let err = rows.write(&[&1i32, &"not a number", &"x"]).unwrap_err();
        assert!(
            matches!(&err, StoreError::Encode { column, .. } if column == "name"),
            "{err}"
        );
    }

    #[test]
    fn large_batches_reach_the_writer_in_pieces_and_whole() {
        let mut rows = BinaryRows::new(
            Vec::new(),
            COLUMNS,
            vec![Type::INT4, Type::TEXT, Type::TEXT],
        );
        let text = "x".repeat(1000);
        for i in 0..500 {
            rows.write(&[&i, &text, &text]).unwrap();
        }
        let bytes = rows.finish().unwrap();
        // header + 500 × (2 + 3×4 + 4 + 1000 + 1000) + trailer
        assert_eq!(bytes.len(), 19 + 500 * 2018 + 2);
        assert_eq!(&bytes[bytes.len() - 2..], &[0xff, 0xff]);
    }
}
