//! Wiring: picks the store, builds the services and the router, binds the
//! listener and serves until asked to stop. The only module that knows
//! which concrete store is in use.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Config, Database, MailTransport};
use crate::domain::PasswordPolicy;
use crate::http::middleware::rate_limit;
use crate::http::pages::session::StoreBackedSessions;
use crate::http::pages::PortalSettings;
use crate::http::{self, AppState, CookieSettings, Limiters, RouterOptions};
use crate::services::lockout::LockoutPolicy;
use crate::services::passwords::Passwords;
use crate::services::tokens::Tokens;
use crate::services::{AdminService, Audit, AuthService, AuthSettings};
use crate::storage::mongo::MongoStore;
use crate::storage::sqlite::SqliteStore;
use crate::storage::Store;

/// Opens the configured store (SQLite file, or MongoDB when MONGO_URI is set).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.database {
        Database::Sqlite { url } => Arc::new(SqliteStore::connect(url).await?),
        Database::Mongo { uri } => Arc::new(MongoStore::connect(uri).await?),
    })
}

/// How long shutdown waits for queued audit events to reach the database
/// before giving up (it retries while the database is down).
const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

pub struct App {
    listener: TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    background: Vec<JoinHandle<()>>,
    audit: Audit,
}

impl App {
    /// Builds everything and binds `HOST:PORT` (port 0 picks a free one).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = open_store(&config).await?;
        // Not in `background`: it must outlive the server to drain the queue.
        let (audit, _audit_writer) = Audit::start(store.clone(), store.serialized_writes())
            .context("cannot start the audit writer")?;
        let (access_secret, refresh_secret) = jwt_secrets(&config)?;
        let tokens = Tokens::new(
            &access_secret,
            &refresh_secret,
            &config.app_url,
            &config.app_name,
            config.jwt_access_ttl,
        );
        let mailer: Arc<dyn crate::email::Mailer> = Arc::from(crate::email::from_config(
            &config.mail,
            !config.is_production(),
        )?);
        let auth = Arc::new(AuthService::new(
            Arc::clone(&store),
            Passwords::for_this_machine(),
            tokens,
            mailer,
            AuthSettings {
                app_name: config.app_name.clone(),
                app_url: config.app_url.clone(),
                refresh_ttl: config.jwt_refresh_ttl,
                reset_ttl: config.reset_token_ttl,
                password_policy: PasswordPolicy {
                    min_chars: config.password_min_length,
                },
                refresh_reuse_grace: config.refresh_reuse_grace,
                refresh_idle: config.refresh_idle_timeout,
                lockout: LockoutPolicy {
                    max_failures: config.login_max_failures,
                    window: config.login_failure_window,
                    first_lock: config.login_lockout,
                    max_lock: config.login_lockout_max,
                },
                require_verified_email: config.require_verified_email,
                verification_ttl: config.verification_token_ttl,
                mail_per_account_per_hour: config.mail_per_account_per_hour,
            },
            audit.clone(),
        ));
        let admin = Arc::new(AdminService::new(Arc::clone(&store), audit.clone()));
        let limiters = Limiters::new(
            config.rate_limit_auth_per_min,
            config.rate_limit_global_per_min,
        );
        let mut background = vec![
            rate_limit::spawn_cleanup(limiters.all()),
            spawn_purge(
                Arc::clone(&store),
                config
                    .login_failure_window
                    .max(config.login_lockout_max)
                    .max(Duration::from_secs(86_400)),
            ),
            crate::metrics::spawn_upkeep(crate::metrics::handle()),
        ];
        let web_sessions: Arc<dyn crate::storage::WebSessionStore> = store.clone();
        let router = http::router(
            AppState {
                auth,
                admin,
                cookies: CookieSettings::new(config.is_https(), config.is_production()),
                portal: Arc::new(PortalSettings {
                    app_name: config.app_name.clone(),
                    app_origin: origin_of(&config.app_url),
                    max_lifetime: config.session_max_lifetime,
                    min_password_length: config.password_min_length,
                    reset_minutes: config.reset_token_ttl.as_secs() / 60,
                }),
            },
            RouterOptions {
                cors_origins: config.cors_origins.clone(),
                hsts: config.is_https(),
                limiters,
                sessions: StoreBackedSessions::new(web_sessions),
                session_idle_timeout: config.session_idle_timeout,
                metrics_route: config.metrics_addr.is_none(),
                trusted_proxies: crate::http::middleware::client_ip::TrustedProxies(Arc::new(
                    config.trusted_proxies.clone(),
                )),
                body_timeout: config.http_body_timeout,
            },
        );
        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (HOST/PORT)"))?;
        if let Some(addr) = config.metrics_addr {
            let metrics_listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (METRICS_ADDR)"))?;
            tracing::info!(%addr, "metrics listening");
            // Same read timeouts as the main listener; it runs until the
            // background tasks are aborted at shutdown.
            background.push(tokio::spawn(crate::server::serve(
                metrics_listener,
                http::metrics_router(),
                config.http_header_timeout,
                std::future::pending(),
            )));
        }
        if let MailTransport::Outbox { dir } = &config.mail.transport {
            tracing::info!(outbox = %dir.display(), "no MAIL_SERVER: emails are written to the outbox");
        }
        tracing::info!(backend = store.backend(), "store ready");
        Ok(Self {
            listener,
            router,
            header_timeout: config.http_header_timeout,
            background,
            audit,
        })
    }

    /// The audit recorder, e.g. for tests to `flush` before reading.
    pub fn audit(&self) -> Audit {
        self.audit.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "listening");
        crate::server::serve(self.listener, self.router, self.header_timeout, shutdown).await;
        // In-flight requests are done; what they recorded must reach the
        // database before the process exits (and before the background
        // tasks stop).
        if tokio::time::timeout(AUDIT_FLUSH_TIMEOUT, self.audit.flush())
            .await
            .is_err()
        {
            tracing::error!("audit events still queued at exit: the database did not take them");
        }
        for task in self.background {
            task.abort();
        }
        Ok(())
    }
}

