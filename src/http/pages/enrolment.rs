//! The portal's enrolment gate (MFA_REQUIRED_ROLES, MFA_REQUIRED_FOR_ALL):
//! a user who must have a second factor and has none signs in to an
//! "enrolment only" session, which reaches `/account/two-step` (and what it
//! posts to), `/logout` and the static files, and is sent to
//! `/account/two-step` from every other page, until enrolment is done.
//! Then the session becomes a full sign-in (with its API refresh family and
//! cookie) on the next page it asks for.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;

use super::session::Portal;
use super::PageError;
use crate::domain::User;
use crate::http::api::cookies::refresh_cookie;
use crate::http::AppState;
use crate::services::tokens::Authentication;
use crate::services::ClientContext;

/// The enrolment page: the "Two-step sign-in" page of the account.
pub const ENROLMENT_PAGE: &str = "/account/two-step";

/// What an enrolment-only session may reach.
pub fn allowed(path: &str) -> bool {
    path == ENROLMENT_PAGE
        || path.starts_with("/account/two-step/")
        || path == "/logout"
        || path.starts_with("/static/")
}

/// Signs the browser in for enrolment only: a new session id and CSRF
/// token as for any sign-in, no API refresh family (the password alone
/// must not reach the API), and the flag the gate reads.
pub async fn begin(
    state: &AppState,
    portal: &mut Portal,
    client: &ClientContext,
    user: &User,
) -> Result<(), PageError> {
    // The password was just proven: enrolment's step-up check passes.
    let auth = Authentication::password(state.clock.now());
    super::handlers::sign_in::bind(state, portal, client, user, None, auth).await
}

/// Run for every signed-in page: lets a full session through; sends an
/// enrolment-only one to the enrolment page unless it asked for what that
/// page needs; and once the user has a factor, makes it a full sign-in
/// (new session id, refresh family and cookie) and asks the browser to
/// come again (the same page for a GET, the enrolment page otherwise: a
/// form posted across the change is not replayed).
pub async fn gate(
    state: &AppState,
    portal: &mut Portal,
    user: &User,
    parts: &mut Parts,
) -> Result<(), Response> {
    if !portal.data.enrolment_only {
        return Ok(());
    }
    let failed = |e: PageError| e.into_response();
    let factor = state
        .sessions
        .enrolled_factor(user)
        .await
        .map_err(|e| failed(e.into()))?;
    let Some(method) = factor else {
        if allowed(parts.uri.path()) {
            return Ok(());
        }
        return Err(Redirect::to(ENROLMENT_PAGE).into_response());
    };
    let client = match ClientContext::from_request_parts(parts, state).await {
        Ok(client) => client,
        Err(never) => match never {},
    };
    // The sign-in keeps the password's time: enrolling proves a factor
    // the user just added, not who they are.
    let auth = Authentication {
        amr: ["pwd", method, "mfa"].map(str::to_owned).to_vec(),
        auth_time: portal.data.signed_in_at.map(|at| at.timestamp()),
    };
    let outcome = state
        .sessions
        .start(user.clone(), user.email.as_str(), auth, &client)
        .await
        .map_err(|e| failed(e.into()))?;
    portal.begin_sign_in().await.map_err(|e| failed(e.into()))?;
    portal.data.enrolment_only = false;
    portal.data.refresh_family = Some(outcome.refresh_family.clone());
    portal.data.auth = outcome.auth.clone();
    portal.save().await.map_err(|e| failed(e.into()))?;
    let again = if parts.method == Method::GET || parts.method == Method::HEAD {
        parts
            .uri
            .path_and_query()
            .map_or(ENROLMENT_PAGE, |p| p.as_str())
            .to_owned()
    } else {
        ENROLMENT_PAGE.to_owned()
    };
    let jar = CookieJar::new().add(refresh_cookie(&state.cookies, &outcome.refresh));
    Err((jar, Redirect::to(&again)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_enrolment_page_logout_and_static_files_are_reachable() {
        for path in [
            "/account/two-step",
            "/account/two-step/totp/confirm",
            "/account/two-step/passkeys/register",
            "/logout",
            "/static/app.css",
        ] {
            assert!(allowed(path), "{path}");
        }
        for path in [
            "/account",
            "/account/password",
            "/account/two-stepper",
            "/account/sessions/end",
            "/",
        ] {
            assert!(!allowed(path), "{path}");
        }
    }
}
