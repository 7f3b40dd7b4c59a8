//! Where the data lives and how the service uses its store: the database
//! (SQLite file, or MongoDB when MONGO_URI is set), when a SQLite commit
//! counts as done (SQLITE_SYNCHRONOUS), where generated development secrets
//! are kept (DATA_DIR), and where the per-IP rate-limit counters live
//! (RATE_LIMIT_BACKEND), which decides whether several instances on one
//! store share one limit.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{err, ConfigError, Vars};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub database: Database,
    /// When a SQLite commit is on disk (SQLITE_SYNCHRONOUS).
    pub sqlite_synchronous: SqliteSynchronous,
    /// Where generated development secrets live (DATA_DIR).
    pub data_dir: PathBuf,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct StoreVars {
    mongo_uri: Option<String>,
    database_url: Option<String>,
    sqlite_synchronous: Option<String>,
    data_dir: Option<String>,
}

impl StoreConfig {
    pub(super) fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let v: StoreVars = vars.read()?;
        let database = match v.mongo_uri {
            Some(uri) => {
                if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
                    return Err(err(
                        "MONGO_URI",
                        "must start with mongodb:// or mongodb+srv://",
                    ));
                }
                Database::Mongo { uri }
            }
            None => {
                let url = v
                    .database_url
                    .unwrap_or_else(|| "sqlite://data/clinic-auth.db".into());
                if !url.starts_with("sqlite:") {
                    return Err(err(
                        "DATABASE_URL",
                        "must start with sqlite:// (for MongoDB set MONGO_URI)",
                    ));
                }
                Database::Sqlite { url }
            }
        };
        let data_dir = v
            .data_dir
            .map_or_else(|| default_data_dir(&database), PathBuf::from);
        Ok(Self {
            sqlite_synchronous: sqlite_synchronous(v.sqlite_synchronous)?,
            database,
            data_dir,
        })
    }
}

/// Beside the SQLite file, or `data/` when the database is elsewhere.
fn default_data_dir(database: &Database) -> PathBuf {
    match database {
        Database::Sqlite { url } => {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap_or_default();
            match Path::new(path).parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            }
        }
        Database::Mongo { .. } => PathBuf::from("data"),
    }
}

/// Where the service keeps its data.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// Embedded SQLite file (the zero-setup default).
    Sqlite { url: String },
    /// MongoDB, selected by a non-empty MONGO_URI. The URI may carry a
    /// password: `Debug` shows it redacted.
    Mongo { uri: String },
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite { url } => f.debug_struct("Sqlite").field("url", url).finish(),
            Database::Mongo { uri } => f
                .debug_struct("Mongo")
                .field("uri", &redacted_uri(uri))
                .finish(),
        }
    }
}

/// A connection string with its credentials blanked: the user info before
/// `@`, and the value of any query option whose name mentions a password
/// (e.g. `tlsCertificateKeyFilePassword`).
pub fn redacted_uri(uri: &str) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("", uri));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    let userinfo = if authority.contains('@') {
        "[REDACTED]@"
    } else {
        ""
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let query: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.to_ascii_lowercase().contains("password") => {
                format!("{k}=[REDACTED]")
            }
            _ => pair.to_owned(),
        })
        .collect();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    format!("{scheme}://{userinfo}{hosts}{path}{query}")
}

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

fn sqlite_synchronous(value: Option<String>) -> Result<SqliteSynchronous, ConfigError> {
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
    fn debug_output_hides_mongo_credentials() {
        let c = Config::from_pairs(&[(
            "MONGO_URI",
            "mongodb://clinic:s3cret-pw@db1:27017,db2/clinic_auth?replicaSet=rs0&tlsCertificateKeyFilePassword=k3y-pw",
        )])
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cret-pw"), "{printed}");
        assert!(!printed.contains("k3y-pw"), "{printed}");
        assert!(
            printed.contains("mongodb://[REDACTED]@db1:27017,db2/clinic_auth?replicaSet=rs0"),
            "{printed}"
        );
        assert_eq!(
            redacted_uri("mongodb://localhost:27017/clinic_auth"),
            "mongodb://localhost:27017/clinic_auth"
        );
        assert_eq!(
            redacted_uri("mongodb+srv://u:p@cluster.example"),
            "mongodb+srv://[REDACTED]@cluster.example"
        );
    }

    #[test]
    fn the_data_dir_sits_beside_the_sqlite_file() {
        let dir = |pairs: &[(&str, &str)]| Config::from_pairs(pairs).unwrap().store.data_dir;
        assert_eq!(dir(&[]), Path::new("data"));
        assert_eq!(
            dir(&[("DATABASE_URL", "sqlite:///var/lib/ca/auth.db?mode=rwc")]),
            Path::new("/var/lib/ca")
        );
        assert_eq!(dir(&[("DATABASE_URL", "sqlite:auth.db")]), Path::new("."));
        assert_eq!(dir(&[("DATA_DIR", "/srv/ca")]), Path::new("/srv/ca"));
        // The database URL is not read when MongoDB is chosen.
        let mongo = ("MONGO_URI", "mongodb://db.example/clinic");
        assert_eq!(
            dir(&[mongo, ("DATABASE_URL", "postgres://x")]),
            Path::new("data")
        );
    }

    #[test]
    fn commits_are_fsynced_unless_told_otherwise() {
        let config = |pairs: &[(&str, &str)]| Config::from_pairs(pairs).unwrap();
        assert_eq!(
            config(&[]).store.sqlite_synchronous,
            SqliteSynchronous::Full
        );
        for (value, expected) in [
            ("full", SqliteSynchronous::Full),
            ("NORMAL", SqliteSynchronous::Normal),
        ] {
            let c = config(&[("SQLITE_SYNCHRONOUS", value)]);
            assert_eq!(c.store.sqlite_synchronous, expected);
        }
    }

    #[test]
    fn rate_limits_are_shared_by_default_on_mongodb_only() {
        let config = |pairs: &[(&str, &str)]| Config::from_pairs(pairs).unwrap();
        let mongo = ("MONGO_URI", "mongodb://db.example/clinic");
        assert_eq!(
            config(&[]).limits.rate_limit_backend,
            RateLimitBackend::Memory
        );
        assert_eq!(
            config(&[mongo]).limits.rate_limit_backend,
            RateLimitBackend::Store
        );
        let c = config(&[("RATE_LIMIT_BACKEND", "store")]);
        assert_eq!(c.limits.rate_limit_backend, RateLimitBackend::Store);
        let c = config(&[mongo, ("RATE_LIMIT_BACKEND", "memory")]);
        assert_eq!(c.limits.rate_limit_backend, RateLimitBackend::Memory);
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
