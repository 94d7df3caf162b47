//! The restore lock: a session-level advisory lock per schema, so that one restore (or load)
//! at a time writes into it. Other tools can take the same key to keep restores out.

use super::super::{Result, StoreError};
use super::PostgresStore;
use std::hash::Hasher;

/// The key of the lock a restore into `schema` holds: FNV-1a (64-bit) of `goldset:SCHEMA`,
/// stable across runs, machines and goldset versions.
pub fn lock_key(schema: &str) -> i64 {
    let mut h = fnv::FnvHasher::default();
    h.write(b"goldset:");
    h.write(schema.as_bytes());
    h.finish() as i64
}

impl PostgresStore {
    /// Takes this schema's restore lock: waits for it (saying who holds it) or, without
    /// `wait_for_lock`, fails at once naming the holder.
    pub(super) fn acquire_restore_lock(&mut self) -> Result<()> {
        let key = self.names.lock_key;
        let locked: bool = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
            .get(0);
        if !locked {
            let holder = self.lock_holder()?;
            if !self.wait_for_lock {
                return Err(StoreError::Locked(format!(
                    "another restore into schema {} is running: {holder} holds its lock (retry later, or use --wait)",
                    self.names.schema
                )));
            }
            tracing::warn!(
                "waiting for another restore into schema {}: {holder}",
                self.names.schema
            );
            self.client
                .execute("SELECT pg_advisory_lock($1)", &[&key])?;
        }
        Ok(())
    }

    /// Gives the restore lock back (a closed connection gives it back too).
    pub(super) fn release_restore_lock(&mut self) {
        let _ = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.names.lock_key]);
    }

    /// Who holds this schema's restore lock, for the message.
    fn lock_holder(&mut self) -> Result<String> {
        let key = self.names.lock_key;
        let row = self.client.query_opt(
            "SELECT a.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''),
                    coalesce(host(a.client_addr), 'local'), to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ')
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                AND l.classid = (($1::bigint >> 32) & 4294967295)::oid
                AND l.objid = ($1::bigint & 4294967295)::oid",
            &[&key],
        )?;
        let Some(r) = row else {
            return Ok("another session".into());
        };
        let text = |i: usize| r.try_get::<_, String>(i).unwrap_or_default();
        Ok(format!(
            "pid {} (user {}, application {}, from {}, connected since {})",
            r.try_get::<_, i32>(0).unwrap_or_default(),
            text(1),
            text(2),
            text(3),
            text(4)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_differ_by_schema() {
        // Published: other tools take this key to keep restores out; it must never change.
        assert_eq!(lock_key("public"), -5_389_081_019_829_537_460);
        assert_ne!(lock_key("public"), lock_key("golden"));
    }
}
