//! The rows goldset writes into an application's tables: typed cells, encoded for binary
//! `COPY` by each column's own type, or as text for a cast.

use crate::model::{Analysis, Chunk};
use crate::store::layout::{EmbeddingEncoding, Layout};
use crate::store::vector_to_blob;
use pgvector::Vector;
use postgres::types::{IsNull, Json, ToSql, Type};
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, PrimitiveDateTime};
use uuid::Uuid;

/// A vector as the text PostgreSQL casts to the column's type.
pub(super) fn vector_text(v: &[f32], encoding: EmbeddingEncoding) -> String {
    let numbers = || v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
    match encoding {
        EmbeddingEncoding::Vector | EmbeddingEncoding::Json => format!("[{}]", numbers()),
        EmbeddingEncoding::RealArray => format!("{{{}}}", numbers()),
        EmbeddingEncoding::F32Le => {
            let hex: String = vector_to_blob(v)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("\\x{hex}")
        }
    }
}

/// One value of a row, typed, before it is encoded for a column of the application's type.
#[derive(Debug, Clone)]
pub(super) enum Cell {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Json(serde_json::Value),
    Id(Uuid),
    Time(crate::timestamp::Timestamp),
    Vector(Vec<f32>),
}

impl Cell {
    pub(super) fn json<T: serde::Serialize>(value: &T) -> Cell {
        Cell::Json(serde_json::to_value(value).expect("JSON values serialize"))
    }

    pub(super) fn text_or_null(value: &Option<String>) -> Cell {
        value.clone().map_or(Cell::Null, Cell::Text)
    }

    /// The value as text, for a cast to the column's type.
    pub(super) fn text(&self, layout: &Layout) -> Option<String> {
        Some(match self {
            Cell::Null => return None,
            Cell::Text(t) => t.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => f.to_string(),
            Cell::Json(v) => v.to_string(),
            Cell::Id(id) => layout.ids.text(id),
            Cell::Time(t) => layout.time_text(*t),
            Cell::Vector(v) => vector_text(v, layout.embedding),
        })
    }

    /// The value for a column of type `ty` in binary `COPY`, or `None` when this kind of value
    /// does not go into that type without a cast (the text path then does it).
    pub(super) fn typed(&self, ty: &Type, layout: &Layout) -> Option<Box<dyn ToSql + Sync>> {
        let text_type = matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME);
        Some(match (self, ty) {
            (Cell::Null, _) => Box::new(Null),
            (Cell::Id(id), &Type::UUID) => Box::new(*id),
            (Cell::Int(i), &Type::INT2) => Box::new(i16::try_from(*i).ok()?),
            (Cell::Int(i), &Type::INT4) => Box::new(i32::try_from(*i).ok()?),
            (Cell::Int(i), &Type::INT8) => Box::new(*i),
            (Cell::Float(f), &Type::FLOAT8) => Box::new(*f),
            (Cell::Json(v), &Type::JSON | &Type::JSONB) => Box::new(Json(v.clone())),
            (Cell::Time(t), &Type::TIMESTAMPTZ) => {
                let nanos = i128::from(t.unix_micros()) * 1000;
                Box::new(OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?)
            }
            (Cell::Time(t), &Type::TIMESTAMP) => {
                let nanos = i128::from(layout.time_zone.wall_of(*t).unix_micros()) * 1000;
                let utc = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
                Box::new(PrimitiveDateTime::new(utc.date(), utc.time()))
            }
            (Cell::Vector(v), ty) if ty.name() == "vector" => Box::new(Vector::from(v.clone())),
            (Cell::Vector(v), &Type::FLOAT4_ARRAY) => Box::new(v.clone()),
            (Cell::Vector(v), &Type::BYTEA) => Box::new(vector_to_blob(v)),
            (Cell::Float(_) | Cell::Vector(_), _) => return None,
            (cell, _) if text_type => Box::new(cell.text(layout)?),
            _ => return None,
        })
    }
}

/// NULL, for a column of any type.
#[derive(Debug)]
pub(super) struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Columns of one table and the rows to insert into them.
pub(super) struct Rows {
    pub(super) table: String,
    pub(super) columns: Vec<String>,
    pub(super) rows: Vec<Vec<Cell>>,
}