/// scheme://host[:port] of a base URL (what browsers send as Origin).
fn origin_of(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => url[..after_scheme + slash].to_owned(),
        None => url.to_owned(),
    }
}

/// Resolves when the process gets Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

/// Expired tokens are worthless; delete them hourly so tables stay small.
/// Login throttles are kept a day after their last failure, so a lock that
/// ends and is earned again right away still doubles.
fn spawn_purge(store: Arc<dyn Store>, throttle_memory: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let now = chrono::Utc::now();
            let idle_before = now
                - chrono::Duration::from_std(throttle_memory).unwrap_or(chrono::Duration::days(1));
            match store.purge_expired(now, idle_before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired tokens deleted"),
                Err(e) => tracing::warn!(error = %e, "purging expired tokens failed"),
            }
        }
    })
}

const SECRETS_FILE: &str = "jwt-secrets";

/// The configured JWT secrets, or (development only, when none are set)
/// secrets generated once and kept in the data directory so tokens survive
/// a restart. Config validation already refused production without them.
fn jwt_secrets(config: &Config) -> anyhow::Result<(SecretString, SecretString)> {
    if let (Some(a), Some(r)) = (&config.jwt_access_secret, &config.jwt_refresh_secret) {
        if config
            .jwt_access_secret
            .as_ref()
            .map(|s| s.expose_secret().len())
            < Some(crate::config::MIN_SECRET_BYTES)
        {
            tracing::warn!("JWT secrets shorter than 32 bytes: acceptable in development only");
        }
        return Ok((a.clone(), r.clone()));
    }
    let path = config.data_dir().join(SECRETS_FILE);
    let secrets = load_or_create_secrets(&path)?;
    tracing::warn!(
        file = %path.display(),
        "JWT_ACCESS_SECRET/JWT_REFRESH_SECRET not set: using generated development secrets from this file; \
         set both (and APP_ENV=production) before going live"
    );
    Ok(secrets)
}

fn load_or_create_secrets(path: &Path) -> anyhow::Result<(SecretString, SecretString)> {
    let parse = |text: &str| -> Option<(SecretString, SecretString)> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let access = lines.next()?.to_owned();
        let refresh = lines.next()?.to_owned();
        (access.len() >= 32 && refresh.len() >= 32 && access != refresh)
            .then(|| (SecretString::from(access), SecretString::from(refresh)))
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            return parse(&text).with_context(|| {
                format!(
                    "{} is damaged; delete it to generate new secrets",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let content = format!(
        "{}\n{}\n",
        crate::domain::token::random_token(),
        crate::domain::token::random_token()
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(content.as_bytes())?;
            file.sync_all()?;
        }
        // Another instance won the race: use what it wrote.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
    let text = std::fs::read_to_string(path)?;
    parse(&text).with_context(|| format!("{} is damaged", path.display()))
}
