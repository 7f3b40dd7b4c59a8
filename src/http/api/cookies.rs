//! The API refresh cookie: set at every sign-in (the API's and the
//! portal's, so a same-site SPA is signed in too) and cleared at sign-out.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum_extra::extract::cookie::{Cookie, SameSite};
use secrecy::ExposeSecret;

use crate::config::RefreshSameSite;
use crate::error::{ApiError, ErrorCode};
use crate::http::{AppState, CookieSettings};
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
        .same_site(same_site(settings))
        .partitioned(partitioned(settings))
        .path(REFRESH_COOKIE_PATH)
        .max_age(time::Duration::seconds(remaining))
        .build()
}

pub(crate) fn cleared_cookie(settings: &CookieSettings) -> Cookie<'static> {
    Cookie::build((settings.name, ""))
        .http_only(true)
        .secure(settings.secure)
        .same_site(same_site(settings))
        .partitioned(partitioned(settings))
        .path(REFRESH_COOKIE_PATH)
        .max_age(time::Duration::ZERO)
        .build()
}

fn same_site(settings: &CookieSettings) -> SameSite {
    match settings.same_site {
        RefreshSameSite::Strict => SameSite::Strict,
        RefreshSameSite::Lax => SameSite::Lax,
        RefreshSameSite::None => SameSite::None,
    }
}

/// A SameSite=None cookie is also `Partitioned` (CHIPS): browsers that
/// block third-party cookies (Chromium when the user or policy says so,
/// and it is a default in more browsers each year) still keep and send a
/// partitioned one, in a jar of the top-level site, here the SPA's. That
/// is all an SPA on another site needs: its refresh cookie is only ever
/// used from its own pages. Browsers that do not know the attribute ignore
/// it. Clearing names it too, or the partitioned cookie would stay.
fn partitioned(settings: &CookieSettings) -> bool {
    settings.same_site == RefreshSameSite::None
}

/// The guard of the routes that use the refresh cookie (refresh, logout).
/// With SameSite=None the browser attaches the cookie to any site's
/// request, so these answer only an Origin the clinic allowed: a cross-site
/// form post (which cannot set Origin to ours) or a request without Origin
/// is refused before the cookie is read. Under Strict and Lax the browser
/// already keeps other sites' requests from carrying it: no check.
pub struct CookieOrigin;

impl FromRequestParts<AppState> for CookieOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(allowed) = &state.cookies.allowed_origins else {
            return Ok(Self);
        };
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        match origin {
            Some(origin) if allowed.iter().any(|a| a == origin) => Ok(Self),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::OriginNotAllowed,
                "The refresh cookie is accepted only from the clinic's own apps: send this request from an origin listed in CORS_ORIGINS.",
            )),
        }
    }
}
