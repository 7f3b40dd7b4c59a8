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

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::token::random_token;

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
