//! The portal: server-rendered pages for clinic staff (sign in, register,
//! password reset, account). Every action calls the same services as the
//! JSON API; these handlers only translate forms to calls and back.
//!
//! Post/Redirect/Get throughout; every POST reads its form through
//! [`csrf::CsrfForm`], which checks the CSRF token and the Origin header;
//! nothing changes state on GET except following an emailed verification
//! link, which only confirms what the link proves.

pub mod csrf;
pub mod enrolment;
mod handlers;
pub mod session;
mod views;

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use super::middleware::rate_limit;
use super::middleware::request_context::RequestId;
use super::{AppState, Limiters};
use crate::domain::User;
use crate::services::ServiceError;
use handlers::{
    account, emergency, passkeys, reauth, recovery, registration, second_step, sign_in, two_step,
};
use session::{Portal, StoreBackedSessions};
use views::{ErrorPage, Layout};

/// Portal settings the handlers need.
#[derive(Debug, Clone)]
pub struct PortalSettings {
    pub app_name: String,
    /// scheme://host[:port] of APP_URL, accepted as the Origin of a POST.
    pub app_origin: String,
    pub max_lifetime: Duration,
    pub min_password_length: usize,
    pub reset_minutes: u64,
    /// EMERGENCY_ACCESS_TTL in minutes, for the account page.
    pub emergency_minutes: u64,
    /// The clinic's roles, for the admin console's choices.
    pub roles: crate::domain::Roles,
}

/// The stylesheet is compiled in: the binary is the whole deployment.
const STYLESHEET: &str = include_str!("../../../static/css/app.css");
/// Browsers ask for /favicon.ico on every page; without it each page logs a
/// 404 in the console. A 317-byte icon (the header's mark), compiled in too.
const FAVICON: &[u8] = include_bytes!("../../../static/img/favicon.ico");

pub fn router(
    limiters: &Limiters,
    sessions: StoreBackedSessions,
    anon_csrf: csrf::AnonCsrfCookie,
    https: bool,
    idle: Duration,
) -> Router<AppState> {
    let limited = |l| rate_limit::layer(l);
    let session_layer = SessionManagerLayer::new(sessions)
        // __Host- binds the cookie to this exact origin over https.
        .with_name(if https { "__Host-session" } else { "session" })
        .with_secure(https)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(
            time::Duration::try_from(idle).unwrap_or(time::Duration::minutes(15)),
        ))
        // Every request counts as activity, so the idle timer restarts.
        .with_always_save(true);
    Router::new()
        .route("/", get(handlers::index))
        .route(
            "/login",
            get(sign_in::login_page)
                .merge(post(sign_in::login_submit).layer(limited(&limiters.page_login))),
        )
        .route(
            "/register",
            get(registration::register_page)
                .merge(post(registration::register_submit).layer(limited(&limiters.page_register))),
        )
        .route(
            "/forgot-password",
            get(recovery::forgot_page)
                .merge(post(recovery::forgot_submit).layer(limited(&limiters.page_forgot))),
        )
        .route(
            "/reset-password",
            get(recovery::reset_page)
                .merge(post(recovery::reset_submit).layer(limited(&limiters.page_reset))),
        )
        .route(
            "/verify-email",
            get(registration::verify_email_page).layer(limited(&limiters.page_verify)),
        )
        .route(
            "/login/code",
            get(second_step::totp_page)
                .merge(post(second_step::totp_submit).layer(limited(&limiters.page_login))),
        )
        .route(
            "/login/recovery-code",
            get(second_step::recovery_page)
                .merge(post(second_step::recovery_submit).layer(limited(&limiters.page_login))),
        )
        .route("/account", get(account::account_page))
        .route(
            "/account/reauth",
            get(reauth::reauth_page)
                .merge(post(reauth::reauth_submit).layer(limited(&limiters.page_login))),
        )
        .route("/account/two-step", get(two_step::two_step_page))
        .route("/account/two-step/totp/setup", post(two_step::setup))
        .route("/account/two-step/totp/confirm", post(two_step::confirm))
        .route("/account/two-step/totp/remove", post(two_step::remove))
        .route(
            "/account/two-step/recovery-codes",
            post(two_step::regenerate),
        )
        .route(
            "/account/two-step/recovery-codes/download",
            post(two_step::download),
        )
        .route(
            "/account/verify-email",
            post(registration::resend_verification).layer(limited(&limiters.resend_verification)),
        )
        .route("/account/password", post(account::change_password))
        .route("/account/sessions/end", post(account::end_session))
        .route("/account/sessions/end-all", post(account::end_all_sessions))
        .route("/account/emergency", post(emergency::start))
        .route("/account/emergency/end", post(emergency::end))
        .route("/logout", post(sign_in::logout))
        .route(
            "/invite",
            get(handlers::invitation::invitation_page).merge(
                post(handlers::invitation::invitation_submit).layer(limited(&limiters.page_reset)),
            ),
        )
        .merge(passkeys::router())
        .merge(handlers::admin::router())
        .layer(session_layer)
        .layer(axum::middleware::from_fn_with_state(anon_csrf, csrf::layer))
        .route("/static/app.css", get(stylesheet))
        .route("/favicon.ico", get(favicon))
        .merge(passkeys::script_router())
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}

