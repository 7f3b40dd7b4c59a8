//! Signing in and out: the sign-in page, binding a session to the user, and
//! ending it.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::{explain, layout, page, PageQuery, PageResult};
use crate::domain::{Password, User};
use crate::http::api::cookies::{cleared_cookie, refresh_cookie};
use crate::http::pages::csrf::{CsrfForm, FormRefused, NoFields};
use crate::http::pages::enrolment;
use crate::http::pages::session::Portal;
use crate::http::pages::views::{FormState, LoginPage, LOGIN_FIELDS};
use crate::http::pages::{safe_next, PageError};
use crate::http::AppState;
use crate::services::tokens::Authentication;
use crate::services::ServiceError;
use crate::services::{ClientContext, LoginOutcome, SignIn};

/// Form payloads default every field, so a missing one is a validation
/// message, not a rejection.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    email: String,
    password: String,
    next: String,
}

pub async fn login_page(
    State(state): State<AppState>,
    portal: Portal,
    Query(q): Query<PageQuery>,
) -> PageResult {
    if portal.data.user_id.is_some() {
        return Ok(Redirect::to(safe_next(&q.next)).into_response());
    }
    let notice = if q.signed_out.is_some() {
        Some("You are signed out.".to_owned())
    } else if q.reset.is_some() {
        Some("Your password has been changed. Sign in with the new one.".to_owned())
    } else if q.expired.is_some() {
        Some("Your session ended. Sign in again.".to_owned())
    } else if q.code_ended.is_some() {
        Some(
            "That sign-in has ended: it lasts 5 minutes and ends after 5 wrong codes. \
             Sign in again with your password."
                .to_owned(),
        )
    } else if q.registered.is_some() {
        Some(
            "Your account is ready. Open the link we have sent to your email address, \
             then sign in."
                .to_owned(),
        )
    } else {
        None
    };
    let view = LoginPage {
        layout: layout(&state, &portal, None, notice),
        form: FormState::labelled(LOGIN_FIELDS),
        next: safe_next(&q.next).to_owned(),
    };
    page(StatusCode::OK, &view)
}

pub async fn login_submit(
    State(state): State<AppState>,
    mut portal: Portal,
    client: ClientContext,
    jar: CookieJar,
    form: Result<CsrfForm<LoginForm>, FormRefused<LoginForm>>,
) -> PageResult {
    let f = match form {
        Ok(CsrfForm(f)) => f,
        // The sign-in form outlived the browser's form cookie (a browser
        // restarted with the page still open): nothing was done, so offer
        // the form again rather than an error page.
        Err(FormRefused::Expired(f)) => {
            let view = LoginPage {
                layout: layout(
                    &state,
                    &portal,
                    None,
                    Some("The page had expired. Please sign in again.".to_owned()),
                ),
                form: FormState::labelled(LOGIN_FIELDS).with_value("email", &f.email),
                next: safe_next(&f.next).to_owned(),
            };
            return page(StatusCode::FORBIDDEN, &view);
        }
        Err(refused) => return Err(refused.into()),
    };
    let mut form_state = FormState::labelled(LOGIN_FIELDS).with_value("email", &f.email);
    let status = match state
        .login
        .login(&f.email, &Password::new(f.password), &client)
        .await
    {
        Ok(SignIn::Complete(outcome)) => {
            let jar = sign_in(&state, &mut portal, &client, jar, &outcome).await?;
            return Ok((jar, Redirect::to(safe_next(&f.next))).into_response());
        }
        // Nothing is signed in yet: the session keeps the challenge (never
        // the URL) for the code page.
        Ok(SignIn::SecondStepRequired(challenge)) => {
            if let (Some(user_id), Some(hash)) = (portal.user_id(), portal.id_hash()) {
                // Another account was signed in in this browser: it ends
                // here, as a completed sign-in would end it.
                let family = portal.data.refresh_family.as_deref();
                state
                    .account
                    .end_web_session(&user_id, &hash, family)
                    .await?;
            }
            portal
                .begin_second_step(&challenge.token, safe_next(&f.next))
                .await?;
            return Ok(Redirect::to("/login/code").into_response());
        }
        // MFA_REQUIRED_ROLES: signed in for enrolment only.
        Ok(SignIn::EnrolmentRequired(grant)) => {
            enrolment::begin(&state, &mut portal, &client, &grant.user).await?;
            return Ok(Redirect::to(enrolment::ENROLMENT_PAGE).into_response());
        }
        Err(e) => {
            let wrong = matches!(e, ServiceError::InvalidCredentials);
            let status = explain(&mut form_state, "email", e)?;
            // Either could be the wrong one: both are marked invalid, and
            // both point at the one message.
            if wrong {
                form_state.also_invalid("password", "email");
            }
            status
        }
    };
    let view = LoginPage {
        layout: layout(&state, &portal, None, None),
        form: form_state,
        next: safe_next(&f.next).to_owned(),
    };
    page(status, &view)
}

