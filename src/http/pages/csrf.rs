//! CSRF tokens for the forms people fill in before they sign in (sign-in,
//! registration, password reset), without storing anything.
//!
//! A signed-in browser's forms carry the token kept in its portal session.
//! Before sign-in there is no session, and creating one for every page view
//! would let a flood of anonymous requests fill the database. So an
//! anonymous browser gets a random value in a cookie of its own, and its
//! forms carry HMAC-SHA256(key, that value) (OWASP's signed double-submit
//! cookie): a cross-site page can neither read the cookie nor compute the
//! token without the key. Over https the cookie has the `__Host-` prefix, so
//! no other host can plant one, and every POST is also checked for a
//! same-origin `Origin`.
//!
//! [`CsrfForm`] is how every POST handler reads its form: it parses the body
//! and checks the token and the origin, so no handler can forget either.

use std::sync::Arc;

use axum::extract::{Form, FromRequest, FromRequestParts, Request, State};
use axum::http::header::{self, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::Sha256;

use super::session::Portal;
use super::PageError;
use crate::domain::token::random_token;
use crate::http::AppState;

/// What the middleware settled for this request: the token an anonymous
/// form must carry, and whether the browser came without the cookie.
#[derive(Clone)]
pub struct AnonCsrf {
    pub token: String,
    /// The browser sent no (usable) cookie, so no form it was shown before
    /// can carry this token.
    pub fresh: bool,
}

impl std::fmt::Debug for AnonCsrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnonCsrf")
            .field("token", &"[REDACTED]")
            .field("fresh", &self.fresh)
            .finish()
    }
}

/// The key and cookie settings; cheap to clone.
#[derive(Clone)]
pub struct AnonCsrfCookie {
    key: Arc<[u8; 32]>,
    name: &'static str,
    secure: bool,
}

impl std::fmt::Debug for AnonCsrfCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnonCsrfCookie")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Random values are 43 base64url characters; anything else is not ours.
fn is_seed(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl AnonCsrfCookie {
    /// `key` is derived from a server secret that every instance shares, so
    /// a form shown by one instance is accepted by another.
    pub fn new(key: [u8; 32], https: bool) -> Self {
        Self {
            key: Arc::new(key),
            name: if https { "__Host-csrf" } else { "csrf" },
            secure: https,
        }
    }

    /// A key of its own derived from `secret` (the refresh-token secret):
    /// knowing a form token reveals nothing about the secret, and the JWT
    /// secrets never sign anything but tokens.
    pub fn derived_from(secret: &secrecy::SecretString, https: bool) -> Self {
        use secrecy::ExposeSecret;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .expect("HMAC takes any key");
        mac.update(b"clinic-auth anonymous form key v1");
        Self::new(mac.finalize().into_bytes().into(), https)
    }

    fn token_for(&self, seed: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.key.as_slice()).expect("HMAC takes any key");
        mac.update(b"clinic-auth anonymous form\0");
        mac.update(seed.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn seed_in(&self, request: &Request) -> Option<String> {
        request
            .headers()
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, value)| *name == self.name && is_seed(value))
            .map(|(_, value)| value.to_owned())
    }

    fn set_cookie(&self, seed: &str) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={seed}; Path=/; HttpOnly; SameSite=Lax{secure}",
            self.name
        ))
        .ok()
    }
}