async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/x-icon"),
            // It never changes between releases worth a re-fetch.
            (header::CACHE_CONTROL, "public, max-age=604800"),
        ],
        FAVICON,
    )
}

/// Why a page could not be shown, rendered as a friendly page.
#[derive(Debug)]
pub enum PageError {
    BadRequest,
    Forbidden,
    /// Signed in, but the page is for administrators (issue 19).
    AdminOnly,
    NotFound,
    Unavailable,
    Internal,
}

impl From<ServiceError> for PageError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Unavailable(e) => {
                tracing::warn!(error = ?e, "database unavailable");
                PageError::Unavailable
            }
            ServiceError::NotFound => PageError::NotFound,
            other => {
                tracing::error!(error = ?other, "page failed");
                PageError::Internal
            }
        }
    }
}

impl From<tower_sessions::session_store::Error> for PageError {
    fn from(err: tower_sessions::session_store::Error) -> Self {
        tracing::warn!(error = %err, "session store failed");
        PageError::Unavailable
    }
}

impl From<tower_sessions::session::Error> for PageError {
    fn from(err: tower_sessions::session::Error) -> Self {
        tracing::warn!(error = %err, "session failed");
        PageError::Unavailable
    }
}

/// Heading and message of the error page for a status.
fn error_text(status: StatusCode) -> ErrorText {
    match status.as_u16() {
        400 => ("Something was wrong with that request", "The form could not be read. Go back and try again."),
        403 => (
            "This form has expired",
            "For your safety the form could not be sent. Reload the page and try again.",
        ),
        404 => ("Page not found", "There is nothing at this address. Check it, or start again from the sign-in page."),
        405 => ("Page not found", "This page cannot be used that way."),
        413 => ("Too much data", "What was sent is too large."),
        429 => (
            "Too many attempts",
            "There have been too many attempts from this network. Wait a minute, then try again.",
        ),
        503 => (
            "Temporarily unavailable",
            "The service cannot reach its database right now. Try again in a minute.",
        ),
        _ => (
            "Something went wrong",
            "An unexpected error happened on our side. Try again; if it keeps happening, tell your IT team.",
        ),
    }
}

fn error_page(
    app_name: &str,
    status: StatusCode,
    text: Option<ErrorText>,
    request_id: Option<String>,
) -> Response {
    let (heading, message) = text.unwrap_or_else(|| error_text(status));
    let page = ErrorPage {
        layout: Layout {
            app_name: app_name.to_owned(),
            csrf: String::new(),
            signed_in_as: None,
            notice: None,
            emergency_until: None,
        },
        heading: heading.to_owned(),
        message: message.to_owned(),
        request_id,
    };
    let body = page.render().unwrap_or_else(|_| heading.to_owned());
    (status, Html(body)).into_response()
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            PageError::BadRequest => StatusCode::BAD_REQUEST,
            PageError::Forbidden | PageError::AdminOnly => StatusCode::FORBIDDEN,
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for PageError {
    /// Only the status and a mark: [`html_errors`], which knows the app
    /// name and the request id, renders the page, once, whatever the
    /// Accept header says.
    fn into_response(self) -> Response {
        let mut response = self.status().into_response();
        // A 403 is usually an expired form; a signed-in non-admin on an
        // admin page needs different words.
        let text = matches!(self, PageError::AdminOnly).then_some((
            "For administrators only",
            "This page is for your clinic's administrators. If you need something changed on an account, ask one of them.",
        ));
        response.extensions_mut().insert(ErrorPageWanted(text));
        response
    }
}

/// A heading and a message for the error page.
type ErrorText = (&'static str, &'static str);

/// Marks a page handler's error for [`html_errors`] to render, with its
/// own words when the status alone does not say what happened.
#[derive(Clone, Copy)]
struct ErrorPageWanted(Option<ErrorText>);

/// Renders a template, or a 500 page if it cannot be rendered.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed to render");
            PageError::Internal.into_response()
        }
    }
}

/// A signed-in portal user, or a redirect to the sign-in page.
pub struct SignedIn {
    pub portal: Portal,
    pub user: User,
}

impl SignedIn {
    /// The user as the services' step-up sees them: how and when this
    /// session last proved who they are.
    pub fn authenticated(&self) -> crate::services::sessions::Authenticated {
        crate::services::sessions::Authenticated {
            user: self.user.clone(),
            session: self.portal.data.refresh_family.clone(),
            auth: self.portal.data.auth.clone(),
            enrolling: self.portal.data.enrolment_only,
        }
    }

