//! Connection settings: the URL first, then libpq's environment variables; schema names; the
//! quoting of identifiers. Nothing here talks to a server.

use super::super::{redact_url, Result, StoreError};
use postgres::config::SslMode;
use postgres::Config;
use std::str::FromStr;

/// The text of a PostgreSQL error, without anything from the connection string.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text += &format!(" ({detail})");
            }
            if let Some(hint) = db.hint() {
                text += &format!("; hint: {hint}");
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// `"identifier"`, with embedded quotes doubled.
pub(super) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Builds the connection configuration: the URL first, then libpq's environment variables.
pub(super) fn config(url: &str) -> Result<Config> {
    config_from(url, |name| {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    })
}

/// [`config`] with the environment given as a function, for tests.
fn config_from(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
    let invalid = |reason: String| StoreError::InvalidUrl {
        url: redact_url(url),
        reason,
    };
    let mut config = Config::from_str(url).map_err(|e| invalid(describe(&e)))?;
    if config.get_hosts().is_empty() {
        config.host(&env("PGHOST").unwrap_or_else(|| "localhost".into()));
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT") {
            config.port(
                port.parse()
                    .map_err(|_| invalid(format!("PGPORT {port:?} is not a port")))?,
            );
        }
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
    }
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(&db);
        }
    }
    if !url.contains("sslmode=") {
        if let Some(mode) = env("PGSSLMODE") {
            config.ssl_mode(match mode.as_str() {
                "disable" => SslMode::Disable,
                "allow" | "prefer" => SslMode::Prefer,
                "require" | "verify-ca" | "verify-full" => SslMode::Require,
                other => return Err(invalid(format!("PGSSLMODE {other:?} is not a known mode"))),
            });
        }
    }
    config.application_name(&env("PGAPPNAME").unwrap_or_else(|| "goldset".into()));
    Ok(config)
}

/// Refuses schema names that would need quoting games: letters, digits, underscores, ≤ 63.
pub(super) fn valid_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Schema(format!(
            "schema name {schema:?}: use letters, digits and underscores (at most 63)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with_env(url: &str, vars: &[(&str, &str)]) -> Result<Config> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config_from(url, |name| vars.get(name).cloned())
    }

    #[test]
    fn the_url_wins_and_the_environment_fills_the_rest() {
        let env = [
            ("PGHOST", "envhost"),
            ("PGPORT", "6543"),
            ("PGUSER", "envuser"),
            ("PGPASSWORD", "envpw"),
            ("PGDATABASE", "envdb"),
            ("PGSSLMODE", "disable"),
        ];
        let c = with_env("postgres://urluser@urlhost/urldb", &env).unwrap();
        assert_eq!(c.get_user(), Some("urluser"));
        assert_eq!(c.get_dbname(), Some("urldb"));
        assert_eq!(c.get_password(), Some(&b"envpw"[..]));
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        let c = with_env("postgres://", &env).unwrap();
        assert_eq!(c.get_hosts().len(), 1);
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_user(), Some("envuser"));
        assert_eq!(c.get_dbname(), Some("envdb"));
        assert_eq!(c.get_application_name(), Some("goldset"));
    }

    #[test]
    fn bad_settings_are_refused_without_the_password() {
        let e = with_env("postgres://u:s3cret@/db", &[("PGPORT", "x")]).unwrap_err();
        assert!(e.to_string().contains("PGPORT \"x\""), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = with_env("postgres://h/db", &[("PGSSLMODE", "sometimes")]).unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
    }

    #[test]
    fn schema_names_and_quoting() {
        assert!(valid_schema("golden_1").is_ok());
        for bad in ["", "1abc", "a-b", "a\"b", &"x".repeat(64)] {
            assert!(valid_schema(bad).is_err(), "{bad:?}");
        }
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
    }
}
