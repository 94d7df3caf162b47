//! What a database's catalog says about its tables: names, column types, nullability, defaults
//! and foreign keys. `goldset adopt` proposes a mapping from it; a store checks a mapping
//! against it before reading or writing anything.

use super::layout::Layout;
use super::StoreError;
use serde::Serialize;

/// A column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type as the database writes it (`uuid`, `timestamp with time zone`, `vector(384)`,
    /// `CHAR(32)`), lower-cased.
    pub sql_type: String,
    /// NOT NULL.
    pub not_null: bool,
    /// Has a default (or is generated, or an identity).
    pub has_default: bool,
    /// Part of the primary key.
    pub primary_key: bool,
    /// The values a CHECK constraint on this column alone allows (`state IN ('queued', …)`),
    /// in the constraint's order; empty when there is none.
    pub allowed: Vec<String>,
}

/// A foreign key from one table onto another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignKey {
    /// The referencing table (schema-qualified on PostgreSQL).
    pub from_table: String,
    /// Its columns.
    pub from_columns: Vec<String>,
    /// The referenced table.
    pub to_table: String,
    /// What a delete of the referenced row does: `cascade`, `set null`, `set default`,
    /// `restrict`, `no action`.
    pub on_delete: String,
}

/// A table as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Its name (schema-qualified on PostgreSQL: `app.documents`; plain on SQLite).
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<Column>,
}

impl Table {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The user tables of a database and the foreign keys between them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Catalog {
    /// Every user table.
    pub tables: Vec<Table>,
    /// Every foreign key.
    pub foreign_keys: Vec<ForeignKey>,
}

impl Catalog {
    /// The table called `name` (`schema.table`, or `table` when unambiguous).
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name).or_else(|| {
            let mut found = self
                .tables
                .iter()
                .filter(|t| t.name.rsplit('.').next() == Some(name));
            let first = found.next();
            first.filter(|_| found.next().is_none())
        })
    }

    /// Checks that every table and column `layout` names exists; the first problem found.
    pub fn check(&self, layout: &Layout) -> Result<(), StoreError> {
        for (table, columns) in layout.tables() {
            let Some(found) = self.table(table) else {
                return Err(StoreError::Schema(format!(
                    "mapping: table {table} does not exist (or this role cannot see it)"
                )));
            };
            for column in columns {
                if found.column(column).is_none() {
                    let known: Vec<&str> = found.columns.iter().map(|c| c.name.as_str()).collect();
                    return Err(StoreError::Schema(format!(
                        "mapping: table {table} has no column {column} (it has {})",
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }
}
