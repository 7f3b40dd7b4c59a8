//! How the service uses its store beyond where it is: when a SQLite commit
//! counts as done (SQLITE_SYNCHRONOUS), and where the per-IP rate-limit
//! counters live (RATE_LIMIT_BACKEND), which decides whether several
//! instances on one store share one limit.

use super::{err, ConfigError, Database};

/// When a SQLite commit is on disk (SQLITE_SYNCHRONOUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// The WAL is fsynced at every commit: an answered write survives a
    /// power loss or an OS crash. The default: a rotated or revoked refresh
    /// token, a sign-out everywhere, a password change or a lockout must
    /// not come undone when the machine loses power.
    Full,
    /// fsync only at checkpoints: an answered write survives a crash of the
    /// process, but a power loss or an OS crash can undo the last commits
    /// (never corrupting the file).
    Normal,
}

/// Where the per-IP rate-limit counters live (RATE_LIMIT_BACKEND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitBackend {
    /// In each process: N instances allow N times the limit.
    Memory,
    /// In the database, shared by every instance on it.
    Store,
}

pub(super) fn sqlite_synchronous(value: Option<String>) -> Result<SqliteSynchronous, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("full") => Ok(SqliteSynchronous::Full),
        Some("normal") => Ok(SqliteSynchronous::Normal),
        Some(other) => Err(err(
            "SQLITE_SYNCHRONOUS",
            format!("expected full or normal, got {other:?}"),
        )),
    }
}

/// Unset: `memory` on SQLite (one machine, usually one instance), `store`
/// on MongoDB (chosen for several instances behind a balancer).
pub(super) fn rate_limit_backend(
    value: Option<String>,
    database: &Database,
) -> Result<RateLimitBackend, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(match database {
            Database::Sqlite { .. } => RateLimitBackend::Memory,
            Database::Mongo { .. } => RateLimitBackend::Store,
        }),
        Some("memory") => Ok(RateLimitBackend::Memory),
        Some("store") => Ok(RateLimitBackend::Store),
        Some(other) => Err(err(
            "RATE_LIMIT_BACKEND",
            format!("expected memory or store, got {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn commits_are_fsynced_unless_told_otherwise() {
        let config = |pairs: &[(&str, &str)]| Config::from_pairs(pairs).unwrap();
        assert_eq!(config(&[]).sqlite_synchronous, SqliteSynchronous::Full);
        for (value, expected) in [
            ("full", SqliteSynchronous::Full),
            ("NORMAL", SqliteSynchronous::Normal),
        ] {
            let c = config(&[("SQLITE_SYNCHRONOUS", value)]);
            assert_eq!(c.sqlite_synchronous, expected);
        }
    }

    #[test]
    fn rate_limits_are_shared_by_default_on_mongodb_only() {
        let config = |pairs: &[(&str, &str)]| Config::from_pairs(pairs).unwrap();
        let mongo = ("MONGO_URI", "mongodb://db.example/clinic");
        assert_eq!(config(&[]).rate_limit_backend, RateLimitBackend::Memory);
        assert_eq!(config(&[mongo]).rate_limit_backend, RateLimitBackend::Store);
        let c = config(&[("RATE_LIMIT_BACKEND", "store")]);
        assert_eq!(c.rate_limit_backend, RateLimitBackend::Store);
        let c = config(&[mongo, ("RATE_LIMIT_BACKEND", "memory")]);
        assert_eq!(c.rate_limit_backend, RateLimitBackend::Memory);
    }

    #[test]
    fn other_values_name_the_variable() {
        for (var, value) in [
            ("SQLITE_SYNCHRONOUS", "off"),
            ("SQLITE_SYNCHRONOUS", "extra"),
            ("RATE_LIMIT_BACKEND", "redis"),
        ] {
            let e = Config::from_pairs(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{e}");
            assert!(e.to_string().starts_with(var), "{e}");
        }
    }
}
