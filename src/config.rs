//! Typed settings, read from the environment (and an optional `.env`) once
//! at start-up and validated there, so a bad value stops the process with one
//! line naming the variable instead of failing later mid-request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::domain::AuditKey;

mod store;
pub use store::{RateLimitBackend, SqliteSynchronous};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// How outgoing email leaves the process.
#[derive(Debug, Clone)]
pub enum MailTransport {
    Smtp {
        server: String,
        port: u16,
        username: Option<String>,
        password: Option<SecretString>,
        starttls: bool,
    },
    /// Each message becomes an `.eml` file: lets a newcomer follow the reset
    /// flow with no mail server at all.
    Outbox { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub from: String,
    pub transport: MailTransport,
    /// The whole of one delivery attempt, connect, TLS and every SMTP reply
    /// included (MAIL_TIMEOUT).
    pub timeout: Duration,
    /// How long after it was queued a message is still retried
    /// (MAIL_RETRY_FOR).
    pub retry_for: Duration,
    /// Delivery attempts in flight at once per instance (MAIL_CONCURRENCY).
    pub concurrency: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub app_name: String,
    /// Public base URL without a trailing slash; links in emails and the JWT
    /// issuer are built from it.
    pub app_url: String,
    pub host: IpAddr,
    pub port: u16,
    pub environment: Environment,
    pub database: Database,
    /// `None` means "generate and persist one" (development only).
    pub jwt_access_secret: Option<SecretString>,
    pub jwt_refresh_secret: Option<SecretString>,
    pub jwt_access_ttl: Duration,
    pub jwt_refresh_ttl: Duration,
    pub reset_token_ttl: Duration,
    pub cors_origins: Vec<String>,
    pub mail: MailConfig,
    pub rate_limit_auth_per_min: u32,
    pub rate_limit_global_per_min: u32,
    /// IPv6 clients are rate limited per network of this many bits
    /// (RATE_LIMIT_IPV6_PREFIX): one /64 is usually one site or host.
    pub rate_limit_ipv6_prefix: u8,
    pub password_min_length: usize,
    /// Where generated development secrets live (DATA_DIR).
    pub data_dir: PathBuf,
    /// Portal sign-out after this long without a request (HIPAA automatic
    /// log-off).
    pub session_idle_timeout: Duration,
    /// Portal sign-out this long after sign-in, however active.
    pub session_max_lifetime: Duration,
    /// Serve /metrics on this address instead of the main listener.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// When set, /metrics answers only `Authorization: Bearer <token>`
    /// (METRICS_TOKEN); without it or METRICS_ADDR, production keeps
    /// /metrics off the main listener.
    pub metrics_token: Option<SecretString>,
    /// Reverse proxies whose X-Forwarded-For is believed (TRUSTED_PROXIES).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// An API sign-in whose refresh token has not been used for this long
    /// is over (REFRESH_IDLE_TIMEOUT): the HIPAA automatic log-off for apps.
    pub refresh_idle_timeout: Duration,
    /// A rotated refresh token presented again this soon is a second tab,
    /// not a thief (REFRESH_REUSE_GRACE; zero means strict single use).
    pub refresh_reuse_grace: Duration,
    /// Failed sign-ins per email within `login_failure_window` before the
    /// email is locked (LOGIN_MAX_FAILURES).
    pub login_max_failures: u32,
    pub login_failure_window: Duration,
    /// First lock's length; each further lock doubles it, up to the max.
    pub login_lockout: Duration,
    pub login_lockout_max: Duration,
    /// Refuse sign-in until the email address is verified.
    pub require_verified_email: bool,
    pub verification_token_ttl: Duration,
    /// Reset and verification emails one account may be sent per hour,
    /// whatever the IPs asking (MAIL_PER_ACCOUNT_PER_HOUR).
    pub mail_per_account_per_hour: u32,
    /// How long a client has to send a request's headers, counted from the
    /// connection's start or the end of its previous response, so it also
    /// ends idle keep-alive connections (HTTP_HEADER_TIMEOUT; slowloris).
    pub http_header_timeout: Duration,
    /// How long a client has to send a whole request body once its headers
    /// are in (HTTP_BODY_TIMEOUT): a total, so trickling bytes does not
    /// extend it.
    pub http_body_timeout: Duration,
    /// Most client connections open at once on the main listener
    /// (MAX_CONNECTIONS); `None`: derived from the descriptor limit at start
    /// (`server::default_max_connections`).
    pub max_connections: Option<usize>,
    /// Keys the audit chain and signs its checkpoints (AUDIT_KEY). `None`
    /// means "generate and persist one" (development only).
    pub audit_key: Option<AuditKey>,
    /// Where signed checkpoints of the audit chain are appended
    /// (AUDIT_CHECKPOINT_FILE, default `<DATA_DIR>/audit-checkpoints`).
    pub audit_checkpoint_file: PathBuf,
    /// How often the chain's head is checkpointed while it moves
    /// (AUDIT_CHECKPOINT_INTERVAL).
    pub audit_checkpoint_interval: Duration,
    /// When a SQLite commit is on disk (SQLITE_SYNCHRONOUS).
    pub sqlite_synchronous: SqliteSynchronous,
    /// Where the per-IP rate-limit counters live (RATE_LIMIT_BACKEND).
    pub rate_limit_backend: RateLimitBackend,
}

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// Smallest JWT secret accepted in production: HS256 keys should carry at
/// least the hash's 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

impl Config {
    /// Reads the process environment, after loading `.env` from the working
    /// directory when there is one (real environment variables win).
    pub fn from_env() -> Result<Self, ConfigError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(err(".env", format!("cannot read the file: {e}"))),
        }
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Builds a configuration from explicit key/value pairs, as tests do.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::from_lookup(|key| map.get(key).cloned())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // Empty values count as unset, as in a `.env` copied from the example.
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let environment = match get("APP_ENV").as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(err(
                    "APP_ENV",
                    format!("expected development or production, got {other:?}"),
                ))
            }
        };
        let port = parse_num::<u16>("PORT", get("PORT"), 8000)?;
        let host = match get("HOST") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(v) => v
                .parse()
                .map_err(|_| err("HOST", format!("expected an IP address, got {v:?}")))?,
        };
        let app_url = match get("APP_URL") {
            None => format!("http://localhost:{port}"),
            Some(v) => parse_base_url("APP_URL", &v)?,
        };
        let database = match get("MONGO_URI") {
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
                let url =
                    get("DATABASE_URL").unwrap_or_else(|| "sqlite://data/clinic-auth.db".into());
                if !url.starts_with("sqlite:") {
                    return Err(err(
                        "DATABASE_URL",
                        "must start with sqlite:// (for MongoDB set MONGO_URI)",
                    ));
                }
                Database::Sqlite { url }
            }
        };

        let jwt_access_secret = get("JWT_ACCESS_SECRET").map(SecretString::from);
        let jwt_refresh_secret = get("JWT_REFRESH_SECRET").map(SecretString::from);
        check_secrets(
            environment,
            jwt_access_secret.as_ref(),
            jwt_refresh_secret.as_ref(),
        )?;
        let audit_key = parse_audit_key(environment, get("AUDIT_KEY"))?;

        let jwt_access_ttl =
            parse_duration_var("JWT_ACCESS_EXPIRES", get("JWT_ACCESS_EXPIRES"), "15m")?;
        let jwt_refresh_ttl =
            parse_duration_var("JWT_REFRESH_EXPIRES", get("JWT_REFRESH_EXPIRES"), "7d")?;
        if jwt_access_ttl.is_zero() {
            return Err(err("JWT_ACCESS_EXPIRES", "must be longer than zero"));
        }
        if jwt_refresh_ttl <= jwt_access_ttl {
            return Err(err(
                "JWT_REFRESH_EXPIRES",
                "must be longer than JWT_ACCESS_EXPIRES",
            ));
        }
        let reset_minutes = parse_num::<u64>(
            "RESET_TOKEN_EXPIRES_MIN",
            get("RESET_TOKEN_EXPIRES_MIN"),
            30,
        )?;
        if reset_minutes == 0 || reset_minutes > 24 * 60 {
            return Err(err(
                "RESET_TOKEN_EXPIRES_MIN",
                "must be between 1 and 1440 minutes",
            ));
        }

        let cors_origins = match get("CORS_ORIGINS") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(|o| parse_origin(o).map_err(|m| err("CORS_ORIGINS", m)))
                .collect::<Result<_, _>>()?,
        };

        let mail = MailConfig {
            from: get("MAIL_FROM").unwrap_or_else(|| "Clinic Auth <no-reply@localhost>".into()),
            transport: match get("MAIL_SERVER") {
                Some(server) => MailTransport::Smtp {
                    server,
                    port: parse_num::<u16>("MAIL_PORT", get("MAIL_PORT"), 587)?,
                    username: get("MAIL_USERNAME"),
                    password: get("MAIL_PASSWORD").map(SecretString::from),
                    starttls: parse_bool("MAIL_TLS", get("MAIL_TLS"), true)?,
                },
                None => MailTransport::Outbox {
                    dir: PathBuf::from(
                        get("MAIL_OUTBOX_DIR").unwrap_or_else(|| "data/outbox".into()),
                    ),
                },
            },
            timeout: parse_timeout_var("MAIL_TIMEOUT", get("MAIL_TIMEOUT"), "15s")?,
            retry_for: parse_duration_var("MAIL_RETRY_FOR", get("MAIL_RETRY_FOR"), "24h")?,
            concurrency: parse_num::<usize>("MAIL_CONCURRENCY", get("MAIL_CONCURRENCY"), 4)?,
        };
        if mail.retry_for.is_zero() {
            // Zero would give up on every message at its first failure.
            return Err(err("MAIL_RETRY_FOR", "must be above zero, e.g. 24h"));
        }
        if !(1..=64).contains(&mail.concurrency) {
            return Err(err("MAIL_CONCURRENCY", "must be between 1 and 64"));
        }
        if let Err(e) = mail.from.parse::<lettre::message::Mailbox>() {
            return Err(err("MAIL_FROM", format!("not a valid mailbox ({e})")));
        }

        let rate_limit_auth_per_min = parse_num::<u32>(
            "RATE_LIMIT_AUTH_PER_MIN",
            get("RATE_LIMIT_AUTH_PER_MIN"),
            10,
        )?;
        let rate_limit_global_per_min = parse_num::<u32>(
            "RATE_LIMIT_GLOBAL_PER_MIN",
            get("RATE_LIMIT_GLOBAL_PER_MIN"),
            300,
        )?;
        if rate_limit_auth_per_min == 0 {
            return Err(err("RATE_LIMIT_AUTH_PER_MIN", "must be at least 1"));
        }
        if rate_limit_global_per_min == 0 {
            return Err(err("RATE_LIMIT_GLOBAL_PER_MIN", "must be at least 1"));
        }
        let rate_limit_ipv6_prefix =
            parse_num::<u8>("RATE_LIMIT_IPV6_PREFIX", get("RATE_LIMIT_IPV6_PREFIX"), 64)?;
        if !(1..=128).contains(&rate_limit_ipv6_prefix) {
            return Err(err(
                "RATE_LIMIT_IPV6_PREFIX",
                "must be a prefix length between 1 and 128",
            ));
        }
        let password_min_length =
            parse_num::<usize>("PASSWORD_MIN_LENGTH", get("PASSWORD_MIN_LENGTH"), 12)?;
        if !(8..=64).contains(&password_min_length) {
            return Err(err(
                "PASSWORD_MIN_LENGTH",
                "must be between 8 and 64 (ASVS 6.2.1 asks for at least 8)",
            ));
        }

        let session_idle_timeout =
            parse_duration_var("SESSION_IDLE_TIMEOUT", get("SESSION_IDLE_TIMEOUT"), "15m")?;
        let session_max_lifetime =
            parse_duration_var("SESSION_MAX_LIFETIME", get("SESSION_MAX_LIFETIME"), "12h")?;
        if session_idle_timeout.is_zero() {
            return Err(err("SESSION_IDLE_TIMEOUT", "must be longer than zero"));
        }
        if session_max_lifetime < session_idle_timeout {
            return Err(err(
                "SESSION_MAX_LIFETIME",
                "must be at least SESSION_IDLE_TIMEOUT",
            ));
        }
        let trusted_proxies = match get("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| {
                    c.parse::<ipnet::IpNet>()
                        .or_else(|_| c.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            err(
                                "TRUSTED_PROXIES",
                                format!("{c:?} is not an IP address or CIDR"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let refresh_idle_timeout =
            parse_duration_var("REFRESH_IDLE_TIMEOUT", get("REFRESH_IDLE_TIMEOUT"), "30m")?;
        if refresh_idle_timeout <= jwt_access_ttl {
            return Err(err(
                "REFRESH_IDLE_TIMEOUT",
                "must be longer than JWT_ACCESS_EXPIRES, or apps that refresh when their \
                 access token expires would be signed out while in use",
            ));
        }
        let refresh_reuse_grace =
            parse_duration_var("REFRESH_REUSE_GRACE", get("REFRESH_REUSE_GRACE"), "5s")?;
        if refresh_reuse_grace > Duration::from_secs(60) {
            return Err(err(
                "REFRESH_REUSE_GRACE",
                "must be at most 60s: a longer grace lets a stolen token be replayed",
            ));
        }
        let login_max_failures =
            parse_num::<u32>("LOGIN_MAX_FAILURES", get("LOGIN_MAX_FAILURES"), 5)?;
        if login_max_failures == 0 {
            return Err(err("LOGIN_MAX_FAILURES", "must be at least 1"));
        }
        let login_failure_window =
            parse_duration_var("LOGIN_FAILURE_WINDOW", get("LOGIN_FAILURE_WINDOW"), "15m")?;
        let login_lockout = parse_duration_var("LOGIN_LOCKOUT", get("LOGIN_LOCKOUT"), "1m")?;
        let login_lockout_max =
            parse_duration_var("LOGIN_LOCKOUT_MAX", get("LOGIN_LOCKOUT_MAX"), "1h")?;
        for (var, value) in [
            ("LOGIN_FAILURE_WINDOW", login_failure_window),
            ("LOGIN_LOCKOUT", login_lockout),
        ] {
            if value.is_zero() {
                return Err(err(var, "must be longer than zero"));
            }
        }
        if login_lockout_max < login_lockout {
            return Err(err("LOGIN_LOCKOUT_MAX", "must be at least LOGIN_LOCKOUT"));
        }
        let require_verified_email = parse_bool(
            "REQUIRE_VERIFIED_EMAIL",
            get("REQUIRE_VERIFIED_EMAIL"),
            false,
        )?;
        let verification_token_ttl = parse_duration_var(
            "VERIFICATION_TOKEN_EXPIRES",
            get("VERIFICATION_TOKEN_EXPIRES"),
            "24h",
        )?;
        if verification_token_ttl.is_zero() {
            return Err(err(
                "VERIFICATION_TOKEN_EXPIRES",
                "must be longer than zero",
            ));
        }
        let mail_per_account_per_hour = parse_num::<u32>(
            "MAIL_PER_ACCOUNT_PER_HOUR",
            get("MAIL_PER_ACCOUNT_PER_HOUR"),
            3,
        )?;
        if mail_per_account_per_hour == 0 {
            // Zero would make a password reset impossible, not safer.
            return Err(err("MAIL_PER_ACCOUNT_PER_HOUR", "must be at least 1"));
        }
        let metrics_addr = match get("METRICS_ADDR") {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| {
                err(
                    "METRICS_ADDR",
                    format!("expected an address like 127.0.0.1:9100, got {v:?}"),
                )
            })?),
        };
        let metrics_token = get("METRICS_TOKEN").map(SecretString::from);
        if metrics_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().len() < MIN_SECRET_BYTES)
        {
            // A scrape token guards the whole metrics feed: as strong as a
            // JWT secret (`openssl rand -hex 32`).
            return Err(err(
                "METRICS_TOKEN",
                format!("must be at least {MIN_SECRET_BYTES} characters"),
            ));
        }
        let http_header_timeout =
            parse_timeout_var("HTTP_HEADER_TIMEOUT", get("HTTP_HEADER_TIMEOUT"), "10s")?;
        let http_body_timeout =
            parse_timeout_var("HTTP_BODY_TIMEOUT", get("HTTP_BODY_TIMEOUT"), "10s")?;
        let max_connections = match get("MAX_CONNECTIONS") {
            None => None,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Some(n),
                _ => {
                    return Err(err(
                        "MAX_CONNECTIONS",
                        format!("expected a whole number from 1 to 1000000, got {v:?}"),
                    ))
                }
            },
        };
        let data_dir = match get("DATA_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => default_data_dir(&database),
        };
        let audit_checkpoint_file = get("AUDIT_CHECKPOINT_FILE")
            .map_or_else(|| data_dir.join("audit-checkpoints"), PathBuf::from);
        let audit_checkpoint_interval = parse_timeout_var(
            "AUDIT_CHECKPOINT_INTERVAL",
            get("AUDIT_CHECKPOINT_INTERVAL"),
            "1m",
        )?;

        let sqlite_synchronous = store::sqlite_synchronous(get("SQLITE_SYNCHRONOUS"))?;
        let rate_limit_backend = store::rate_limit_backend(get("RATE_LIMIT_BACKEND"), &database)?;

        Ok(Self {
            sqlite_synchronous,
            rate_limit_backend,
            audit_key,
            audit_checkpoint_file,
            audit_checkpoint_interval,
            trusted_proxies,
            refresh_idle_timeout,
            refresh_reuse_grace,
            login_max_failures,
            login_failure_window,
            login_lockout,
            login_lockout_max,
            require_verified_email,
            verification_token_ttl,
            mail_per_account_per_hour,
            http_header_timeout,
            http_body_timeout,
            max_connections,
            metrics_addr,
            metrics_token,
            data_dir,
            session_idle_timeout,
            session_max_lifetime,
            app_name: get("APP_NAME").unwrap_or_else(|| "Clinic Auth".into()),
            app_url,
            host,
            port,
            environment,
            database,
            jwt_access_secret,
            jwt_refresh_secret,
            jwt_access_ttl,
            jwt_refresh_ttl,
            reset_token_ttl: Duration::from_secs(reset_minutes * 60),
            cors_origins,
            mail,
            rate_limit_auth_per_min,
            rate_limit_global_per_min,
            rate_limit_ipv6_prefix,
            password_min_length,
        })
    }

    /// True when the public URL is https: cookies get `Secure` and a prefix,
    /// responses get HSTS.
    pub fn is_https(&self) -> bool {
        self.app_url.starts_with("https://")
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }

    /// The directory for generated secrets.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
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

