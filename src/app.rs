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

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Database, MailTransport, RateLimitBackend, SqliteSynchronous};
use crate::domain::AuditKey;
use crate::domain::PasswordPolicy;
use crate::http::middleware::rate_limit;
use crate::http::pages::csrf::AnonCsrfCookie;
use crate::http::pages::session::StoreBackedSessions;
use crate::http::pages::PortalSettings;
use crate::http::{self, AppState, CookieSettings, Limiters, RouterOptions};
use crate::services::checkpoints::Checkpointer;
use crate::services::health::WriteHealth;
use crate::services::lockout::LockoutPolicy;
use crate::services::outbox::{Outbox, OutboxSettings};
use crate::services::tokens::Tokens;
use crate::services::{AdminService, Audit, AuthSettings};
use crate::storage::mongo::MongoStore;
use crate::storage::sqlite::{self, SqliteStore};
use crate::storage::Store;

/// MFA_ENCRYPTION_KEY, configured or generated.
mod mfa_key;
mod services;
use services::Services;

/// Opens the configured store (SQLite file, or MongoDB when MONGO_URI is set).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store.database {
        Database::Sqlite { url } => {
            let synchronous = match config.store.sqlite_synchronous {
                SqliteSynchronous::Full => sqlite::SqliteSynchronous::Full,
                SqliteSynchronous::Normal => sqlite::SqliteSynchronous::Normal,
            };
            tracing::info!(synchronous = ?config.store.sqlite_synchronous, "SQLite commits");
            Arc::new(SqliteStore::connect_with(url, synchronous).await?)
        }
        Database::Mongo { uri } => Arc::new(MongoStore::connect(uri).await?),
    })
}

/// How long shutdown waits for queued audit events to reach the database
/// before giving up (it retries while the database is down).
const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// After giving up: how long the writer has to finish an append in flight
/// (SQLite's busy wait is 5 s) and log what it could not store.
const AUDIT_ABANDON_TIMEOUT: Duration = Duration::from_secs(8);

/// The METRICS_ADDR listener's connection cap: a scraper needs one or two,
/// and a flood there must not eat the main listener's descriptors.
const METRICS_MAX_CONNECTIONS: usize = 16;

pub struct App {
    listener: TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    max_connections: usize,
    background: Vec<JoinHandle<()>>,
    audit: Audit,
    /// Completes when the audit writer has ended.
    audit_writer: tokio::sync::oneshot::Receiver<()>,
    checkpointer: Arc<Checkpointer>,
    outbox: Arc<Outbox>,
    mail_timeout: Duration,
}

