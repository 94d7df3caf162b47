//! Native snapshots of SQLite: the online backup API writes a consistent copy; a load checks
//! the file, copies it beside the database and swaps it in with one rename.

use super::super::layout::Layout;
use super::super::{schema, NativeCheck, NativeSnapshot, OpenOptions, Result, StoreError};
use super::read::{embedding_models, inventory, Reading};
use super::SqliteStore;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        let copied = self.copy_to(target);
        // The copy keeps no journal, but remove one should an older run or a failed open have
        // left it: nothing beside the temp file may outlive it.
        let mut journal = target.as_os_str().to_owned();
        journal.push("-journal");
        let _ = std::fs::remove_file(&journal);
        copied?;
        read_snapshot_file(target)
    }

    fn copy_to(&self, target: &Path) -> Result<()> {
        // Whatever the SQLite error says ("not an error" is what the destination connection
        // reports after a failed step), the cause is named with the file it concerns.
        let failed = |e: rusqlite::Error| {
            let os = std::io::Error::last_os_error();
            let cause = match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DiskFull) => "the disk is full".to_owned(),
                Some(rusqlite::ErrorCode::SystemIoFailure) => match os.raw_os_error() {
                    Some(n) if n != 0 => format!("writing failed: {os}"),
                    _ => format!("writing failed: {e}"),
                },
                _ => e.to_string(),
            };
            StoreError::file(target)(std::io::Error::other(cause))
        };
        let mut dst = rusqlite::Connection::open(target).map_err(failed)?;
        // No journal and no syncs: the temp file is thrown away on any failure, and the caller
        // fsyncs it before renaming it into place.
        dst.pragma_update(None, "journal_mode", "OFF")
            .map_err(failed)?;
        dst.pragma_update(None, "synchronous", "OFF")
            .map_err(failed)?;
        let backup = rusqlite::backup::Backup::new(&self.conn, &mut dst).map_err(failed)?;
        backup
            .run_to_completion(1024, Duration::from_millis(50), None)
            .map_err(failed)
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
        let temp = crate::ops::atomic::temp_file_in(&dir, "load-", ".tmp")
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