fn check_secrets(
    environment: Environment,
    access: Option<&SecretString>,
    refresh: Option<&SecretString>,
) -> Result<(), ConfigError> {
    match (access, refresh) {
        (None, None) if environment == Environment::Development => Ok(()),
        (None, _) => Err(err(
            "JWT_ACCESS_SECRET",
            "must be set (at least 32 bytes, e.g. `openssl rand -hex 32`)",
        )),
        (_, None) => Err(err(
            "JWT_REFRESH_SECRET",
            "must be set (at least 32 bytes, e.g. `openssl rand -hex 32`)",
        )),
        (Some(a), Some(r)) => {
            if environment == Environment::Production {
                for (var, secret) in [("JWT_ACCESS_SECRET", a), ("JWT_REFRESH_SECRET", r)] {
                    if secret.expose_secret().len() < MIN_SECRET_BYTES {
                        return Err(err(
                            var,
                            format!("must be at least {MIN_SECRET_BYTES} bytes in production"),
                        ));
                    }
                }
            }
            if a.expose_secret() == r.expose_secret() {
                return Err(err(
                    "JWT_REFRESH_SECRET",
                    "must differ from JWT_ACCESS_SECRET",
                ));
            }
            Ok(())
        }
    }
}

/// AUDIT_KEY: required in production (like the JWT secrets), optional in
/// development (a key is generated into the data directory). The value is
/// never echoed: it is a secret even when malformed.
fn parse_audit_key(
    environment: Environment,
    value: Option<String>,
) -> Result<Option<AuditKey>, ConfigError> {
    match value {
        None if environment == Environment::Production => Err(err(
            "AUDIT_KEY",
            "must be set in production: 64 hex characters (`openssl rand -hex 32`), \
             kept outside the database and its backups",
        )),
        None => Ok(None),
        Some(v) => AuditKey::from_hex(&v).map(Some).ok_or_else(|| {
            err(
                "AUDIT_KEY",
                "must be exactly 64 hex characters (32 bytes, e.g. `openssl rand -hex 32`)",
            )
        }),
    }
}

