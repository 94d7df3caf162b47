//! Rows to records: one function per record kind; a stored value of an unexpected type or shape
//! is an error naming table, row and column.

use super::super::error::json_problem;
use super::super::layout::{canonical, IdEncoding, Layout};
use super::super::{Result, StoreError};
use crate::model::{Analysis, Artifact, Chunk, Finding};
use crate::timestamp::{Timestamp, WallClock};
use rusqlite::types::{FromSql, ValueRef};
use rusqlite::Row;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Reads the columns of one row of `table`, naming the row (by the id in column 0) and the
/// column in every error. Values are read by their stored type: ids as hyphenated or 32-hex
/// text, times as microseconds (goldset's schema) or text (an application's), JSON as text.
pub(super) struct RowReader<'a, 'r> {
    row: &'a Row<'r>,
    table: &'a str,
    id: String,
    /// How ids are written: any other form is refused, since goldset finds and deletes rows
    /// by that exact text.
    ids: IdEncoding,
    /// The zone of wall-clock times in columns without offsets.
    zone: &'a WallClock,
}

impl<'a, 'r> RowReader<'a, 'r> {
    pub(super) fn new(row: &'a Row<'r>, table: &'a str, layout: &'a Layout) -> Self {
        let id = match row.get_ref(0) {
            Ok(value) => match value.as_str() {
                Ok(text) => text.to_owned(),
                Err(_) => format!("{value:?}"),
            },
            Err(_) => "?".into(),
        };
        RowReader {
            row,
            table,
            id,
            ids: layout.ids,
            zone: &layout.time_zone,
        }
    }

    fn bad(&self, i: usize, reason: impl std::fmt::Display) -> StoreError {
        let column = self.row.as_ref().column_name(i).unwrap_or("?");
        StoreError::bad_row(self.table, &self.id, column, reason)
    }

    /// An error about column `i` of this row.
    pub(super) fn bad_column(&self, i: usize, reason: impl std::fmt::Display) -> StoreError {
        self.bad(i, reason)
    }

    /// Column `i` as `T` (an `Option` where NULL is allowed).
    pub(super) fn get<T: FromSql>(&self, i: usize) -> Result<T> {
        self.row.get(i).map_err(|e| self.bad(i, e))
    }

    /// Column `i`, which must not be NULL.
    pub(super) fn required<T: FromSql>(&self, i: usize) -> Result<T> {
        self.get::<Option<T>>(i)?
            .ok_or_else(|| self.bad(i, "NULL where a value is required"))
    }

    /// Column `i`: a UUID in text (with hyphens, or 32 hex digits).
    pub(super) fn uuid(&self, i: usize) -> Result<Uuid> {
        let text: String = self.required(i)?;
        let id = Uuid::try_parse(text.trim())
            .map_err(|e| self.bad(i, format!("{text:?} is not a UUID: {e}")))?;
        canonical(&text, &id, self.ids).map_err(|reason| self.bad(i, reason))?;
        Ok(id)
    }

    /// Column `i`: an instant within the years a backup can hold — microseconds since the
    /// Unix epoch, or text (`YYYY-MM-DD HH:MM:SS[.ffffff][offset]`, UTC without an offset).
    pub(super) fn timestamp(&self, i: usize) -> Result<Timestamp> {
        let micros = match self.row.get_ref(i).map_err(|e| self.bad(i, e))? {
            ValueRef::Integer(micros) => micros,
            ValueRef::Text(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                Timestamp::parse_in(&text, self.zone)
                    .map_err(|e| self.bad(i, e))?
                    .unix_micros()
            }
            ValueRef::Null => return Err(self.bad(i, "NULL where a value is required")),
            other => return Err(self.bad(i, format!("a time stored as {:?}", other.data_type()))),
        };
        Timestamp::checked_from_unix_micros(micros).ok_or_else(|| {
            self.bad(
                i,
                format!("{micros} µs is outside the years 0001–9999 a backup can hold"),
            )
        })
    }

