//! Inserts and deletes on an application's tables: binary `COPY` (text casts where a type
//! needs one), goldset's record of each embedding's model, and the cascade check before a
//! delete.

use super::rows::{RecordRows, Rows};
use super::AdoptedWrite;
use crate::store::catalog::{cascade_refusal, ForeignKey};
use crate::store::layout::quote_name as q;
use crate::store::postgres::copy::BinaryRows;
use crate::store::Result;
use postgres::types::{ToSql, Type};
use uuid::Uuid;

impl AdoptedWrite<'_> {
    /// Inserts `rows` with one statement, each value cast to its column's type; `fill` adds the
    /// mapping's constants for the table.
    pub(super) fn insert(&mut self, rows: Rows) -> Result<()> {
        if rows.rows.is_empty() {
            return Ok(());
        }
        if self.layout.fill.contains_key(&rows.table) {
            return self.insert_as_text(rows);
        }
        let types = self.column_types(&rows.table, &rows.columns)?;
        let columns: Vec<&str> = rows.columns.iter().map(String::as_str).collect();
        let mut data = BinaryRows::new(Vec::new(), &columns, types.clone());
        for row in &rows.rows {
            let typed: Option<Vec<Box<dyn ToSql + Sync>>> = row
                .iter()
                .zip(&types)
                .map(|(cell, ty)| cell.typed(ty, self.layout))
                .collect();
            let Some(typed) = typed else {
                // A type binary COPY cannot fill from this value: let the server cast text.
                return self.insert_as_text(rows);
            };
            let values: Vec<&(dyn ToSql + Sync)> = typed.iter().map(|v| v.as_ref()).collect();
            data.write(&values)?;
        }
        let data = data.finish()?;
        let quoted: Vec<String> = rows.columns.iter().map(|c| q(c)).collect();
        let mut writer = self.client.copy_in(&format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            q(&rows.table),
            quoted.join(", ")
        ))?;
        std::io::Write::write_all(&mut writer, &data)
            .map_err(crate::store::postgres::copy::io_error)?;
        writer.finish()?;
        Ok(())
    }

    /// The types of `columns` of `table`, as the server describes them (looked up once).
    pub(super) fn column_types(&mut self, table: &str, columns: &[String]) -> Result<Vec<Type>> {
        let key = format!("{table}:{}", columns.join(","));
        if let Some(types) = self.column_types.get(&key) {
            return Ok(types.clone());
        }
        let quoted: Vec<String> = columns.iter().map(|c| q(c)).collect();
        let statement = self.client.prepare(&format!(
            "SELECT {} FROM {} WHERE false",
            quoted.join(", "),
            q(table)
        ))?;
        let types: Vec<Type> = statement
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        self.column_types.insert(key, types.clone());
        Ok(types)
    }

    /// Inserts `rows` as text cast to each column's type, with the mapping's fill constants:
    /// one `INSERT … SELECT … FROM unnest(…)`.
    pub(super) fn insert_as_text(&mut self, rows: Rows) -> Result<()> {
        let layout = self.layout;
        let values: Vec<Vec<Option<String>>> = (0..rows.columns.len())
            .map(|i| rows.rows.iter().map(|r| r[i].text(layout)).collect())
            .collect();
        let mut columns: Vec<String> = rows.columns.iter().map(|c| q(c)).collect();
        let mut selects: Vec<String> = rows
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("u.c{i}::{}", self.type_of(&rows.table, c)))
            .collect();
        let fill: Vec<(&String, &String)> = self
            .layout
            .fill
            .get(&rows.table)
            .map(|f| f.iter().collect())
            .unwrap_or_default();
        let arrays = values.len();
        for (i, (column, _)) in fill.iter().enumerate() {
            columns.push(q(column));
            selects.push(format!(
                "${}::text::{}",
                arrays + i + 1,
                self.type_of(&rows.table, column)
            ));
        }
        let unnest: Vec<String> = (1..=arrays).map(|i| format!("${i}::text[]")).collect();
        let names: Vec<String> = (0..arrays).map(|i| format!("c{i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u ({})",
            q(&rows.table),
            columns.join(", "),
            selects.join(", "),
            unnest.join(", "),
            names.join(", ")
        );
        let mut params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        for (_, value) in &fill {
            params.push(*value);
        }
        self.client.execute(&sql, &params)?;
        Ok(())
    }

    /// Inserts `rows`, parents first (the application's foreign keys are checked row by row),
    /// and records the model of the embedded chunks.
    pub(super) fn insert_rows(&mut self, rows: RecordRows<'_>, model: Option<&str>) -> Result<()> {
        let RecordRows {
            analyses,
            findings,
            chunks,
            artifacts,
            embedded,
            ..
        } = rows;
        self.insert(analyses)?;
        if let Some(rows) = findings {
            self.insert(rows)?;
        }
        self.insert(chunks)?;
        if let Some(rows) = artifacts {
            self.insert(rows)?;
        }
        match model {
            Some(model) => self.record_digests(model, &embedded),
            None => Ok(()),
        }
    }

    /// Records which model embedded these chunks, and the SHA-256 of the text it embedded.
    pub(super) fn record_digests(
        &mut self,
        model: &str,
        chunks: &[(Uuid, [u8; 32])],
    ) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = chunks
            .iter()
            .map(|(id, _)| self.layout.ids.text(id))
            .collect();
        let digests: Vec<&[u8]> = chunks.iter().map(|(_, d)| &d[..]).collect();
        let c = &self.layout.chunks;
        if let Some(column) = &c.embedding_sha256 {
            self.client.execute(
                &format!(
                    "UPDATE {table} AS c SET {column} = u.digest
                       FROM unnest($1::text[], $2::bytea[]) AS u (id, digest)
                      WHERE c.{id} = u.id::{id_type}",
                    table = q(&c.table),
                    column = q(column),
                    id = q(&c.id),
                    id_type = self.type_of(&c.table, &c.id),
                ),
                &[&ids, &digests],
            )?;
            return Ok(());
        }
        if !self.bookkeeping() {
            return Ok(());
        }
        self.client.execute(
            &format!(
                "INSERT INTO {} (chunk_id, model, content_sha256)
                 SELECT id, $1, digest FROM unnest($2::text[], $3::bytea[]) AS u (id, digest)
                 ON CONFLICT (chunk_id) DO UPDATE
                    SET model = EXCLUDED.model, content_sha256 = EXCLUDED.content_sha256",
                self.names.embeddings
            ),
            &[&model, &ids, &digests],
        )?;
        Ok(())
    }

    /// Records which model embedded these chunks (by the chunks' own ids).
    pub(super) fn record_models(&mut self, model: &str, chunk_ids: &[String]) -> Result<()> {
        let c = &self.layout.chunks;
        if chunk_ids.is_empty() {
            return Ok(());
        }
        if let Some(column) = &c.embedding_sha256 {
            let sql = format!(
                "UPDATE {table} SET {column} = sha256(convert_to({content}, 'UTF8'))
                  WHERE {id} = ANY({ids})",
                table = q(&c.table),
                column = q(column),
                content = q(&c.content),
                id = q(&c.id),
                ids = self.id_array(1, &c.table, &c.id)
            );
            self.client.execute(&sql, &[&chunk_ids])?;
            return Ok(());
        }
        if !self.bookkeeping() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO {e} (chunk_id, model, content_sha256)
             SELECT c.{id}::text, $1, sha256(convert_to(c.{content}, 'UTF8'))
               FROM {table} c WHERE c.{id} = ANY({ids})
             ON CONFLICT (chunk_id) DO UPDATE
                SET model = EXCLUDED.model, content_sha256 = EXCLUDED.content_sha256",
            e = self.names.embeddings,
            id = q(&c.id),
            content = q(&c.content),
            table = q(&c.table),
            ids = self.id_array(2, &c.table, &c.id)
        );
        self.client.execute(&sql, &[&model, &chunk_ids])?;
        Ok(())
    }

    /// Deletes the rows of `table` whose `column` is one of `ids` (all rows with `None`).
    pub(super) fn delete_where(
        &mut self,
        table: &str,
        column: &str,
        ids: Option<&[String]>,
    ) -> Result<()> {
        self.check_cascades(table, column, ids)?;
        match ids {
            None => {
                self.client
                    .execute(&format!("DELETE FROM {}", q(table)), &[])?;
            }
            Some(ids) => {
                let sql = format!(
                    "DELETE FROM {} WHERE {} = ANY({})",
                    q(table),
                    q(column),
                    self.id_array(1, table, column)
                );
                self.client.execute(&sql, &[&ids])?;
            }
        }
        Ok(())
    }

    /// Before rows of `table` are deleted: refuses when rows of a table outside the dataset
    /// reference them, unless the user allowed the cascade (and the key allows the delete).
    pub(super) fn check_cascades(
        &mut self,
        table: &str,
        column: &str,
        ids: Option<&[String]>,
    ) -> Result<()> {
        let mapped: Vec<&str> = self.layout.tables().iter().map(|(t, _)| *t).collect();
        let keys: Vec<ForeignKey> = self
            .catalog
            .references_into(table, &mapped)
            .into_iter()
            .cloned()
            .collect();
        for key in keys {
            let (filter, rows): (String, i64) = match ids {
                None => {
                    let sql = self.catalog.referencing_rows_sql(&key, table, "");
                    (sql.clone(), self.client.query_one(&sql, &[])?.get(0))
                }
                Some(ids) => {
                    let filter = format!(
                        "WHERE t.{} = ANY({})",
                        q(column),
                        self.id_array(1, table, column)
                    );
                    let sql = self.catalog.referencing_rows_sql(&key, table, &filter);
                    (sql.clone(), self.client.query_one(&sql, &[&ids])?.get(0))
                }
            };
            tracing::debug!(
                sql = filter,
                rows,
                "rows outside the dataset referencing a delete"
            );
            if let Some(refusal) = cascade_refusal(&key, rows, self.allow_cascade) {
                return Err(refusal);
            }
        }
        Ok(())
    }
}