fn parse_num<T: std::str::FromStr>(
    var: &'static str,
    value: Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| err(var, format!("expected a whole number in range, got {v:?}"))),
    }
}

fn parse_bool(
    var: &'static str,
    value: Option<String>,
    default: bool,
) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(err(var, format!("expected true or false, got {other:?}"))),
    }
}

fn parse_duration_var(
    var: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let raw = value.unwrap_or_else(|| default.to_owned());
    parse_duration(&raw).ok_or_else(|| {
        err(
            var,
            format!("expected a duration like 30s, 15m, 12h or 7d, got {raw:?}"),
        )
    })
}

/// A network timeout: the usual durations, plus milliseconds (`500ms`) so
/// tests can use short ones; zero would refuse every request, so it is
/// refused here.
fn parse_timeout_var(
    var: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let raw = value.unwrap_or_else(|| default.to_owned());
    let parsed = match raw.trim().strip_suffix("ms") {
        Some(millis) if millis.bytes().all(|b| b.is_ascii_digit()) => millis
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms <= 86_400_000)
            .map(Duration::from_millis),
        Some(_) => None,
        None => parse_duration(&raw).filter(|d| *d <= Duration::from_secs(86_400)),
    };
    match parsed {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(err(
            var,
            format!(
                "expected a duration above zero and at most 1d, like 500ms, 10s or 1m, got {raw:?}"
            ),
        )),
    }
}