/// Gives every portal request its [`AnonCsrf`], and a browser without the
/// cookie a new one.
pub async fn layer(State(cookie): State<AnonCsrfCookie>, mut req: Request, next: Next) -> Response {
    let (seed, fresh) = match cookie.seed_in(&req) {
        Some(seed) => (seed, false),
        None => (random_token(), true),
    };
    req.extensions_mut().insert(AnonCsrf {
        token: cookie.token_for(&seed),
        fresh,
    });
    let mut response = next.run(req).await;
    if fresh {
        if let Some(value) = cookie.set_cookie(&seed) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

/// A POSTed form whose CSRF token (the `csrf` field, the session's token
/// once signed in, the anonymous one before) and origin were checked. `T`
/// holds the other fields; a missing one is its default, so it becomes a
/// validation message rather than a rejection.
pub struct CsrfForm<T>(pub T);

/// The wire form: the token beside the handler's own fields.
#[derive(Deserialize)]
struct Submitted<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    fields: T,
}

/// A form with no fields of its own (a button: sign out, resend the link).
#[derive(Deserialize, Default)]
pub struct NoFields {}

/// Why a form was not accepted. Each is an error page (400 or 403);
/// `Expired` keeps the form for the one handler that offers it again.
pub enum FormRefused<T> {
    /// The body is not a readable form (400), or the session is unreadable.
    Page(PageError),
    /// The form was rendered for a form cookie this browser no longer has
    /// (e.g. it was restarted with the page open): nothing it sent can be
    /// trusted, but nothing was done either.
    Expired(T),
    /// Wrong or missing token, or sent from another site (403).
    Forged,
}

impl<T> From<FormRefused<T>> for PageError {
    fn from(refused: FormRefused<T>) -> Self {
        match refused {
            FormRefused::Page(e) => e,
            FormRefused::Expired(_) => {
                // Its token was made for a cookie this browser no longer
                // sends, so it cannot match.
                tracing::warn!("POST refused: CSRF token missing or wrong");
                PageError::Forbidden
            }
            FormRefused::Forged => PageError::Forbidden,
        }
    }
}

impl<T> IntoResponse for FormRefused<T> {
    fn into_response(self) -> Response {
        PageError::from(self).into_response()
    }
}

impl<T> FromRequest<AppState> for CsrfForm<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = FormRefused<T>;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, FormRefused<T>> {
        let (mut parts, body) = req.into_parts();
        let portal = Portal::from_request_parts(&mut parts, state)
            .await
            .map_err(FormRefused::Page)?;
        let headers = parts.headers.clone();
        // Unreadable form bodies are a 400 page, not axum's plain-text
        // rejection.
        let Form(form) =
            Form::<Submitted<T>>::from_request(Request::from_parts(parts, body), state)
                .await
                .map_err(|_| FormRefused::Page(PageError::BadRequest))?;
        if portal.lost_its_form_cookie() && !form.csrf.is_empty() {
            return Err(FormRefused::Expired(form.fields));
        }
        if !csrf_holds(
            &state.portal.app_origin,
            portal.csrf(),
            &form.csrf,
            &headers,
        ) {
            return Err(FormRefused::Forged);
        }
        Ok(CsrfForm(form.fields))
    }
}

/// CSRF defence for every POST: the browser's token must match (compared
/// in constant time), and a browser-sent Origin must be our own: the whole
/// origin, scheme and port included (`http://host` is not `https://host`).
fn csrf_holds(app_origin: &str, expected: &str, submitted: &str, headers: &HeaderMap) -> bool {
    let (expected, given) = (expected.as_bytes(), submitted.as_bytes());
    let same = expected.len() == given.len()
        && !expected.is_empty()
        && bool::from(subtle::ConstantTimeEq::ct_eq(expected, given));
    if !same {
        tracing::warn!("POST refused: CSRF token missing or wrong");
        return false;
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v == "cross-site")
    {
        tracing::warn!("POST refused: cross-site request");
        return false;
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        if !same_origin(app_origin, origin, headers) {
            tracing::warn!(origin, "POST refused: foreign Origin");
            return false;
        }
    }
    true
}

/// An Origin is ours when it is APP_URL's origin, or the origin the request
/// was addressed to (its Host, under APP_URL's scheme: the service may be
/// reached by another name than APP_URL's, never by another scheme).
fn same_origin(app_origin: &str, origin: &str, headers: &HeaderMap) -> bool {
    if origin == app_origin {
        return true;
    }
    let scheme = app_origin.split_once("://").map_or("http", |(s, _)| s);
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|host| origin == format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_the_key_and_the_seed() {
        let seed = random_token();
        let a = AnonCsrfCookie::new([1; 32], false);
        let b = AnonCsrfCookie::new([2; 32], false);
        assert_eq!(a.token_for(&seed), a.token_for(&seed));
        assert_ne!(a.token_for(&seed), b.token_for(&seed));
        assert_ne!(a.token_for(&seed), a.token_for(&random_token()));
        assert!(is_seed(&seed));
        assert!(!is_seed("short"));
        assert!(!is_seed(&format!("{}!", &seed[..42])));
    }

    #[test]
    fn https_cookies_are_host_prefixed_and_secure() {
        let cookie = AnonCsrfCookie::new([1; 32], true);
        let line = cookie.set_cookie(&random_token()).unwrap();
        let line = line.to_str().unwrap();
        assert!(line.starts_with("__Host-csrf="), "{line}");
        assert!(
            line.contains("; Secure") && line.contains("HttpOnly"),
            "{line}"
        );
        assert!(format!("{cookie:?}").contains("__Host-csrf"));
        assert!(!format!("{cookie:?}").contains("[1, 1"));
    }
}
