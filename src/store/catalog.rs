//! What a database's catalog says about its tables: names, column types, nullability, defaults
//! and foreign keys. `goldset adopt` proposes a mapping from it; a store checks a mapping
//! against it before reading or writing anything.

use super::layout::{quote_name, Layout};
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
    /// The referenced columns (empty on SQLite when the key names the primary key implicitly).
    pub to_columns: Vec<String>,
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

impl Catalog {
    /// Foreign keys from tables outside `mapped` onto `table` (names as a mapping writes them).
    pub fn references_into(&self, table: &str, mapped: &[&str]) -> Vec<&ForeignKey> {
        let resolve = |name: &str| self.table(name).map(|t| t.name.as_str());
        let Some(target) = resolve(table) else {
            return Vec::new();
        };
        let mapped: Vec<&str> = mapped.iter().filter_map(|m| resolve(m)).collect();
        self.foreign_keys
            .iter()
            .filter(|k| k.to_table == target && !mapped.contains(&k.from_table.as_str()))
            .collect()
    }

    /// The columns `key` references: as declared, or the referenced table's primary key.
    pub fn referenced_columns(&self, key: &ForeignKey) -> Vec<String> {
        if !key.to_columns.is_empty() {
            return key.to_columns.clone();
        }
        self.table(&key.to_table)
            .map(|t| {
                t.columns
                    .iter()
                    .filter(|c| c.primary_key)
                    .map(|c| c.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `SELECT count(*)` of the rows of `key`'s table that reference rows of `table` (alias
    /// `t`) matching `filter` (a `WHERE …` clause, or empty).
    pub fn referencing_rows_sql(&self, key: &ForeignKey, table: &str, filter: &str) -> String {
        let list = |alias: &str, columns: &[String]| {
            columns
                .iter()
                .map(|c| format!("{alias}.{}", quote_name(c)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "SELECT count(*) FROM {} f WHERE ({}) IN (SELECT {} FROM {} t {filter})",
            quote_name(&key.from_table),
            list("f", &key.from_columns),
            list("t", &self.referenced_columns(key)),
            quote_name(table)
        )
    }
}

impl Catalog {
    /// Refuses a restore into `layout`'s tables when one of them has a NOT NULL column without
    /// a default that is neither mapped nor filled (`[mapping.fill]`): the first insert would
    /// fail, so say which before anything is written.
    pub fn check_required_columns(&self, layout: &Layout) -> Result<(), StoreError> {
        let mut missing = Vec::new();
        for (table, columns) in layout.tables() {
            let Some(t) = self.table(table) else {
                continue;
            };
            let filled = layout.fill.get(table);
            for c in &t.columns {
                if c.not_null
                    && !c.has_default
                    && !columns.contains(&c.name.as_str())
                    && !filled.is_some_and(|f| f.contains_key(&c.name))
                {
                    missing.push(format!("{}.{}", t.name, c.name));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(StoreError::Refused(format!(
            "{} NOT NULL with no default and not in the mapping: give a value in [mapping.fill.\"TABLE\"] (nothing was changed)",
            missing.join(", ")
        )))
    }
}

/// Why deleting rows that other tables reference is refused (or, for `CASCADE` / `SET NULL`
/// with the user's consent, allowed): the message names the tables and the rows at stake.
pub fn cascade_refusal(key: &ForeignKey, rows: i64, allow: bool) -> Option<StoreError> {
    let action = key.on_delete.as_str();
    let blocked = matches!(action, "restrict" | "no action");
    if rows == 0 || (allow && !blocked) {
        return None;
    }
    let what = match action {
        "cascade" => "they would be deleted too",
        "set null" | "set default" => "their reference would be cleared",
        _ => "the application's key forbids the delete",
    };
    let advice = if blocked {
        "remove or re-point them first"
    } else {
        "pass --allow-cascade to go ahead"
    };
    Some(StoreError::Refused(format!(
        "the restore would delete rows of {} that {rows} rows of {} reference (ON DELETE {}: {what}); nothing was changed ({advice})",
        key.to_table,
        key.from_table,
        action.to_uppercase()
    )))
}