/// Parses `<number><unit>` with unit s, m, h or d (e.g. `15m`, `7d`, `0s`).
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = raw.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    // Ten years is far past any sensible token lifetime; rejecting more keeps
    // later timestamp arithmetic from overflowing.
    let total = number
        .checked_mul(seconds)
        .filter(|s| *s <= 10 * 365 * 86_400)?;
    Some(Duration::from_secs(total))
}

fn parse_base_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let trimmed = raw.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| {
            err(
                var,
                format!("must start with http:// or https://, got {raw:?}"),
            )
        })?;
    if rest.is_empty() || rest.contains(char::is_whitespace) || rest.contains(['?', '#']) {
        return Err(err(var, format!("not a valid base URL: {raw:?}")));
    }
    Ok(trimmed.to_owned())
}

/// An origin is scheme://host[:port] with nothing after it; browsers send
/// exactly that in the Origin header, so anything else could never match.
fn parse_origin(raw: &str) -> Result<String, String> {
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .ok_or_else(|| format!("origin {raw:?} must start with http:// or https://"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '*']) {
        return Err(format!(
            "{raw:?} is not an origin (scheme://host[:port], no path, no wildcard)"
        ));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
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

    fn dev(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_pairs(pairs)
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = dev(&[]).unwrap();
        assert_eq!(c.port, 8000);
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.app_url, "http://localhost:8000");
        assert_eq!(c.jwt_access_ttl, Duration::from_secs(15 * 60));
        assert_eq!(c.jwt_refresh_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(c.reset_token_ttl, Duration::from_secs(30 * 60));
        assert_eq!(
            c.database,
            Database::Sqlite {
                url: "sqlite://data/clinic-auth.db".into()
            }
        );
        assert_eq!(c.data_dir(), Path::new("data"));
        assert_eq!(
            (c.rate_limit_auth_per_min, c.rate_limit_global_per_min),
            (10, 300)
        );
        assert_eq!(c.rate_limit_ipv6_prefix, 64);
        assert_eq!(c.password_min_length, 12);
        assert_eq!(c.session_idle_timeout, Duration::from_secs(15 * 60));
        assert_eq!(c.session_max_lifetime, Duration::from_secs(12 * 3600));
        assert_eq!(c.refresh_reuse_grace, Duration::from_secs(5));
        assert_eq!(c.refresh_idle_timeout, Duration::from_secs(30 * 60));
        assert_eq!(c.login_max_failures, 5);
        assert_eq!(c.login_failure_window, Duration::from_secs(15 * 60));
        assert_eq!(
            (c.login_lockout, c.login_lockout_max),
            (Duration::from_secs(60), Duration::from_secs(3600))
        );
        assert!(!c.require_verified_email);
        assert_eq!(c.verification_token_ttl, Duration::from_secs(86_400));
        assert_eq!(c.mail_per_account_per_hour, 3);
        assert_eq!(c.http_header_timeout, Duration::from_secs(10));
        assert_eq!(c.http_body_timeout, Duration::from_secs(10));
        assert_eq!(c.max_connections, None, "derived from the fd limit");
        assert!(c.audit_key.is_none());
        assert_eq!(c.audit_checkpoint_file, Path::new("data/audit-checkpoints"));
        assert_eq!(c.audit_checkpoint_interval, Duration::from_secs(60));
        assert!(matches!(c.mail.transport, MailTransport::Outbox { .. }));
        assert_eq!(c.mail.timeout, Duration::from_secs(15));
        assert_eq!(c.mail.retry_for, Duration::from_secs(86_400));
        assert_eq!(c.mail.concurrency, 4);
        assert!(!c.is_https() && !c.is_production());
    }

    #[test]
    fn durations_take_unit_suffixes() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in [
            "",
            "15",
            "m",
            "-5m",
            "1.5h",
            "15 m",
            "10w",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_timeouts_take_milliseconds_too() {
        let c = dev(&[
            ("HTTP_HEADER_TIMEOUT", "250ms"),
            ("HTTP_BODY_TIMEOUT", "1m"),
        ])
        .unwrap();
        assert_eq!(c.http_header_timeout, Duration::from_millis(250));
        assert_eq!(c.http_body_timeout, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (pairs, var) in [
            (vec![("PORT", "eighty")], "PORT"),
            (vec![("PORT", "70000")], "PORT"),
            (vec![("JWT_ACCESS_EXPIRES", "soon")], "JWT_ACCESS_EXPIRES"),
            (vec![("JWT_REFRESH_EXPIRES", "1m")], "JWT_REFRESH_EXPIRES"),
            (
                vec![("REFRESH_IDLE_TIMEOUT", "10m")],
                "REFRESH_IDLE_TIMEOUT",
            ),
            (vec![("REFRESH_REUSE_GRACE", "2m")], "REFRESH_REUSE_GRACE"),
            (vec![("LOGIN_MAX_FAILURES", "0")], "LOGIN_MAX_FAILURES"),
            (vec![("LOGIN_LOCKOUT_MAX", "10s")], "LOGIN_LOCKOUT_MAX"),
            (
                vec![("REQUIRE_VERIFIED_EMAIL", "maybe")],
                "REQUIRE_VERIFIED_EMAIL",
            ),
            (
                vec![("MAIL_TLS", "maybe"), ("MAIL_SERVER", "smtp.example.com")],
                "MAIL_TLS",
            ),
            (
                vec![("CORS_ORIGINS", "http://ok.example, *")],
                "CORS_ORIGINS",
            ),
            (
                vec![("CORS_ORIGINS", "http://x.example/path")],
                "CORS_ORIGINS",
            ),
            (vec![("APP_URL", "localhost:8000")], "APP_URL"),
            (vec![("APP_ENV", "staging")], "APP_ENV"),
            (vec![("HOST", "my-host")], "HOST"),
            (vec![("MONGO_URI", "postgres://x")], "MONGO_URI"),
            (vec![("DATABASE_URL", "postgres://x")], "DATABASE_URL"),
            (vec![("MAIL_FROM", "not an address")], "MAIL_FROM"),
            (
                vec![("RATE_LIMIT_AUTH_PER_MIN", "0")],
                "RATE_LIMIT_AUTH_PER_MIN",
            ),
            (vec![("PASSWORD_MIN_LENGTH", "4")], "PASSWORD_MIN_LENGTH"),
            (
                vec![("RATE_LIMIT_IPV6_PREFIX", "0")],
                "RATE_LIMIT_IPV6_PREFIX",
            ),
            (
                vec![("RATE_LIMIT_IPV6_PREFIX", "129")],
                "RATE_LIMIT_IPV6_PREFIX",
            ),
            (
                vec![("RATE_LIMIT_IPV6_PREFIX", "/64")],
                "RATE_LIMIT_IPV6_PREFIX",
            ),
            (
                vec![("MAIL_PER_ACCOUNT_PER_HOUR", "0")],
                "MAIL_PER_ACCOUNT_PER_HOUR",
            ),
            (vec![("MAIL_TIMEOUT", "0s")], "MAIL_TIMEOUT"),
            (vec![("MAIL_TIMEOUT", "15")], "MAIL_TIMEOUT"),
            (vec![("MAIL_RETRY_FOR", "0s")], "MAIL_RETRY_FOR"),
            (vec![("MAIL_RETRY_FOR", "forever")], "MAIL_RETRY_FOR"),
            (vec![("MAIL_CONCURRENCY", "0")], "MAIL_CONCURRENCY"),
            (vec![("MAIL_CONCURRENCY", "65")], "MAIL_CONCURRENCY"),
            (
                vec![("RESET_TOKEN_EXPIRES_MIN", "0")],
                "RESET_TOKEN_EXPIRES_MIN",
            ),
            (
                vec![("JWT_ACCESS_SECRET", "only-one")],
                "JWT_REFRESH_SECRET",
            ),
            (vec![("SESSION_IDLE_TIMEOUT", "0s")], "SESSION_IDLE_TIMEOUT"),
            (vec![("METRICS_ADDR", "9100")], "METRICS_ADDR"),
            (vec![("METRICS_TOKEN", "short")], "METRICS_TOKEN"),
            (
                vec![("TRUSTED_PROXIES", "10.0.0.0/8, proxy")],
                "TRUSTED_PROXIES",
            ),
            (vec![("SESSION_MAX_LIFETIME", "1m")], "SESSION_MAX_LIFETIME"),
            (vec![("HTTP_HEADER_TIMEOUT", "0s")], "HTTP_HEADER_TIMEOUT"),
            (vec![("HTTP_HEADER_TIMEOUT", "0ms")], "HTTP_HEADER_TIMEOUT"),
            (vec![("HTTP_HEADER_TIMEOUT", "-1ms")], "HTTP_HEADER_TIMEOUT"),
            (vec![("HTTP_BODY_TIMEOUT", "10")], "HTTP_BODY_TIMEOUT"),
            (vec![("HTTP_BODY_TIMEOUT", "2d")], "HTTP_BODY_TIMEOUT"),
            (vec![("MAX_CONNECTIONS", "0")], "MAX_CONNECTIONS"),
            (vec![("MAX_CONNECTIONS", "lots")], "MAX_CONNECTIONS"),
            (vec![("AUDIT_KEY", "0123abcd")], "AUDIT_KEY"),
            (vec![("AUDIT_KEY", "z".repeat(64).as_str())], "AUDIT_KEY"),
            (
                vec![("AUDIT_CHECKPOINT_INTERVAL", "0s")],
                "AUDIT_CHECKPOINT_INTERVAL",
            ),
            (
                vec![("AUDIT_CHECKPOINT_INTERVAL", "often")],
                "AUDIT_CHECKPOINT_INTERVAL",
            ),
        ] {
            let e = dev(&pairs).unwrap_err();
            assert_eq!(e.var, var, "{pairs:?} -> {e}");
            assert!(e.to_string().starts_with(var));
        }
    }

    #[test]
    fn production_demands_strong_distinct_secrets() {
        let strong_a = "a".repeat(32);
        let strong_b = "b".repeat(32);
        let prod = |a: &str, r: &str| {
            let mut pairs = vec![("APP_ENV", "production")];
            if !a.is_empty() {
                pairs.push(("JWT_ACCESS_SECRET", a));
            }
            if !r.is_empty() {
                pairs.push(("JWT_REFRESH_SECRET", r));
            }
            dev(&pairs)
        };
        assert_eq!(prod("", "").unwrap_err().var, "JWT_ACCESS_SECRET");
        assert_eq!(
            prod(&strong_a, "short").unwrap_err().var,
            "JWT_REFRESH_SECRET"
        );
        assert_eq!(
            prod(&strong_a, &strong_a).unwrap_err().var,
            "JWT_REFRESH_SECRET"
        );
        // The audit key is required too, after the JWT secrets.
        assert_eq!(prod(&strong_a, &strong_b).unwrap_err().var, "AUDIT_KEY");
    }

    #[test]
    fn the_audit_key_is_read_and_never_shown() {
        let hex = "00112233445566778899aabbccddeeff".repeat(2);
        let c = dev(&[
            ("APP_ENV", "production"),
            ("JWT_ACCESS_SECRET", &"a".repeat(32)),
            ("JWT_REFRESH_SECRET", &"b".repeat(32)),
            ("AUDIT_KEY", &hex),
            ("DATA_DIR", "/var/lib/clinic-auth"),
            ("AUDIT_CHECKPOINT_INTERVAL", "250ms"),
        ])
        .unwrap();
        assert!(c.is_production());
        assert_eq!(
            c.audit_key.as_ref().map(AuditKey::to_hex),
            Some(hex.clone())
        );
        assert_eq!(
            c.audit_checkpoint_file,
            Path::new("/var/lib/clinic-auth/audit-checkpoints")
        );
        assert_eq!(c.audit_checkpoint_interval, Duration::from_millis(250));
        assert!(!format!("{c:?}").contains(&hex[..16]));
        let e = dev(&[("AUDIT_KEY", &format!("{hex}ff"))]).unwrap_err();
        assert!(!e.to_string().contains(&hex[..16]), "{e}");
        let c = dev(&[("AUDIT_CHECKPOINT_FILE", "/srv/audit/checkpoints")]).unwrap();
        assert_eq!(c.audit_checkpoint_file, Path::new("/srv/audit/checkpoints"));
    }

    #[test]
    fn mongo_uri_selects_mongodb_and_smtp_reads_its_settings() {
        let c = dev(&[
            ("MONGO_URI", "mongodb://localhost:27017/clinic_auth"),
            ("MAIL_SERVER", "smtp.example.com"),
            ("MAIL_PORT", "2525"),
            ("MAIL_TLS", "False"),
            ("MAIL_USERNAME", "mailer"),
            ("APP_URL", "https://auth.clinic.example/"),
            (
                "CORS_ORIGINS",
                "http://localhost:3000, https://app.clinic.example",
            ),
        ])
        .unwrap();
        assert!(matches!(c.database, Database::Mongo { .. }));
        assert!(matches!(
            c.mail.transport,
            MailTransport::Smtp {
                port: 2525,
                starttls: false,
                ..
            }
        ));
        assert_eq!(c.app_url, "https://auth.clinic.example");
        assert!(c.is_https());
        assert_eq!(
            c.cors_origins,
            vec!["http://localhost:3000", "https://app.clinic.example"]
        );
    }
}