/// Binds the session to the user: a new session id (no fixation), a new
/// CSRF token, and the API refresh cookie so a same-site SPA is signed in.
pub(super) async fn sign_in(
    state: &AppState,
    portal: &mut Portal,
    client: &ClientContext,
    jar: CookieJar,
    outcome: &LoginOutcome,
) -> Result<CookieJar, PageError> {
    bind(
        state,
        portal,
        client,
        &outcome.user,
        Some(outcome.refresh_family.clone()),
        outcome.auth.clone(),
    )
    .await?;
    Ok(jar.add(refresh_cookie(&state.cookies, &outcome.refresh)))
}

/// Makes the browser's session `user`'s sign-in, of API refresh family
/// `family` (none: enrolment only, see `pages::enrolment`), proven as
/// `auth` says, and saves it.
pub(crate) async fn bind(
    state: &AppState,
    portal: &mut Portal,
    client: &ClientContext,
    user: &User,
    family: Option<String>,
    auth: Authentication,
) -> Result<(), PageError> {
    // A previous sign-in in this browser ends cleanly first.
    if let (Some(user_id), Some(hash)) = (portal.user_id(), portal.id_hash()) {
        state
            .account
            .end_web_session(&user_id, &hash, portal.data.refresh_family.as_deref())
            .await?;
    }
    portal.begin_sign_in().await?;
    portal.data.user_id = Some(user.id.as_str().to_owned());
    portal.data.signed_in_at = Some(state.clock.now());
    portal.data.token_version = user.token_version;
    // Only an enrolment-only sign-in (MFA_REQUIRED_ROLES) has no family.
    portal.data.enrolment_only = family.is_none();
    portal.data.refresh_family = family;
    portal.data.user_agent = client.user_agent.clone();
    portal.data.ip = client.ip.map(|ip| ip.to_string());
    portal.data.auth = auth;
    portal.data.second_step = None;
    portal.save().await?;
    Ok(())
}

/// Ends the portal session in the store (and its API family), and empties
/// the browser's session. `signed_out_by` is the client when the person
/// signed out (recorded as a logout), `None` when the session simply ran out.
pub(crate) async fn end_portal_session(
    state: &AppState,
    portal: &Portal,
    signed_out_by: Option<&ClientContext>,
) -> Result<(), PageError> {
    if let (Some(user_id), Some(hash)) = (portal.user_id(), portal.id_hash()) {
        let family = portal.data.refresh_family.as_deref();
        match signed_out_by {
            Some(client) => {
                state
                    .account
                    .sign_out_web_session(&user_id, &hash, family, client)
                    .await?
            }
            None => {
                state
                    .account
                    .end_web_session(&user_id, &hash, family)
                    .await?
            }
        }
    }
    portal.session.flush().await?;
    Ok(())
}

pub async fn logout(
    State(state): State<AppState>,
    portal: Portal,
    client: ClientContext,
    jar: CookieJar,
    _: CsrfForm<NoFields>,
) -> PageResult {
    end_portal_session(&state, &portal, Some(&client)).await?;
    let jar = jar.add(cleared_cookie(&state.cookies));
    Ok((jar, Redirect::to("/login?signed_out=1")).into_response())
}