impl App {
    /// Builds everything and binds `HOST:PORT` (port 0 picks a free one).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// `build`, with every rule that depends on time asking `clock` (tests
    /// pass one they can move forward).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let metrics = crate::metrics::handle()?;
        let store = open_store(&config).await?;
        let audit_key = audit_key(&config)?;
        // Read (or generated) at start although no route uses it yet (issue
        // 18 in progress), so a damaged key file stops start-up rather than
        // the first enrolment.
        let _mfa_key = mfa_key::mfa_key(&config)?;
        // Opened before the first record is written: a keyed chain always
        // has its checkpoint file.
        let checkpointer = Arc::new(Checkpointer::open(
            store.clone(),
            audit_key.clone(),
            &config.audit.audit_checkpoint_file,
        )?);
        // Not in `background`: it must outlive the server to drain the queue.
        let (audit, audit_writer) =
            Audit::start(store.clone(), store.serialized_writes(), audit_key)
                .context("cannot start the audit writer")?;
        let audit = audit.with_clock(Arc::clone(&clock));
        let (access_secret, refresh_secret) = jwt_secrets(&config)?;
        let tokens = Tokens::new(
            &access_secret,
            &refresh_secret,
            &config.server.app_url,
            &config.server.app_name,
            config.tokens.jwt_access_ttl,
            Arc::clone(&clock),
        );
        let outbox = outbox(&config, &store, &refresh_secret, &clock)?;
        let services = Services::build(
            &store,
            tokens,
            &outbox,
            &audit,
            &clock,
            &AuthSettings {
                app_name: config.server.app_name.clone(),
                app_url: config.server.app_url.clone(),
                refresh_ttl: config.tokens.jwt_refresh_ttl,
                reset_ttl: config.tokens.reset_token_ttl,
                password_policy: PasswordPolicy {
                    min_chars: config.accounts.password_min_length,
                },
                refresh_reuse_grace: config.tokens.refresh_reuse_grace,
                refresh_idle: config.tokens.refresh_idle_timeout,
                lockout: LockoutPolicy {
                    max_failures: config.limits.login_max_failures,
                    window: config.limits.login_failure_window,
                    first_lock: config.limits.login_lockout,
                    max_lock: config.limits.login_lockout_max,
                },
                require_verified_email: config.accounts.require_verified_email,
                verification_ttl: config.tokens.verification_token_ttl,
                mail_per_account_per_hour: config.limits.mail_per_account_per_hour,
            },
        )?;
        let admin = Arc::new(AdminService::new(
            store.clone(),
            store.clone(),
            audit.clone(),
        ));
        let health = WriteHealth::new(audit.clone(), Arc::clone(&store));
        let counters = match config.limits.rate_limit_backend {
            RateLimitBackend::Memory => None,
            RateLimitBackend::Store => Some(rate_limit::SharedCounters::new(store.clone())),
        };
        tracing::info!(backend = ?config.limits.rate_limit_backend, "per-IP rate limits");
        let limiters = Limiters::new(
            config.limits.rate_limit_auth_per_min,
            config.limits.rate_limit_global_per_min,
            counters,
        );
        let mut background = vec![
            rate_limit::spawn_cleanup(limiters.all()),
            spawn_purge(
                Arc::clone(&store),
                Arc::clone(&clock),
                config
                    .limits
                    .login_failure_window
                    .max(config.limits.login_lockout_max)
                    .max(Duration::from_secs(86_400)),
            ),
            crate::metrics::spawn_upkeep(metrics.clone()),
            checkpointer.spawn(config.audit.audit_checkpoint_interval),
            outbox.spawn(),
            health.spawn(),
        ];
        let web_sessions: Arc<dyn crate::storage::WebSessionStore> = store.clone();
        let router = http::router(
            AppState {
                sessions: services.sessions,
                login: services.login,
                registration: services.registration,
                recovery: services.recovery,
                account: services.account,
                admin,
                health,
                cookies: CookieSettings::new(
                    config.is_https(),
                    config.is_production(),
                    Arc::clone(&clock),
                ),
                portal: Arc::new(PortalSettings {
                    app_name: config.server.app_name.clone(),
                    app_origin: origin_of(&config.server.app_url),
                    max_lifetime: config.sessions.session_max_lifetime,
                    min_password_length: config.accounts.password_min_length,
                    reset_minutes: config.tokens.reset_token_ttl.as_secs() / 60,
                }),
                clock: Arc::clone(&clock),
            },
            RouterOptions {
                cors_origins: config.server.cors_origins.clone(),
                hsts: config.is_https(),
                limiters,
                sessions: StoreBackedSessions::new(web_sessions, Arc::clone(&clock)),
                anon_csrf: AnonCsrfCookie::derived_from(&refresh_secret, config.is_https()),
                session_idle_timeout: config.sessions.session_idle_timeout,
                metrics: metrics_on_main_listener(&config),
                metrics_handle: metrics.clone(),
                client_ip: crate::http::middleware::client_ip::ClientIpPolicy::new(
                    &config.server.trusted_proxies,
                    config.limits.rate_limit_ipv6_prefix,
                ),
                body_timeout: config.server.http_body_timeout,
            },
        );
        let addr = SocketAddr::new(config.server.host, config.server.port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (HOST/PORT)"))?;
        if let Some(addr) = config.metrics.metrics_addr {
            let metrics_listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (METRICS_ADDR)"))?;
            tracing::info!(%addr, "metrics listening");
            // Same read timeouts as the main listener; it runs until the
            // background tasks are aborted at shutdown.
            background.push(tokio::spawn(crate::server::serve(
                metrics_listener,
                http::metrics_router(
                    match &config.metrics.metrics_token {
                        Some(token) => http::MetricsAccess::bearer(token),
                        None => http::MetricsAccess::Public,
                    },
                    metrics,
                ),
                config.server.http_header_timeout,
                METRICS_MAX_CONNECTIONS,
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
            header_timeout: config.server.http_header_timeout,
            max_connections: max_connections(&config),
            mail_timeout: config.mail.timeout,
            background,
            audit,
            audit_writer,
            checkpointer,
            outbox,
        })
    }

    /// The audit recorder, e.g. for tests to `flush` before reading.
    pub fn audit(&self) -> Audit {
        self.audit.clone()
    }

    /// The email outbox, e.g. for tests to wait until it has `settled`.
    pub fn outbox(&self) -> Arc<Outbox> {
        Arc::clone(&self.outbox)
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
        crate::server::serve(
            self.listener,
            self.router,
            self.header_timeout,
            self.max_connections,
            shutdown,
        )
        .await;
        // In-flight requests are done; what they recorded must reach the
        // database before the process exits (and before the background
        // tasks stop).
        if tokio::time::timeout(AUDIT_FLUSH_TIMEOUT, self.audit.flush())
            .await
            .is_err()
        {
            // The writer logs each event it holds ("audit event NOT
            // stored"), so the log stream keeps them, and how many.
            tracing::error!(
                target: "audit",
                "audit events still queued at exit: the database did not take them"
            );
            self.audit.abandon();
            let _ = tokio::time::timeout(AUDIT_ABANDON_TIMEOUT, self.audit_writer).await;
        }
        // The head we stop with, signed after the last event is stored.
        if let Err(e) = self.checkpointer.checkpoint().await {
            tracing::error!(target: "audit", error = format!("{e:#}"), "no audit checkpoint at shutdown");
        }
        // Attempts in flight may finish; whatever is left stays queued.
        self.outbox.stop(self.mail_timeout).await;
        for task in self.background {
            task.abort();
        }
        Ok(())
    }
}

/// Who may read /metrics on the main listener, said once in the log. It
/// carries request counts per route, lock and reuse counters: useful to an
/// attacker probing the service, so production never serves it there to
/// anyone (ASVS 5.0 13.4.5). METRICS_ADDR moves it to a listener of its
/// own; METRICS_TOKEN admits only a scraper holding the token.
fn metrics_on_main_listener(config: &Config) -> http::MetricsAccess {
    let with_token = config.metrics.metrics_token.is_some();
    let access = match (&config.metrics.metrics_addr, &config.metrics.metrics_token) {
        (Some(_), _) => http::MetricsAccess::Off,
        (None, Some(token)) => http::MetricsAccess::bearer(token),
        (None, None) if config.is_production() => http::MetricsAccess::Off,
        (None, None) => http::MetricsAccess::Public,
    };
    match (&access, config.metrics.metrics_addr) {
        (http::MetricsAccess::Off, Some(addr)) => {
            tracing::info!(%addr, bearer_token = with_token, "/metrics served on METRICS_ADDR only");
        }
        (http::MetricsAccess::Off, None) => tracing::info!(
            "/metrics is off: production without METRICS_ADDR or METRICS_TOKEN answers 404 there"
        ),
        (http::MetricsAccess::Bearer(_), _) => {
            tracing::info!("/metrics on the main listener, for the METRICS_TOKEN bearer only");
        }
        (http::MetricsAccess::Public, _) => {
            tracing::info!("/metrics is public on the main listener (development)");
        }
    }
    access
}

/// MAX_CONNECTIONS, or its default from the descriptor limit; said in the
/// log, with a warning when a set value leaves too few descriptors for the
/// rest of the process.
fn max_connections(config: &Config) -> usize {
    let limit = crate::server::descriptor_limit();
    let fits = crate::server::default_max_connections(limit);
    match config.server.max_connections {
        Some(set) if set > fits => {
            tracing::warn!(
                max_connections = set,
                descriptor_limit = limit,
                "MAX_CONNECTIONS is more than the descriptor limit leaves room for; \
                 a flood could still run the process out of descriptors"
            );
            set
        }
        Some(set) => {
            tracing::info!(max_connections = set, "connection cap");
            set
        }
        None => {
            tracing::info!(
                max_connections = fits,
                descriptor_limit = limit,
                "connection cap"
            );
            fits
        }
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

/// The email outbox over the configured transport (SMTP, or the `.eml`
/// directory without MAIL_SERVER: both go through the same queue).
fn outbox(
    config: &Config,
    store: &Arc<dyn Store>,
    refresh_secret: &SecretString,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<Arc<Outbox>> {
    let mailer: Arc<dyn crate::email::Mailer> = Arc::from(crate::email::from_config(
        &config.mail,
        !config.is_production(),
    )?);
    let from: lettre::message::Mailbox = config
        .mail
        .from
        .parse()
        .context("MAIL_FROM is not a valid mailbox")?;
    Ok(Outbox::new(
        store.clone(),
        store.clone(),
        mailer,
        crate::email::sealed::Sealer::derive_from(refresh_secret),
        OutboxSettings {
            app_name: config.server.app_name.clone(),
            app_url: config.server.app_url.clone(),
            message_id_domain: from.email.domain().to_owned(),
            timeout: config.mail.timeout,
            retry_for: config.mail.retry_for,
            concurrency: config.mail.concurrency,
        },
        Arc::clone(clock),
    ))
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
fn spawn_purge(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    throttle_memory: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let now = clock.now();
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
    if let (Some(a), Some(r)) = (
        &config.tokens.jwt_access_secret,
        &config.tokens.jwt_refresh_secret,
    ) {
        if config
            .tokens
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
    let text = load_or_create_file(path, || {
        format!(
            "{}\n{}\n",
            crate::domain::token::random_token(),
            crate::domain::token::random_token()
        )
    })?;
    parse(&text).with_context(|| {
        format!(
            "{} is damaged; delete it to generate new secrets",
            path.display()
        )
    })
}

const AUDIT_KEY_FILE: &str = "audit-key";

/// The configured AUDIT_KEY, or (development only, when none is set) a key
/// generated once and kept in the data directory, so the chain stays
/// verifiable across restarts. Config validation already refused production
/// without one. The service and the CLI both load it here, so both key the
/// chain alike.
pub fn audit_key(config: &Config) -> anyhow::Result<AuditKey> {
    if let Some(key) = &config.audit.audit_key {
        return Ok(key.clone());
    }
    let path = config.data_dir().join(AUDIT_KEY_FILE);
    let text = load_or_create_file(&path, || format!("{}\n", AuditKey::generate().to_hex()))?;
    // Never replaced when damaged: a new key would make every keyed record
    // fail verification.
    let key = AuditKey::from_hex(&text).with_context(|| {
        format!(
            "{} is damaged (it must hold 64 hex characters); restore it from a backup",
            path.display()
        )
    })?;
    tracing::warn!(
        file = %path.display(),
        "AUDIT_KEY not set: keying the audit trail with the generated development key from this file; \
         set AUDIT_KEY (and APP_ENV=production) before going live"
    );
    Ok(key)
}

/// The text of `path`, first creating it (0600, its directory 0700) with
/// `make()` when it does not exist. Another process creating it at the same
/// moment wins, and both read what it wrote.
fn load_or_create_file(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_fs::create_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match crate::private_fs::file_options()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(make().as_bytes())?;
            file.sync_all()?;
        }
        // Another instance won the race: use what it wrote.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
