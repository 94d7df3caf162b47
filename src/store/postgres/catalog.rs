//! The PostgreSQL catalog: user tables (outside `pg_catalog`, `information_schema` and goldset's
//! own bookkeeping schema), their columns and the foreign keys between them. Read-only: a role
//! with nothing but `SELECT` on the application's tables sees what it needs.

use super::super::catalog::{Catalog, Column, ForeignKey, Table};
use super::super::layout::TimeEncoding;
use super::super::{Result, StoreError};
use super::PostgresStore;
use postgres::GenericClient;

/// Reads the catalog of every user table the connection can see.
pub(super) fn read(client: &mut impl GenericClient, skip_schema: &str) -> Result<Catalog> {
    let rows = client.query(
        "SELECT n.nspname, c.relname, a.attname, lower(format_type(a.atttypid, a.atttypmod)),
                a.attnotnull, (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''),
                coalesce(a.attnum = ANY (pk.conkey), false)
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
          WHERE c.relkind IN ('r', 'p')
            AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
            AND n.nspname NOT LIKE 'pg\\_%'
            AND has_table_privilege(c.oid, 'SELECT')
          ORDER BY 1, 2, a.attnum",
        &[&skip_schema],
    )?;
    let mut catalog = Catalog::default();
    for row in rows {
        let name = format!("{}.{}", row.get::<_, String>(0), row.get::<_, String>(1));
        if catalog.tables.last().map(|t| &t.name) != Some(&name) {
            catalog.tables.push(Table {
                name,
                columns: Vec::new(),
            });
        }
        let table = catalog.tables.last_mut().expect("pushed above");
        table.columns.push(Column {
            name: row.get(2),
            sql_type: row.get(3),
            not_null: row.get(4),
            has_default: row.get(5),
            primary_key: row.get(6),
            allowed: Vec::new(),
        });
    }
    for row in client.query(
        "SELECT n.nspname || '.' || c.relname, a.attname::text, pg_get_constraintdef(k.oid)
           FROM pg_constraint k
           JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
          WHERE k.contype = 'c' AND cardinality(k.conkey) = 1",
        &[],
    )? {
        let (table, column, definition): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        if let Some(c) = catalog
            .tables
            .iter_mut()
            .find(|t| t.name == table)
            .and_then(|t| t.columns.iter_mut().find(|c| c.name == column))
        {
            c.allowed = quoted_literals(&definition);
        }
    }
    for row in client.query(
        "SELECT fn.nspname || '.' || f.relname, tn.nspname || '.' || t.relname,
                ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS u(n, i)
                        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
                ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY AS u(n, i)
                        JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i),
                CASE k.confdeltype WHEN 'c' THEN 'cascade' WHEN 'n' THEN 'set null'
                     WHEN 'd' THEN 'set default' WHEN 'r' THEN 'restrict' ELSE 'no action' END
           FROM pg_constraint k
           JOIN pg_class f ON f.oid = k.conrelid JOIN pg_namespace fn ON fn.oid = f.relnamespace
           JOIN pg_class t ON t.oid = k.confrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
          WHERE k.contype = 'f'
          ORDER BY 1, 2",
        &[],
    )? {
        catalog.foreign_keys.push(ForeignKey {
            from_table: row.get(0),
            to_table: row.get(1),
            from_columns: row.get(2),
            to_columns: row.get(3),
            on_delete: row.get(4),
        });
    }
    Ok(catalog)
}

/// The string literals of a constraint definition, in order (`'done'::text` → `done`).
fn quoted_literals(definition: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = definition;
    while let Some(start) = rest.find('\'') {
        let mut literal = String::new();
        let mut chars = rest[start + 1..].char_indices();
        let mut end = None;
        while let Some((i, ch)) = chars.next() {
            if ch == '\'' {
                if rest[start + 1 + i + 1..].starts_with('\'') {
                    literal.push('\'');
                    chars.next();
                } else {
                    end = Some(start + 1 + i + 1);
                    break;
                }
            } else {
                literal.push(ch);
            }
        }
        let Some(end) = end else { break };
        found.push(literal);
        rest = &rest[end..];
    }
    found
}

impl PostgresStore {
    /// Checks the mapping against the catalog before anything is read.
    pub(super) fn check_mapping(&mut self) -> Result<()> {
        let catalog = read(&mut self.client, "")?;
        catalog.check(&self.layout)?;
        // Naive times are placed in the mapping's zone by the server too (to order them): it
        // must know the zone (its tz database may be older than goldset's).
        let zone = &self.layout.time_zone;
        let naive = matches!(
            self.layout.timestamps,
            TimeEncoding::Timestamp | TimeEncoding::Text
        );
        if naive && !zone.is_utc() {
            let known: bool = self
                .client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)",
                    &[&zone.name()],
                )?
                .get(0);
            if !known {
                return Err(StoreError::Schema(format!(
                    "mapping: time_zone {:?} is not a zone this PostgreSQL server knows (its tz database is older than goldset's): name another zone with the same rules, or update the server's tzdata",
                    zone.name()
                )));
            }
        }
        Ok(())
    }

    /// The catalog, without goldset's bookkeeping schema beside an application's tables.
    pub(super) fn catalog(&mut self) -> Result<Catalog> {
        let bookkeeping = self
            .layout
            .goldset_schema
            .clone()
            .filter(|_| !self.layout.owned)
            .unwrap_or_else(|| super::BOOKKEEPING_SCHEMA.to_owned());
        read(&mut self.client, &bookkeeping)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_constraint_literals() {
        assert_eq!(
            quoted_literals(
                "CHECK ((state = ANY (ARRAY['queued'::text, 'it''s'::text, 'done'::text])))"
            ),
            vec!["queued", "it's", "done"]
        );
        assert!(quoted_literals("CHECK ((score >= 0))").is_empty());
    }
}
