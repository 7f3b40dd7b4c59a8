//! Wiring: opens the store, builds the services and the router, binds the
//! listener and serves until asked to stop. `app` is the only module that
//! knows which concrete store is in use (`app/store.rs` opens it); the
//! parts that are not wiring live beside it under `app/`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, MailTransport, RateLimitBackend};
use crate::http::middleware::rate_limit;
use crate::http::pages::csrf::AnonCsrfCookie;
use crate::http::pages::session::StoreBackedSessions;
use crate::http::pages::PortalSettings;
use crate::http::{self, AppState, CookieSettings, Limiters, RouterOptions};
use crate::services::checkpoints::Checkpointer;
use crate::services::health::WriteHealth;
use crate::services::key_rotation::KeyRotation;
use crate::services::outbox::Outbox;
use crate::services::signing_keys::KeyRing;
use crate::services::tokens::{AccessKeys, Tokens};
use crate::services::{AdminService, Audit};

/// Where the listeners' connection caps and /metrics access are decided.
mod listeners;
/// The JWT secrets and the audit key, configured or generated.
mod secrets;
/// The use-cases, built from the store and the configuration.
mod services;
/// Opening the configured store.
mod store;
/// The purge of expired rows and the shutdown signal.
mod tasks;

pub use secrets::{audit_key, mfa_key};
pub(crate) use services::CliServices;
pub use store::open_store;
pub use tasks::shutdown_signal;

use services::Services;

/// How long shutdown waits for queued audit events to reach the database
/// before giving up (it retries while the database is down).
const AUDIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// After giving up: how long the writer has to finish an append in flight
/// (SQLite's busy wait is 5 s) and log what it could not store.
const AUDIT_ABANDON_TIMEOUT: Duration = Duration::from_secs(8);

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
        // Read (or generated) at start, so a damaged key file stops
        // start-up rather than the first sign-in that needs it.
        let mfa_key = secrets::mfa_key(&config)?;
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
        let (access_secret, refresh_secret) = secrets::jwt_secrets(&config)?;
        // Made (first start) and loaded before the listener binds: a key
        // that does not open with MFA_ENCRYPTION_KEY stops start-up.
        let signing_keys = KeyRing::start(
            store.clone(),
            mfa_key.clone(),
            config.tokens.access_algorithm,
            Arc::clone(&clock),
        )
        .await?;
        let access_keys = match access_secret {
            _ if config.tokens.access_algorithm.is_asymmetric() => {
                AccessKeys::Ring(Arc::clone(&signing_keys))
            }
            Some(secret) => AccessKeys::shared(&secret),
            // Config validation requires the secret for HS256.
            None => anyhow::bail!("JWT_ACCESS_SECRET: must be set with JWT_ACCESS_ALGORITHM=HS256"),
        };
        let tokens = Tokens::new(
            access_keys,
            &refresh_secret,
            &config.server.app_url,
            &config.server.app_name,
            config.tokens.jwt_access_ttl,
            Arc::clone(&clock),
        );
        // The minute sweep's pruning; HS256 has no keys to prune.
        let key_rotation = config.tokens.access_algorithm.is_asymmetric().then(|| {
            KeyRotation::new(
                store.clone(),
                mfa_key.clone(),
                config.tokens.access_algorithm,
                config.tokens.jwt_access_ttl,
                Arc::clone(&clock),
            )
            .audited(
                audit.clone(),
                crate::services::ClientContext::new(None, None),
                "sweep",
            )
        });
        let outbox = services::outbox(&config, &store, &refresh_secret, &clock)?;
        let services = Services::build(
            &store,
            tokens,
            &outbox,
            &audit,
            &clock,
            &services::auth_settings(&config),
            mfa_key,
        )?;
        let admin = Arc::new(AdminService::new(
            store.clone(),
            store.clone(),
            audit.clone(),
        ));
        let health = WriteHealth::new(audit.clone(), store.clone());
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
            tasks::spawn_purge(
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
            tasks::spawn_emergency_sweep(Arc::clone(&services.emergency_access)),
        ];
        if let Some(rotation) = key_rotation {
            background.push(tasks::spawn_key_sweep(Arc::clone(&signing_keys), rotation));
        }
        let web_sessions: Arc<dyn crate::storage::WebSessionStore> = store.clone();
        let router = http::router(
            AppState {
                sessions: services.sessions,
                login: services.login,
                registration: services.registration,
                recovery: services.recovery,
                account: services.account,
                second_step: services.second_step,
                mfa: services.mfa,
                passkeys: services.passkeys,
                passkey_sign_in: services.passkey_sign_in,
                account_status: services.account_status,
                emergency_access: Arc::clone(&services.emergency_access),
                emergency_reviews: services.emergency_reviews,
                user_directory: services.user_directory,
                role_change: services.role_change,
                account_support: services.account_support,
                mfa_reset: services.mfa_reset,
                account_erasure: services.account_erasure,
                invitations: services.invitations,
                invitation_acceptance: services.invitation_acceptance,
                admin,
                health,
                signing_keys,
                cookies: CookieSettings::new(
                    config.is_https(),
                    config.is_production(),
                    Arc::clone(&clock),
                )
                .with_same_site(
                    config.server.refresh_cookie_same_site,
                    &config.server.cors_origins,
                    &origin_of(&config.server.app_url),
                ),
                portal: Arc::new(PortalSettings {
                    app_name: config.server.app_name.clone(),
                    app_origin: origin_of(&config.server.app_url),
                    max_lifetime: config.sessions.session_max_lifetime,
                    min_password_length: config.accounts.password_min_length,
                    reset_minutes: config.tokens.reset_token_ttl.as_secs() / 60,
                    emergency_minutes: config.sessions.emergency_access_ttl.as_secs() / 60,
                    roles: config.accounts.roles.clone(),
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
                metrics: listeners::metrics_on_main_listener(&config),
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
        background.extend(listeners::spawn_metrics_listener(&config, metrics).await?);
        if let MailTransport::Outbox { dir } = &config.mail.transport {
            tracing::info!(outbox = %dir.display(), "no MAIL_SERVER: emails are written to the outbox");
        }
        tracing::info!(backend = store.backend(), "store ready");
        report_roles_outside_config(store.as_ref(), &config).await;
        Ok(Self {
            listener,
            router,
            header_timeout: config.server.http_header_timeout,
            max_connections: listeners::max_connections(&config),
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

/// scheme://host[:port] of a base URL (what browsers send as Origin).
fn origin_of(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => url[..after_scheme + slash].to_owned(),
        None => url.to_owned(),
    }
}

/// Users whose role ROLES no longer lists keep signing in with it (only
/// `admin` grants anything here), but the operator should know: a typo in
/// ROLES would otherwise go unnoticed. Never stops the start.
async fn report_roles_outside_config(store: &dyn crate::storage::UserStore, config: &Config) {
    let roles = &config.accounts.roles;
    match store.count_users_outside_roles(roles.all()).await {
        Ok(0) => {}
        Ok(users) => tracing::warn!(
            users,
            roles = %roles.names(),
            "users have a role ROLES does not list; give them one with `clinic-auth user set-role`"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot check users' roles against ROLES"),
    }
}
