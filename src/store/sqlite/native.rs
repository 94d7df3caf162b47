//! Native snapshots of SQLite: the online backup API writes a consistent copy; a load checks
//! the file, copies it beside the database and swaps it in with one rename.

use super::super::layout::Layout;
use super::super::{schema, NativeCheck, NativeSnapshot, OpenOptions, Result, StoreError};
use super::read::{embedding_models, inventory, Reading};
use super::SqliteStore;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

/// Checks a snapshot file (read-only): SQLite's own integrity check, a schema version this build
/// knows; and says what it holds.
pub(super) fn read_snapshot_file(path: &Path) -> Result<NativeSnapshot> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        return Err(StoreError::Corrupt(format!(
            "{}: integrity check: {integrity}",
            path.display()
        )));
    }
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let own = Layout::own(None);
    let reading = Reading {
        layout: &own,
        cache: schema::EMBEDDING_CACHE,
        model_table: None,
    };
    if version == 0 || version > schema::SCHEMA_VERSION {
        return Err(StoreError::Schema(format!(
            "{}: schema version {version}; this goldset reads 1..={}",
            path.display(),
            schema::SCHEMA_VERSION
        )));
    }
    Ok(NativeSnapshot {
        kind: "sqlite".into(),
        tool: format!("SQLite {}", rusqlite::version()),
        schema: None,
        schema_version: version,
        inventory: inventory(&conn, reading)?,
        embedding_models: embedding_models(&conn, reading)?,
    })
}

/// Checks a snapshot file without a database: [`read_snapshot_file`] as a verdict.
pub(in crate::store) fn check_file(path: &Path) -> NativeCheck {
    match read_snapshot_file(path) {
        Ok(found) => NativeCheck::Readable {
            what: "integrity_check ok, schema version known".into(),
            found: Some(found),
        },
        Err(e) => NativeCheck::Unreadable(e.to_string()),
    }
}

impl SqliteStore {
    /// Copies the database with the online backup API.
    pub(super) fn dump_native(&mut self, target: &Path) -> Result<NativeSnapshot> {
        // The online backup API copies a consistent state while others may read (and write);
        // the counts are read from the copy itself.
        self.conn
            .backup(rusqlite::DatabaseName::Main, target, None)?;
        read_snapshot_file(target)
    }

    /// Swaps the snapshot file in for the database, all or nothing.
    pub(super) fn load_native(&mut self, source: &Path, snapshot: &NativeSnapshot) -> Result<()> {
        // Copy next to the database, check the copy, then swap it in with one rename while
        // holding the write lock, so that no writer is half-way and no journal of the old file
        // is left to apply to the new.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(".goldset-load-")
            .tempfile_in(&dir)
            .map_err(StoreError::file(&dir))?;
        std::fs::copy(source, temp.path()).map_err(StoreError::file(source))?;
        temp.as_file()
            .sync_all()
            .map_err(StoreError::file(temp.path()))?;
        let found = read_snapshot_file(temp.path())?;
        if found.inventory != snapshot.inventory {
            return Err(StoreError::Corrupt(format!(
                "{} holds {}, but its manifest says {}; nothing was loaded",
                source.display(),
                found.inventory,
                snapshot.inventory
            )));
        }
        self.conn.execute_batch("BEGIN EXCLUSIVE")?;
        let swapped = temp
            .persist(&self.path)
            .map_err(|e| StoreError::file(&self.path)(e.error));
        let _ = self.conn.execute_batch("ROLLBACK");
        swapped?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::file(&dir))?;
        // Reopen on the new file (migrating it if it is older).
        let options = OpenOptions {
            create: false,
            ..Default::default()
        };
        *self = SqliteStore::open(&self.path.clone(), &options)?;
        Ok(())
    }
}
