//! Everything web: the router, extractors, middleware and handlers.
//! Handlers translate HTTP to service calls and back; no business rules.

pub mod api;
pub mod docs;
pub mod extract;
pub mod middleware;
pub mod pages;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::IntoResponse;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::clock::Clock;
use crate::error::ApiError;
use crate::services::{Account, AdminService, Login, Recovery, Registration, Sessions};
use middleware::rate_limit::{self, Limiter};
use middleware::security_headers::SecurityHeaders;

/// Largest request body accepted (ASVS: bound what a client can make us buffer).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// How the refresh cookie is written, and who may use it.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub name: &'static str,
    pub secure: bool,
    pub same_site: crate::config::RefreshSameSite,
    /// With SameSite=None: the origins whose requests may use the cookie at
    /// refresh and logout (CORS_ORIGINS and APP_URL's own). `None`: no
    /// check, SameSite keeps other sites' requests from carrying it.
    pub allowed_origins: Option<Arc<[String]>>,
    /// The cookie lives as long as its token, by the clock that set the
    /// token's expiry.
    pub clock: Arc<dyn Clock>,
}

impl CookieSettings {
    pub fn new(https: bool, production: bool, clock: Arc<dyn Clock>) -> Self {
        Self {
            // The __Secure- prefix makes browsers refuse the cookie unless it
            // is Secure and set over https, so it cannot be planted over http.
            name: if https {
                "__Secure-refresh_token"
            } else {
                "refresh_token"
            },
            secure: https || production,
            same_site: crate::config::RefreshSameSite::Strict,
            allowed_origins: None,
            clock,
        }
    }

    /// REFRESH_COOKIE_SAMESITE: with `none`, the cookie crosses sites and
    /// only `origins` (plus `app_origin`) may use it.
    pub fn with_same_site(
        mut self,
        same_site: crate::config::RefreshSameSite,
        origins: &[String],
        app_origin: &str,
    ) -> Self {
        self.same_site = same_site;
        self.allowed_origins = (same_site == crate::config::RefreshSameSite::None).then(|| {
            origins
                .iter()
                .cloned()
                .chain(std::iter::once(app_origin.to_owned()))
                .collect()
        });
        self
    }
}

/// The per-IP limiters, kept so a background task can prune them.
#[derive(Clone)]
pub struct Limiters {
    pub global: Limiter,
    pub register: Limiter,
    pub login: Limiter,
    pub refresh: Limiter,
    pub forgot_password: Limiter,
    pub reset_password: Limiter,
    pub verify_email: Limiter,
    pub resend_verification: Limiter,
    pub logout: Limiter,
    // The portal's forms get the same limits with budgets of their own.
    pub page_login: Limiter,
    pub page_register: Limiter,
    pub page_forgot: Limiter,
    pub page_reset: Limiter,
    pub page_verify: Limiter,
}

impl Limiters {
    /// With `counters` (RATE_LIMIT_BACKEND=store) every limit is counted in
    /// the store, one budget per limit for all instances on it.
    pub fn new(
        auth_per_min: u32,
        global_per_min: u32,
        counters: Option<rate_limit::SharedCounters>,
    ) -> Self {
        let limit = |name, per_min| Limiter::new(name, per_min, counters.as_ref());
        Self {
            global: limit("global", global_per_min),
            register: limit("register", auth_per_min),
            login: limit("login", auth_per_min),
            refresh: limit("refresh", auth_per_min),
            forgot_password: limit("forgot_password", auth_per_min),
            reset_password: limit("reset_password", auth_per_min),
            verify_email: limit("verify_email", auth_per_min),
            resend_verification: limit("resend_verification", auth_per_min),
            logout: limit("logout", auth_per_min),
            page_login: limit("page_login", auth_per_min),
            page_register: limit("page_register", auth_per_min),
            page_forgot: limit("page_forgot", auth_per_min),
            page_reset: limit("page_reset", auth_per_min),
            page_verify: limit("page_verify", auth_per_min),
        }
    }

    pub fn all(&self) -> Vec<Limiter> {
        vec![
            self.global.clone(),
            self.register.clone(),
            self.login.clone(),
            self.refresh.clone(),
            self.forgot_password.clone(),
            self.reset_password.clone(),
            self.verify_email.clone(),
            self.resend_verification.clone(),
            self.logout.clone(),
            self.page_login.clone(),
            self.page_register.clone(),
            self.page_forgot.clone(),
            self.page_reset.clone(),
            self.page_verify.clone(),
        ]
    }
}

