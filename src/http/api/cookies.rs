//! The API refresh cookie: set at every sign-in (the API's and the
//! portal's, so a same-site SPA is signed in too) and cleared at sign-out.

use axum_extra::extract::cookie::{Cookie, SameSite};
use secrecy::ExposeSecret;

use crate::http::CookieSettings;
use crate::services::tokens::SignedRefresh;

/// The refresh cookie is sent only to these endpoints, never to the rest of
/// the site.
pub const REFRESH_COOKIE_PATH: &str = "/api/auth";

pub(crate) fn refresh_cookie(
    settings: &CookieSettings,
    refresh: &SignedRefresh,
) -> Cookie<'static> {
    let remaining = (refresh.expires_at - settings.clock.now())
        .num_seconds()
        .max(0);
    Cookie::build((settings.name, refresh.token.expose_secret().to_owned()))
        .http_only(true)
        .secure(settings.secure)
        .same_site(SameSite::Strict)
        .path(REFRESH_COOKIE_PATH)
        .max_age(time::Duration::seconds(remaining))
        .build()
}

pub(crate) fn cleared_cookie(settings: &CookieSettings) -> Cookie<'static> {
    Cookie::build((settings.name, ""))
        .http_only(true)
        .secure(settings.secure)
        .same_site(SameSite::Strict)
        .path(REFRESH_COOKIE_PATH)
        .max_age(time::Duration::ZERO)
        .build()
}
