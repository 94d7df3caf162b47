//! Rows to records: one function per record kind, every value read with `try_get`, so that a
//! stored value of an unexpected shape (a JSON object where a list belongs, `'infinity'` as a
//! time, a NULL the application allowed) is an error naming table, row and column — never a
//! panic.

use super::super::error::json_problem;
use super::super::layout::{canonical, IdEncoding, Layout};
use super::super::{Result, StoreError};
use crate::model::{Analysis, Artifact, Chunk, Finding};
use crate::timestamp::{Timestamp, WallClock};
use postgres::types::{FromSql, Json, Type};
use postgres::Row;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` or `timestamp` as its raw microseconds since 2000-01-01 (`±infinity` are the
/// extremes of `i64`), so that no value the server can hold fails to decode.
pub(super) struct PgMicros(pub(super) i64);

impl<'a> FromSql<'a> for PgMicros {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("a timestamp of {} bytes", raw.len()))?;
        Ok(PgMicros(i64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::TIMESTAMPTZ | Type::TIMESTAMP)
    }
}

impl PgMicros {
    /// The instant, when a backup can hold it (years 1 to 9999).
    pub(super) fn timestamp(&self) -> std::result::Result<Timestamp, String> {
        match self.0 {
            i64::MAX => return Err("'infinity' is not an instant".into()),
            i64::MIN => return Err("'-infinity' is not an instant".into()),
            _ => {}
        }
        self.0
            .checked_add(PG_EPOCH_MICROS)
            .and_then(Timestamp::checked_from_unix_micros)
            .ok_or_else(|| {
                format!(
                    "{} µs after 2000-01-01 is outside the years 0001–9999 a backup can hold",
                    self.0
                )
            })
    }
}

/// A value of any type that is not NULL (what `Option<Present>` tells apart).
struct Present;

impl<'a> FromSql<'a> for Present {
    fn from_sql(
        _: &Type,
        _: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Present)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Reads the columns of one row of `table`, naming the row (by the id in column 0) and the
/// column in every error. Values are read by the column's actual type, so that an application's
/// `text` ids, `timestamp` or text times, `json` or text JSON and `bigint` positions read as
/// goldset's own `uuid`, `timestamptz`, `jsonb` and `integer` do.
pub(super) struct RowReader<'r> {
    row: &'r Row,
    table: &'r str,
    id: String,
    /// How ids stored as text are written: any other form is refused, since goldset finds
    /// and deletes rows by that exact text.
    ids: IdEncoding,
    /// The zone of wall-clock times in columns without offsets.
    zone: &'r WallClock,
}

impl<'r> RowReader<'r> {
    /// A reader of `row`, whose column 0 is its id (or, for findings, its analysis).
    pub(super) fn new(row: &'r Row, table: &'r str, layout: &'r Layout) -> Self {
        let id = match row.try_get::<_, Option<Uuid>>(0) {
            Ok(Some(id)) => id.to_string(),
            _ => row
                .try_get::<_, Option<String>>(0)
                .ok()
                .flatten()
                .unwrap_or_else(|| "?".into()),
        };
        RowReader {
            row,
            table,
            id,
            ids: layout.ids,
            zone: &layout.time_zone,
        }
    }

    fn column(&self, i: usize) -> &str {
        self.row.columns().get(i).map_or("?", |c| c.name())
    }

    fn type_of(&self, i: usize) -> Option<&Type> {
        self.row.columns().get(i).map(|c| c.type_())
    }

    /// An error about column `i` of this row.
    pub(super) fn bad(&self, i: usize, reason: impl std::fmt::Display) -> StoreError {
        StoreError::bad_row(self.table, &self.id, self.column(i), reason)
    }

    /// Column `i` as `T`.
    pub(super) fn get<'a, T: FromSql<'a>>(&'a self, i: usize) -> Result<T> {
        self.row.try_get(i).map_err(|e| {
            let reason = match std::error::Error::source(&e) {
                Some(cause) => cause.to_string(),
                None => e.to_string(),
            };
            self.bad(i, reason)
        })
    }

    /// Column `i`, which must not be NULL.
    pub(super) fn required<'a, T: FromSql<'a>>(&'a self, i: usize) -> Result<T> {
        self.get::<Option<T>>(i)?
            .ok_or_else(|| self.bad(i, "NULL where a value is required"))
    }

    /// Column `i`: a UUID, stored as `uuid` or as text (with hyphens or as 32 hex digits).
    pub(super) fn uuid(&self, i: usize) -> Result<Uuid> {
        if self.type_of(i) == Some(&Type::UUID) {
            return self.required(i);
        }
        let text: String = self.required(i)?;
        let id = Uuid::try_parse(text.trim())
            .map_err(|e| self.bad(i, format!("{text:?} is not a UUID: {e}")))?;
        canonical(&text, &id, self.ids).map_err(|reason| self.bad(i, reason))?;
        Ok(id)
    }

    /// Column `i`: an integer of any width.
    pub(super) fn int(&self, i: usize) -> Result<i64> {
        match self.type_of(i) {
            Some(&Type::INT2) => Ok(i64::from(self.required::<i16>(i)?)),
            Some(&Type::INT4) => Ok(i64::from(self.required::<i32>(i)?)),
            _ => self.required(i),
        }
    }

    /// Column `i`: an instant a backup can hold — `timestamptz`, `timestamp` (UTC), or text.
    pub(super) fn timestamp(&self, i: usize) -> Result<Timestamp> {
        if self.type_of(i) == Some(&Type::TIMESTAMPTZ) {
            return self
                .required::<PgMicros>(i)?
                .timestamp()
                .map_err(|reason| self.bad(i, reason));
        }
        if self.type_of(i) == Some(&Type::TIMESTAMP) {
            let wall = self
                .required::<PgMicros>(i)?
                .timestamp()
                .map_err(|reason| self.bad(i, reason))?;
            return self.zone.instant_of(wall).ok_or_else(|| {
                self.bad(
                    i,
                    format!(
                        "{wall} in {} is outside the years 0001–9999 a backup can hold",
                        self.zone.name()
                    ),
                )
            });
        }
        let text: String = self.required(i)?;
        let t = Timestamp::parse_in(&text, self.zone).map_err(|e| self.bad(i, e))?;
        Timestamp::checked_from_unix_micros(t.unix_micros())
            .ok_or_else(|| self.bad(i, "outside the years 0001–9999 a backup can hold"))
    }

    /// Column `i`: JSON of the shape `T` (`jsonb`, `json`, or text holding JSON).
    pub(super) fn json<T: DeserializeOwned>(&self, i: usize) -> Result<T> {
        let value: Value = if matches!(self.type_of(i), Some(&Type::JSON | &Type::JSONB)) {
            let Json(value) = self.required(i)?;
            value
        } else {
            let text: String = self.required(i)?;
            serde_json::from_str(&text).map_err(|e| self.bad(i, format!("not JSON: {e}")))?
        };
        serde_path_to_error::deserialize(value).map_err(|e| self.bad(i, json_problem(&e)))
    }

    /// Column `i`: JSON of the shape `T`, or `None` for NULL.
    pub(super) fn optional_json<T: DeserializeOwned>(&self, i: usize) -> Result<Option<T>> {
        match self.get::<Option<Present>>(i)? {
            None => Ok(None),
            Some(Present) => self.json(i).map(Some),
        }
    }
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

/// `id, analysis_id, chunk_index, content, section_title, section_path, content_type`: the
/// chunk and the id of its analysis.
pub(super) fn chunk(row: &Row, layout: &Layout) -> Result<(Uuid, Chunk)> {
    let r = RowReader::new(row, &layout.chunks.table, layout);
    Ok((
        r.uuid(1)?,
        Chunk {
            id: r.uuid(0)?,
            chunk_index: r.int(2)?,
            content: r.required(3)?,
            section_title: r.get(4)?,
            section_path: r.get(5)?,
            content_type: r.required(6)?,
        },
    ))
}

/// `id, analysis_id, summary, key_findings, metadata`: the artifact and the id of its analysis.
pub(super) fn artifact(row: &Row, layout: &Layout) -> Result<(Uuid, Artifact)> {
    let table = layout
        .artifacts
        .as_ref()
        .map_or("artifacts", |t| t.table.as_str());
    let r = RowReader::new(row, table, layout);
    Ok((
        r.uuid(1)?,
        Artifact {
            id: r.uuid(0)?,
            summary: r.get(2)?,
            key_findings: r.json::<Vec<Value>>(3)?,
            metadata: r.json::<Map<String, Value>>(4)?,
        },
    ))
}

/// `analysis_id, agent, category, content, confidence, metadata`: a finding that is a row of
/// its own, and the id of its analysis.
pub(super) fn finding(row: &Row, layout: &Layout) -> Result<(Uuid, Finding)> {
    let table = layout
        .findings
        .as_ref()
        .map_or("findings", |t| t.table.as_str());
    let r = RowReader::new(row, table, layout);
    Ok((
        r.uuid(0)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_outside_a_backup_are_refused_not_wrapped() {
        assert_eq!(
            PgMicros(0).timestamp().unwrap().to_string(),
            "2000-01-01T00:00:00Z"
        );
        assert!(PgMicros(i64::MAX)
            .timestamp()
            .unwrap_err()
            .contains("infinity"));
        assert!(PgMicros(i64::MIN)
            .timestamp()
            .unwrap_err()
            .contains("-infinity"));
        // Past 9999-12-31 (PostgreSQL holds up to year 294276), and at the very end of i64.
        let past = PgMicros(Timestamp::MAX.unix_micros() + 1 - PG_EPOCH_MICROS);
        assert!(past.timestamp().unwrap_err().contains("0001–9999"));
        assert!(PgMicros(i64::MAX - 1).timestamp().is_err());
    }
}
