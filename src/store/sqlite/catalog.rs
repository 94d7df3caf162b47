//! The SQLite catalog: tables from `sqlite_master`, columns from `PRAGMA table_info`, foreign
//! keys from `PRAGMA foreign_key_list`. Read-only.

use super::super::catalog::{Catalog, Column, ForeignKey, Table};
use super::super::layout::quote_name;
use super::super::Result;
use rusqlite::Connection;

/// Reads the catalog of every user table (goldset's own bookkeeping tables left out).
pub(super) fn read(conn: &Connection) -> Result<Catalog> {
    let mut names = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table'
            AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE 'goldset\\_%' ESCAPE '\\'
          ORDER BY name",
    )?;
    let names: Vec<String> = names
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut catalog = Catalog::default();
    for name in names {
        let mut info = conn.prepare(&format!("PRAGMA table_info({})", quote_name(&name)))?;
        let columns = info
            .query_map([], |r| {
                let sql_type = r.get::<_, String>(2)?.to_lowercase();
                let primary_key = r.get::<_, i64>(5)? != 0;
                Ok(Column {
                    name: r.get(1)?,
                    not_null: r.get::<_, i64>(3)? != 0,
                    // An INTEGER PRIMARY KEY is the rowid: SQLite assigns it.
                    has_default: r.get::<_, Option<String>>(4)?.is_some()
                        || (primary_key && sql_type == "integer"),
                    sql_type,
                    primary_key,
                    allowed: Vec::new(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut keys = conn.prepare(&format!("PRAGMA foreign_key_list({})", quote_name(&name)))?;
        let mut by_id: Vec<(i64, ForeignKey)> = Vec::new();
        let mut rows = keys.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let column: String = r.get(3)?;
            let to: Option<String> = r.get(4)?;
            match by_id.iter_mut().find(|(k, _)| *k == id) {
                Some((_, key)) => {
                    key.from_columns.push(column);
                    key.to_columns.extend(to);
                }
                None => by_id.push((
                    id,
                    ForeignKey {
                        from_table: name.clone(),
                        from_columns: vec![column],
                        to_columns: to.into_iter().collect(),
                        to_table: r.get(2)?,
                        on_delete: r.get::<_, String>(6)?.to_lowercase(),
                    },
                )),
            }
        }
        catalog
            .foreign_keys
            .extend(by_id.into_iter().map(|(_, key)| key));
        catalog.tables.push(Table { name, columns });
    }
    Ok(catalog)
}
