//! Response headers that every answer carries, so no route can forget them.

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// API answers are JSON: nothing in them should ever be executed or framed.
const CSP_API: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// Portal pages: our own stylesheet and forms only; no scripts at all.
const CSP_PAGES: &str =
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";
/// The portal pages that load `/static/js/passkeys.js` (issue 18): the
/// page policy plus our own script and its `fetch` to our own origin.
const CSP_PAGES_WITH_SCRIPT: &str =
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; script-src 'self'; connect-src 'self'";
/// The pages that include the passkeys script; every other page keeps the
/// script-free policy.
const SCRIPT_PAGES: [&str; 4] = [
    "/login",
    "/login/code",
    "/login/passkey",
    "/account/two-step",
];
/// Swagger UI is served from our own files only; it sets inline styles.
const CSP_DOCS: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
     script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

#[derive(Debug, Clone, Copy)]
pub struct SecurityHeaders {
    /// Send HSTS: only meaningful (and only safe) when served over https.
    pub hsts: bool,
}

pub async fn security_headers(
    State(config): State<SecurityHeaders>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    // The JWKS (issue 20) is public and meant to be cached: its handler
    // sets its own Cache-Control.
    let is_api = path.starts_with("/api/")
        || path == "/health"
        || path == "/openapi.json"
        || path == "/.well-known/jwks.json";
    let csp = if path == "/docs" || path.starts_with("/docs/") {
        CSP_DOCS
    } else if is_api {
        CSP_API
    } else if SCRIPT_PAGES.contains(&path.as_str()) {
        CSP_PAGES_WITH_SCRIPT
    } else {
        CSP_PAGES
    };
    // Pages use strict-origin: a Referer carries at most our origin, never a
    // path or query (a reset link's token stays on the page), yet browsers
    // still send our real Origin on form POSTs, which the CSRF check needs;
    // under no-referrer they send `Origin: null`. Everything else sends no
    // Referer at all.
    let referrer = if csp == CSP_PAGES || csp == CSP_PAGES_WITH_SCRIPT {
        "strict-origin"
    } else {
        "no-referrer"
    };
    let fixed: [(HeaderName, &'static str); 6] = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, referrer),
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if config.hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    // Tokens, CSRF tokens and user data must never sit in a shared or
    // browser cache (a front-desk computer's back button included). That is
    // every /api answer, errors too: the admin's audit pages hold emails and
    // IPs, and a cached 401 or 404 could be served for a later success.
    // The favicon is a static file at the root (browsers ask for it there).
    if path.starts_with("/api/")
        || !(is_api
            || path.starts_with("/static/")
            || path.starts_with("/docs")
            || path == "/favicon.ico")
    {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    response
}