/// Shared by every handler: the services, one per use-case. A handler may
/// extract just the one it uses (`State<Arc<Sessions>>`, via `FromRef`).
#[derive(Clone, axum::extract::FromRef)]
pub struct AppState {
    pub sessions: Arc<Sessions>,
    pub login: Arc<Login>,
    pub registration: Arc<Registration>,
    pub recovery: Arc<Recovery>,
    pub account: Arc<Account>,
    /// The second step of a sign-in (issue 18).
    pub second_step: Arc<crate::services::mfa::SecondStep>,
    /// Second factors as the signed-in user manages them.
    pub mfa: Arc<crate::services::mfa::MfaAccount>,
    /// Passkeys as the signed-in user manages them.
    pub passkeys: Arc<crate::services::mfa::Passkeys>,
    /// Signing in with a passkey.
    pub passkey_sign_in: Arc<crate::services::mfa::PasskeySignIn>,
    pub admin: Arc<AdminService>,
    /// Disable and enable accounts (issue 19).
    pub account_status: Arc<crate::services::AccountStatus>,
    /// Emergency ("break-glass") access and its review (issue 19).
    pub emergency_access: Arc<crate::services::EmergencyAccess>,
    pub emergency_reviews: Arc<crate::services::EmergencyReviews>,
    /// The admin's list and view of accounts (issue 19).
    pub user_directory: Arc<crate::services::UserDirectory>,
    /// An admin changes a role (issue 19).
    pub role_change: Arc<crate::services::RoleChange>,
    /// Admin help: unlock, end sessions, reset email (issue 19).
    pub account_support: Arc<crate::services::AccountSupport>,
    /// An admin resets a user's second factors (issue 19).
    pub mfa_reset: Arc<crate::services::MfaReset>,
    /// An admin erases a disabled account (issue 19).
    pub account_erasure: Arc<crate::services::AccountErasure>,
    /// Invitations: the admin's side and the invitee's (issue 19).
    pub invitations: Arc<crate::services::Invitations>,
    pub invitation_acceptance: Arc<crate::services::InvitationAcceptance>,
    /// Whether the store takes writes (for /health).
    pub health: Arc<crate::services::health::WriteHealth>,
    /// The access-token signing keys, published at /.well-known/jwks.json.
    pub signing_keys: Arc<crate::services::signing_keys::KeyRing>,
    pub cookies: CookieSettings,
    pub portal: Arc<pages::PortalSettings>,
    /// Decides the portal's absolute session lifetime.
    pub clock: Arc<dyn Clock>,
}

/// What the router needs beyond the state.
pub struct RouterOptions {
    pub cors_origins: Vec<String>,
    pub hsts: bool,
    pub limiters: Limiters,
    pub sessions: pages::session::StoreBackedSessions,
    /// Keys the CSRF tokens of forms shown before sign-in.
    pub anon_csrf: pages::csrf::AnonCsrfCookie,
    pub session_idle_timeout: Duration,
    /// Who may read /metrics on this listener.
    pub metrics: MetricsAccess,
    /// The installed recorder, rendered at /metrics.
    pub metrics_handle: metrics_exporter_prometheus::PrometheusHandle,
    /// TRUSTED_PROXIES and RATE_LIMIT_IPV6_PREFIX.
    pub client_ip: middleware::client_ip::ClientIpPolicy,
    /// HTTP_BODY_TIMEOUT: the whole body must arrive within this.
    pub body_timeout: Duration,
}

pub fn router(state: AppState, options: RouterOptions) -> Router {
    let app_name: Arc<str> = Arc::from(state.portal.app_name.as_str());
    let mut routes = Router::new()
        .merge(api::router(&options.limiters))
        .merge(docs::router())
        .merge(pages::router(
            &options.limiters,
            options.sessions,
            options.anon_csrf,
            options.hsts,
            options.session_idle_timeout,
        ))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state);

    routes = routes.merge(metrics_router(options.metrics, options.metrics_handle));
    // Layers run outside-in in the reverse of the order they are added.
    routes
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            app_name,
            pages::html_errors,
        ))
        .layer(rate_limit::layer(&options.limiters.global))
        .layer(axum::middleware::from_fn_with_state(
            options.client_ip,
            middleware::client_ip::client_ip,
        ))
        .layer(cors(&options.cors_origins))
        .layer(axum::middleware::from_fn_with_state(
            SecurityHeaders { hsts: options.hsts },
            middleware::security_headers::security_headers,
        ))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("handler panicked");
                ApiError::internal().into_response()
            },
        ))
        .layer(axum::middleware::from_fn(
            middleware::request_context::request_context,
        ))
        // Outermost, so the body's clock starts as soon as the headers are in.
        .layer(middleware::body_timeout::BodyTimeoutLayer::new(
            options.body_timeout,
        ))
}

/// Only the configured origins may call with credentials; any other origin
/// gets no Access-Control-Allow-Origin and the browser blocks the read.
fn cors(origins: &[String]) -> CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static(middleware::request_context::REQUEST_ID_HEADER),
        ])
        .expose_headers([
            HeaderName::from_static(middleware::request_context::REQUEST_ID_HEADER),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

/// Who may read /metrics on one listener.
#[derive(Clone)]
pub enum MetricsAccess {
    /// No route: /metrics is a 404 like any unknown path.
    Off,
    /// Anyone who can reach the listener.
    Public,
    /// Only `Authorization: Bearer <token>`; the SHA-256 of the token is
    /// kept, so the comparison runs over fixed-length digests.
    Bearer(Arc<[u8; 32]>),
}

impl MetricsAccess {
    pub fn bearer(token: &secrecy::SecretString) -> Self {
        use secrecy::ExposeSecret;
        use sha2::{Digest, Sha256};
        Self::Bearer(Arc::new(
            Sha256::digest(token.expose_secret().as_bytes()).into(),
        ))
    }
}

/// GET /metrics in the Prometheus text format, for those `access` admits.
pub fn metrics_router(
    access: MetricsAccess,
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> Router {
    let route = Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    match access {
        MetricsAccess::Off => Router::new(),
        MetricsAccess::Public => route,
        MetricsAccess::Bearer(digest) => {
            route.route_layer(axum::middleware::from_fn_with_state(digest, metrics_token))
        }
    }
}

/// Lets a request through only with the metrics Bearer token. Anything
/// else gets the same 404 as an unknown path: a scanner learns nothing,
/// not even that the route exists.
async fn metrics_token(
    axum::extract::State(digest): axum::extract::State<Arc<[u8; 32]>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use sha2::{Digest, Sha256};
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| Sha256::digest(token.trim().as_bytes()));
    // Constant time over the digests: no early exit on the first byte
    // that differs.
    let admitted = given.is_some_and(|given| {
        given
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    if admitted {
        next.run(req).await
    } else {
        ApiError::not_found().into_response()
    }
}
