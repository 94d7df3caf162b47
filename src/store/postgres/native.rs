//! Native snapshots of PostgreSQL: `pg_dump --format=custom` of goldset's tables, read from the
//! snapshot our own transaction exports, and `pg_restore --single-transaction` to load one. The
//! client tools get the connection in `PG*` variables, never on a command line.

use super::super::{NativeCheck, NativeSnapshot, NativeTools, Result, StoreError};
use super::read::{embedding_models, inventory, Reading};
use super::PostgresStore;
use postgres::config::SslMode;
use postgres::IsolationLevel;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL client tool and the version it reports.
struct Tool {
    path: PathBuf,
    version: String,
}

/// Where `name` is: in `tools.pg_bin`, or on `PATH`.
fn tool_path(tools: &NativeTools, name: &str) -> PathBuf {
    match &tools.pg_bin {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// The major version in `pg_dump (PostgreSQL) 18.3` or in a `server_version_num` like 180003.
fn major(version: &str) -> Option<u32> {
    let number = version
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let digits: String = number.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u32 = digits.parse().ok()?;
    Some(if n >= 100_000 { n / 10_000 } else { n })
}

/// Runs a native tool, turning a failure into an error with its message.
fn run_tool(cmd: &mut Command, tool: &Path) -> Result<()> {
    let name = tool.display().to_string();
    let out = cmd.output().map_err(|e| StoreError::Tool {
        tool: name.clone(),
        reason: format!(
            "cannot run it: {e} (install the PostgreSQL client tools or pass --pg-bin DIR)"
        ),
    })?;
    if !out.status.success() {
        return Err(StoreError::Tool {
            tool: name,
            reason: format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(())
}

/// Checks a `pg_dump` custom archive without a database: `pg_restore --list` must read it and
/// find the data of goldset's three tables.
pub(in crate::store) fn check_archive(file: &Path, tools: &NativeTools) -> NativeCheck {
    let tool = tool_path(tools, "pg_restore");
    match Command::new(&tool).arg("--list").arg(file).output() {
        Ok(out) if out.status.success() => {
            let listing = String::from_utf8_lossy(&out.stdout);
            let tables = ["analyses", "chunks", "artifacts"];
            let missing: Vec<&str> = tables
                .iter()
                .copied()
                .filter(|t| {
                    !listing
                        .lines()
                        .any(|l| l.contains("TABLE DATA") && l.contains(t))
                })
                .collect();
            if missing.is_empty() {
                NativeCheck::Readable {
                    what: format!("pg_restore --list reads it; data of {}", tables.join(", ")),
                    found: None,
                }
            } else {
                NativeCheck::Unreadable(format!(
                    "the archive has no data for {}",
                    missing.join(", ")
                ))
            }
        }
        Ok(out) => NativeCheck::Unreadable(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => NativeCheck::Unchecked(format!(
            "cannot run {}: {e} (pass --pg-bin)",
            tool.display()
        )),
    }
}

impl PostgresStore {
    /// Finds a client tool (in `tools.pg_bin` or on `PATH`) and refuses one older than the server.
    fn tool(&mut self, tools: &NativeTools, name: &str) -> Result<Tool> {
        let path = tool_path(tools, name);
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .map_err(|e| StoreError::Tool {
                tool: path.display().to_string(),
                reason: format!(
                    "cannot run it: {e} (install the PostgreSQL client tools or pass --pg-bin DIR)"
                ),
            })?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let server: String = self
            .client
            .query_one("SHOW server_version_num", &[])?
            .get(0);
        if let (Some(t), Some(s)) = (major(&version), major(&server)) {
            if t < s {
                return Err(StoreError::Tool {
                    tool: path.display().to_string(),
                    reason: format!(
                        "{version} is older than the PostgreSQL {s} server; use the client tools of version {s} or newer (--pg-bin DIR)"
                    ),
                });
            }
        }
        Ok(Tool { path, version })
    }

    /// A command for a client tool, connected through `PG*` variables (the password never
    /// appears on a command line).
    fn command(&self, tool: &Path) -> Command {
        let c = &self.config;
        let mut cmd = Command::new(tool);
        for var in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
            "PGSSLMODE",
            "PGSERVICE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        if let Some(host) = c.get_hosts().first() {
            match host {
                postgres::config::Host::Tcp(h) => cmd.env("PGHOST", h),
                #[cfg(unix)]
                postgres::config::Host::Unix(p) => cmd.env("PGHOST", p),
            };
        }
        if let Some(port) = c.get_ports().first() {
            cmd.env("PGPORT", port.to_string());
        }
        if let Some(user) = c.get_user() {
            cmd.env("PGUSER", user);
        }
        if let Some(password) = c.get_password() {
            cmd.env("PGPASSWORD", String::from_utf8_lossy(password).into_owned());
        }
        if let Some(db) = c.get_dbname() {
            cmd.env("PGDATABASE", db);
        }
        cmd.env(
            "PGSSLMODE",
            match c.get_ssl_mode() {
                SslMode::Disable => "disable",
                SslMode::Require => "require",
                _ => "prefer",
            },
        );
        cmd.env("PGAPPNAME", "goldset");
        cmd
    }

    /// `pg_dump --format=custom` of goldset's tables into `target`, from one exported snapshot.
    pub(super) fn dump_native(
        &mut self,
        target: &Path,
        tools: &NativeTools,
    ) -> Result<NativeSnapshot> {
        let tool = self.tool(tools, "pg_dump")?;
        let mut cmd = self.command(&tool.path);
        cmd.arg("--format=custom")
            .arg("--no-owner")
            .arg("--no-privileges")
            .arg("--file")
            .arg(target);
        let n = &self.names;
        for table in [
            &n.analyses,
            &n.chunks,
            &n.artifacts,
            &n.cache,
            &n.migrations,
        ] {
            cmd.arg(format!("--table={table}"));
        }
        // pg_dump reads the snapshot our transaction exports, so the counts in the manifest are
        // those of the very rows it dumps, whatever commits meanwhile.
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let exported: String = tx.query_one("SELECT pg_export_snapshot()", &[])?.get(0);
        let reading = Reading {
            layout: &self.layout,
            names: n,
            model_table: false,
        };
        let held = inventory(&mut tx, &reading)?;
        let models = embedding_models(&mut tx, &reading)?;
        let version: i32 = tx
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {}", n.migrations),
                &[],
            )?
            .get(0);
        cmd.arg(format!("--snapshot={exported}"));
        run_tool(&mut cmd, &tool.path)?;
        tx.commit()?;
        Ok(NativeSnapshot {
            kind: "postgres-custom".into(),
            tool: tool.version,
            schema: Some(n.schema.clone()),
            schema_version: version as u32,
            inventory: held,
            embedding_models: models,
        })
    }

    /// `pg_restore --single-transaction --clean` of an archive, under the restore lock.
    pub(super) fn load_native(
        &mut self,
        source: &Path,
        snapshot: &NativeSnapshot,
        tools: &NativeTools,
    ) -> Result<()> {
        let tool = self.tool(tools, "pg_restore")?;
        if let (Some(dumped), Some(restorer)) = (major(&snapshot.tool), major(&tool.version)) {
            if dumped > restorer {
                return Err(StoreError::Tool {
                    tool: tool.path.display().to_string(),
                    reason: format!(
                        "{} is older than the {} that wrote the snapshot; use pg_restore {dumped} or newer (--pg-bin DIR)",
                        tool.version, snapshot.tool
                    ),
                });
            }
        }
        if snapshot.schema.as_deref() != Some(self.names.schema.as_str()) {
            return Err(StoreError::Refused(format!(
                "the snapshot holds schema {}; load it with --schema {0}",
                snapshot.schema.as_deref().unwrap_or("?")
            )));
        }
        // One restore at a time per schema, goldset's or a load.
        self.acquire_restore_lock()?;
        // The archive recreates goldset's tables (dropping the existing ones first) in one
        // transaction: a failed load changes nothing.
        let mut cmd = self.command(&tool.path);
        cmd.args([
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--no-privileges",
            "--clean",
            "--if-exists",
        ]);
        cmd.arg(format!(
            "--dbname={}",
            self.config.get_dbname().unwrap_or("postgres")
        ));
        cmd.arg(source);
        let loaded = run_tool(&mut cmd, &tool.path);
        self.release_restore_lock();
        loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions_of_tools_and_servers() {
        assert_eq!(major("pg_dump (PostgreSQL) 18.3"), Some(18));
        assert_eq!(major("pg_restore (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(major("180003"), Some(18));
        assert_eq!(major("no version here"), None);
    }

    #[test]
    fn a_missing_tool_is_named() {
        let tools = NativeTools {
            pg_bin: Some(PathBuf::from("/nonexistent/bin")),
        };
        match check_archive(Path::new("x.snapshot"), &tools) {
            NativeCheck::Unchecked(why) => assert!(why.contains("/nonexistent/bin/pg_restore")),
            other => panic!("{other:?}"),
        }
    }
}