    /// Column `i`: JSON text of the shape `T`.
    pub(super) fn json<T: DeserializeOwned>(&self, i: usize) -> Result<T> {
        let text: String = self.required(i)?;
        let mut reader = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut reader).map_err(|e| self.bad(i, json_problem(&e)))
    }

    /// Column `i`: JSON text of the shape `T`, or `None` for NULL.
    pub(super) fn optional_json<T: DeserializeOwned>(&self, i: usize) -> Result<Option<T>> {
        match self.row.get_ref(i).map_err(|e| self.bad(i, e))? {
            ValueRef::Null => Ok(None),
            _ => self.json(i).map(Some),
        }
    }
}

/// The stored text of an id column (the merge key: children name their analysis this way).
pub(super) fn key(row: &Row, i: usize) -> Result<String> {
    Ok(row.get(i)?)
}

/// A UUID stored as text, where the id is not part of a record being read.
pub(super) fn uuid_text(row: &Row, i: usize) -> Result<Uuid> {
    let text: String = row.get(i)?;
    Uuid::try_parse(&text).map_err(|e| StoreError::Corrupt(format!("id {text:?}: {e}")))
}

/// `id, url, content_type, status, created_at, findings` (findings NULL when they are rows of
/// their own).
pub(super) fn analysis(row: &Row, layout: &Layout) -> Result<Analysis> {
    let r = RowReader::new(row, &layout.analyses.table, layout);
    let status: String = r.required(3)?;
    Ok(Analysis {
        id: r.uuid(0)?,
        url: r.required(1)?,
        content_type: r.required(2)?,
        status: layout.status_from_store(&status).to_owned(),
        created_at: r.timestamp(4)?,
        findings: match layout.analyses.findings {
            Some(_) => r.json::<Vec<Finding>>(5)?,
            None => Vec::new(),
        },
        chunks: Vec::new(),
        artifact: None,
    })
}

/// `id, analysis_id, chunk_index, content, section_title, section_path, content_type`: the id
/// text of its analysis, and the chunk.
pub(super) fn chunk(row: &Row, layout: &Layout) -> Result<(String, Chunk)> {
    let r = RowReader::new(row, &layout.chunks.table, layout);
    Ok((
        r.required(1)?,
        Chunk {
            id: r.uuid(0)?,
            chunk_index: r.required(2)?,
            content: r.required(3)?,
            section_title: r.get(4)?,
            section_path: r.get(5)?,
            content_type: r.required(6)?,
        },
    ))
}

/// `id, analysis_id, summary, key_findings, metadata`: the id text of its analysis, and the
/// artifact.
pub(super) fn artifact(row: &Row, layout: &Layout) -> Result<(String, Artifact)> {
    let table = layout
        .artifacts
        .as_ref()
        .map_or("artifacts", |t| t.table.as_str());
    let r = RowReader::new(row, table, layout);
    Ok((
        r.required(1)?,
        Artifact {
            id: r.uuid(0)?,
            summary: r.get(2)?,
            key_findings: r.json::<Vec<Value>>(3)?,
            metadata: r.json::<Map<String, Value>>(4)?,
        },
    ))
}

/// `analysis_id, agent, category, content, confidence, metadata`: the id text of its analysis,
/// and a finding that is a row of its own.
pub(super) fn finding(row: &Row, layout: &Layout) -> Result<(String, Finding)> {
    let table = layout
        .findings
        .as_ref()
        .map_or("findings", |t| t.table.as_str());
    let r = RowReader::new(row, table, layout);
    Ok((
        r.required(0)?,
        Finding {
            agent: r.required(1)?,
            category: r.required(2)?,
            content: r.required(3)?,
            confidence: r.required(4)?,
            // `{}` and NULL both mean "no metadata" in a findings table (see the mapping docs).
            metadata: r
                .optional_json::<Map<String, Value>>(5)?
                .filter(|m| !m.is_empty()),
        },
    ))
}
