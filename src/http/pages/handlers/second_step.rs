//! The second step of a portal sign-in (issue 18): after the right
//! password, a user with an authenticator types its code (or a recovery
//! code). The challenge lives in the session, sealed (see
//! [`Portal::begin_second_step`]); the rules are the API's, from
//! [`crate::services::mfa::SecondStep`]: a used code is refused, five wrong
//! codes or five minutes end the challenge, wrong codes count towards the
//! account lock.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::sign_in::sign_in;
use super::{explain, layout, page, PageResult};
use crate::error::ApiError;
use crate::http::pages::csrf::CsrfForm;
use crate::http::pages::session::Portal;
use crate::http::pages::views::{FormState, SecondStepPage};
use crate::http::AppState;
use crate::services::mfa::{MfaError, SecondFactor};
use crate::services::{ClientContext, ServiceError};
use secrecy::ExposeSecret;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CodeForm {
    code: String,
}

fn view(
    state: &AppState,
    portal: &Portal,
    form: FormState,
    factor: SecondFactor,
) -> SecondStepPage {
    SecondStepPage {
        layout: layout(state, portal, None, None),
        form,
        recovery: factor == SecondFactor::RecoveryCode,
        next: portal
            .data
            .second_step
            .as_ref()
            .map_or_else(|| "/account".to_owned(), |pending| pending.next.clone()),
    }
}

/// Without a waiting challenge there is nothing to answer: back to the
/// password.
fn no_challenge() -> PageResult {
    Ok(Redirect::to("/login").into_response())
}

async fn code_page(state: AppState, portal: Portal, factor: SecondFactor) -> PageResult {
    if portal.data.second_step.is_none() {
        return no_challenge();
    }
    page(
        StatusCode::OK,
        &view(&state, &portal, FormState::default(), factor),
    )
}

pub async fn totp_page(State(state): State<AppState>, portal: Portal) -> PageResult {
    code_page(state, portal, SecondFactor::Totp).await
}

pub async fn recovery_page(State(state): State<AppState>, portal: Portal) -> PageResult {
    code_page(state, portal, SecondFactor::RecoveryCode).await
}

pub async fn totp_submit(
    State(state): State<AppState>,
    portal: Portal,
    client: ClientContext,
    jar: CookieJar,
    CsrfForm(f): CsrfForm<CodeForm>,
) -> PageResult {
    submit(state, portal, client, jar, f, SecondFactor::Totp).await
}

pub async fn recovery_submit(
    State(state): State<AppState>,
    portal: Portal,
    client: ClientContext,
    jar: CookieJar,
    CsrfForm(f): CsrfForm<CodeForm>,
) -> PageResult {
    submit(state, portal, client, jar, f, SecondFactor::RecoveryCode).await
}

async fn submit(
    state: AppState,
    mut portal: Portal,
    client: ClientContext,
    jar: CookieJar,
    f: CodeForm,
    factor: SecondFactor,
) -> PageResult {
    let (Some(token), Some(pending)) =
        (portal.second_step_token(), portal.data.second_step.clone())
    else {
        return no_challenge();
    };
    let mut form = FormState::default();
    let status = match state
        .second_step
        .verify(token.expose_secret(), factor, &f.code, &client)
        .await
    {
        Ok(outcome) => {
            let jar = sign_in(&state, &mut portal, &client, jar, &outcome).await?;
            return Ok((jar, Redirect::to(&pending.next)).into_response());
        }
        // Expired, ended by wrong codes, or replaced by a newer sign-in:
        // only the password can start again.
        Err(ServiceError::InvalidMfaToken) => {
            portal.data.second_step = None;
            portal.save().await?;
            return Ok(Redirect::to("/login?code_ended=1").into_response());
        }
        Err(ServiceError::Mfa(MfaError::WrongCode)) => {
            let message = match factor {
                SecondFactor::Totp => {
                    "That code is wrong or was already used. Type the code your app shows now."
                }
                SecondFactor::RecoveryCode => "That recovery code is wrong or was already used.",
            };
            form.error("code", message);
            ApiError::from(ServiceError::Mfa(MfaError::WrongCode)).status
        }
        Err(e) => explain(&mut form, "code", e)?,
    };
    page(status, &view(&state, &portal, form, factor))
}