impl Rows {
    pub(super) fn new(table: &str, columns: &[&str]) -> Self {
        Rows {
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }
}

/// The rows of some records, per mapped table, as text (see [`AdoptedWrite::insert_rows`]).
pub(super) struct RecordRows<'l> {
    pub(super) layout: &'l Layout,
    pub(super) analyses: Rows,
    pub(super) findings: Option<Rows>,
    pub(super) chunks: Rows,
    pub(super) artifacts: Option<Rows>,
    /// Chunks given an embedding, with the SHA-256 of their text.
    pub(super) embedded: Vec<(Uuid, [u8; 32])>,
}

impl<'l> RecordRows<'l> {
    pub(super) fn new(layout: &'l Layout) -> Self {
        RecordRows {
            layout,
            analyses: Rows::new(&layout.analyses.table, &layout.analysis_columns()),
            findings: layout
                .findings
                .as_ref()
                .map(|f| Rows::new(&f.table, &f.columns())),
            chunks: Rows::new(&layout.chunks.table, &layout.chunk_columns()),
            artifacts: layout
                .artifacts
                .as_ref()
                .map(|r| Rows::new(&r.table, &r.columns())),
            embedded: Vec::new(),
        }
    }

    /// The analysis row's values, in [`RecordRows::new`]'s column order.
    pub(super) fn analysis_values(&self, analysis: &Analysis) -> Vec<Cell> {
        let l = self.layout;
        let mut row = vec![
            Cell::Id(analysis.id),
            Cell::Text(analysis.url.clone()),
            Cell::Text(analysis.content_type.clone()),
            Cell::Text(l.status_to_store(&analysis.status).to_owned()),
            Cell::Time(analysis.created_at),
        ];
        if l.analyses.findings.is_some() {
            row.push(Cell::json(&analysis.findings));
        }
        row
    }

    pub(super) fn analysis(&mut self, analysis: &Analysis) {
        let row = self.analysis_values(analysis);
        self.analyses.push(row);
    }

    /// The analysis's findings, where they are rows of their own.
    pub(super) fn findings(&mut self, analysis: &Analysis) {
        let with_metadata = self
            .layout
            .findings
            .as_ref()
            .is_some_and(|f| f.metadata.is_some());
        let Some(rows) = &mut self.findings else {
            return;
        };
        for (i, finding) in analysis.findings.iter().enumerate() {
            let mut row = vec![
                Cell::Id(analysis.id),
                Cell::Int(i as i64),
                Cell::Text(finding.agent.clone()),
                Cell::Text(finding.category.clone()),
                Cell::Text(finding.content.clone()),
                Cell::Float(finding.confidence),
            ];
            if with_metadata {
                // A row holds `{}` for "no metadata" (the column may be NOT NULL).
                row.push(match &finding.metadata {
                    Some(m) => Cell::json(m),
                    None => Cell::Json(serde_json::Value::Object(Default::default())),
                });
            }
            rows.push(row);
        }
    }

    pub(super) fn chunk(
        &mut self,
        analysis: &Analysis,
        chunk: &Chunk,
        vector: Option<(&str, &[f32])>,
    ) {
        let c = &self.layout.chunks;
        if let Some((_, _)) = vector {
            self.embedded
                .push((chunk.id, Sha256::digest(chunk.content.as_bytes()).into()));
        }
        let mut row = vec![
            Cell::Id(chunk.id),
            Cell::Id(analysis.id),
            Cell::Int(chunk.chunk_index),
            Cell::Text(chunk.content.clone()),
            Cell::Text(chunk.content_type.clone()),
            vector.map_or(Cell::Null, |(_, v)| Cell::Vector(v.to_vec())),
        ];
        if c.section_title.is_some() {
            row.push(Cell::text_or_null(&chunk.section_title));
        }
        if c.section_path.is_some() {
            row.push(Cell::text_or_null(&chunk.section_path));
        }
        if c.embedding_model.is_some() {
            row.push(vector.map_or(Cell::Null, |(model, _)| Cell::Text(model.to_owned())));
        }
        self.chunks.push(row);
    }

    pub(super) fn artifact(&mut self, analysis: &Analysis) {
        let (Some(rows), Some(artifact)) = (&mut self.artifacts, &analysis.artifact) else {
            return;
        };
        rows.push(vec![
            Cell::Id(artifact.id),
            Cell::Id(analysis.id),
            Cell::text_or_null(&artifact.summary),
            Cell::json(&artifact.key_findings),
            Cell::json(&artifact.metadata),
        ]);
    }
}
