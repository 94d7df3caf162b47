//! Rows to records: one function per record kind; a stored value of an unexpected type or shape
//! is an error naming table, row and column.

use super::super::error::json_problem;
use super::super::{Result, StoreError};
use crate::model::{Analysis, Artifact, Chunk, Finding};
use crate::timestamp::Timestamp;
use rusqlite::types::FromSql;
use rusqlite::Row;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Reads the columns of one row of `table`, naming the row (by the id in column 0) and the
/// column in every error.
pub(super) struct RowReader<'a, 'r> {
    row: &'a Row<'r>,
    table: &'static str,
    id: String,
}

impl<'a, 'r> RowReader<'a, 'r> {
    pub(super) fn new(row: &'a Row<'r>, table: &'static str) -> Self {
        let id = match row.get_ref(0) {
            Ok(value) => match value.as_str() {
                Ok(text) => text.to_owned(),
                Err(_) => format!("{value:?}"),
            },
            Err(_) => "?".into(),
        };
        RowReader { row, table, id }
    }

    fn bad(&self, i: usize, reason: impl std::fmt::Display) -> StoreError {
        let column = self.row.as_ref().column_name(i).unwrap_or("?");
        StoreError::bad_row(self.table, &self.id, column, reason)
    }

    /// Column `i` as `T` (an `Option` where NULL is allowed).
    pub(super) fn get<T: FromSql>(&self, i: usize) -> Result<T> {
        self.row.get(i).map_err(|e| self.bad(i, e))
    }

    /// Column `i`: a UUID in text.
    pub(super) fn uuid(&self, i: usize) -> Result<Uuid> {
        let text: String = self.get(i)?;
        Uuid::try_parse(&text).map_err(|e| self.bad(i, format!("{text:?} is not a UUID: {e}")))
    }

    /// Column `i`: microseconds since the Unix epoch, within the years a backup can hold.
    pub(super) fn timestamp(&self, i: usize) -> Result<Timestamp> {
        let micros: i64 = self.get(i)?;
        Timestamp::checked_from_unix_micros(micros).ok_or_else(|| {
            self.bad(
                i,
                format!("{micros} µs is outside the years 0001–9999 a backup can hold"),
            )
        })
    }

    /// Column `i`: JSON text of the shape `T`.
    pub(super) fn json<T: DeserializeOwned>(&self, i: usize) -> Result<T> {
        let text: String = self.get(i)?;
        let mut reader = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut reader).map_err(|e| self.bad(i, json_problem(&e)))
    }
}

/// A UUID stored as text, where the id is not part of a record being read.
pub(super) fn uuid_text(row: &Row, i: usize) -> Result<Uuid> {
    let text: String = row.get(i)?;
    Uuid::try_parse(&text).map_err(|e| StoreError::Corrupt(format!("id {text:?}: {e}")))
}

/// `id, url, content_type, status, created_at, findings`.
pub(super) fn analysis(row: &Row) -> Result<Analysis> {
    let r = RowReader::new(row, "analyses");
    Ok(Analysis {
        id: r.uuid(0)?,
        url: r.get(1)?,
        content_type: r.get(2)?,
        status: r.get(3)?,
        created_at: r.timestamp(4)?,
        findings: r.json::<Vec<Finding>>(5)?,
        chunks: Vec::new(),
        artifact: None,
    })
}

/// `id, analysis_id, chunk_index, content, section_title, section_path, content_type`: the id
/// text of its analysis, and the chunk.
pub(super) fn chunk(row: &Row) -> Result<(String, Chunk)> {
    let r = RowReader::new(row, "chunks");
    Ok((
        r.get(1)?,
        Chunk {
            id: r.uuid(0)?,
            chunk_index: r.get(2)?,
            content: r.get(3)?,
            section_title: r.get(4)?,
            section_path: r.get(5)?,
            content_type: r.get(6)?,
        },
    ))
}

/// `id, analysis_id, summary, key_findings, metadata`: the id text of its analysis, and the
/// artifact.
pub(super) fn artifact(row: &Row) -> Result<(String, Artifact)> {
    let r = RowReader::new(row, "artifacts");
    Ok((
        r.get(1)?,
        Artifact {
            id: r.uuid(0)?,
            summary: r.get(2)?,
            key_findings: r.json::<Vec<Value>>(3)?,
            metadata: r.json::<Map<String, Value>>(4)?,
        },
    ))
}