    /// Step-up: `None` when this session proved who it is within
    /// REAUTH_WINDOW (the API's rule, asked of the same service);
    /// otherwise the redirect to the re-authentication page, which comes
    /// back to `next`.
    pub fn needs_reauth(&self, state: &AppState, next: &str) -> Option<Response> {
        state.mfa.recent(&self.authenticated()).err().map(|_| {
            Redirect::to(&format!(
                "/account/reauth?next={}",
                urlencode(safe_next(next))
            ))
            .into_response()
        })
    }
}

impl FromRequestParts<AppState> for Portal {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let session = tower_sessions::Session::from_request_parts(parts, state)
            .await
            .map_err(|_| PageError::Internal)?;
        let anon = parts
            .extensions
            .get::<csrf::AnonCsrf>()
            .cloned()
            .ok_or(PageError::Internal)?;
        Ok(Portal::load(session, anon).await?)
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let next = urlencode(parts.uri.path());
        let to_login = || Redirect::to(&format!("/login?next={next}")).into_response();
        let portal = Portal::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let (Some(user_id), Some(signed_in_at)) = (portal.user_id(), portal.data.signed_in_at)
        else {
            return Err(to_login());
        };
        // Absolute lifetime: however active, a sign-in ends eventually.
        let lifetime =
            chrono::Duration::from_std(state.portal.max_lifetime).unwrap_or(chrono::Duration::MAX);
        if state.clock.now() > signed_in_at + lifetime {
            sign_in::end_portal_session(state, &portal, None)
                .await
                .map_err(IntoResponse::into_response)?;
            return Err(to_login());
        }
        match state.sessions.user_by_id(&user_id).await {
            // A cut-off since this sign-in (sign-out everywhere, password
            // change or reset, role change) ends the session as it ends
            // access tokens, whether or not its stored row was deleted.
            Ok(Some(user)) if portal.data.token_version < user.token_version => {
                sign_in::end_portal_session(state, &portal, None)
                    .await
                    .map_err(IntoResponse::into_response)?;
                Err(to_login())
            }
            Ok(Some(user)) => {
                // MFA_REQUIRED_ROLES: an enrolment-only session reaches
                // only the enrolment page until a factor is on.
                let mut portal = portal;
                enrolment::gate(state, &mut portal, &user, parts).await?;
                portal.emergency = state
                    .emergency_access
                    .active_window(&user.id)
                    .await
                    .map_err(|e| PageError::from(e).into_response())?;
                Ok(SignedIn { portal, user })
            }
            Ok(None) => {
                portal
                    .session
                    .flush()
                    .await
                    .map_err(|e| PageError::from(e).into_response())?;
                Err(to_login())
            }
            Err(e) => Err(PageError::from(e).into_response()),
        }
    }
}

fn urlencode(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A `next` target is followed only when it is a plain path on this site:
/// `//evil.example` or `https://...` would make the sign-in page an open
/// redirect.
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.contains("://")
        && next.chars().all(|c| c.is_ascii_graphic());
    if ok {
        next
    } else {
        "/account"
    }
}

/// The one renderer of error pages: a page handler's [`PageError`], and
/// outside /api an error answered in JSON (404, 405, 413, 429, 500...) to a
/// browser that asked for HTML, become a friendly page in the layout.
pub async fn html_errors(State(app_name): State<Arc<str>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let api = path.starts_with("/api/")
        || path == "/api"
        || path == "/openapi.json"
        || path.starts_with("/docs");
    let wants_html = prefers_html(req.headers());
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.0.to_str().ok().map(str::to_owned));
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let page_error = response.extensions().get::<ErrorPageWanted>().copied();
    if page_error.is_some() || (!api && wants_html && status.as_u16() >= 400 && is_json) {
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let text = page_error.and_then(|wanted| wanted.0);
        let mut page = error_page(&app_name, status, text, request_id);
        if let Some(v) = retry_after {
            page.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return page;
    }
    response
}

/// True when the Accept header ranks text/html above JSON (browsers do).
fn prefers_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let position = |needle: &str| accept.find(needle);
    match (position("text/html"), position("application/json")) {
        (Some(html), Some(json)) => html < json,
        (Some(_), None) => true,
        _ => false,
    }
}

pub(crate) fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_a_local_path() {
        assert_eq!(safe_next("/account"), "/account");
        for evil in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "javascript:alert(1)",
            "",
            "account",
            "/a b",
        ] {
            assert_eq!(safe_next(evil), "/account", "{evil}");
        }
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!prefers_html(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"),
        );
        assert!(prefers_html(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/html"),
        );
        assert!(!prefers_html(&h));
    }
}
