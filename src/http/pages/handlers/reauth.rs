//! Re-authentication (portal step-up, issue 18): before changing how the
//! account signs in, or its password, a session must have proved who it
//! is within REAUTH_WINDOW. This page asks again (the password, and a code
//! when the user has an authenticator) and goes back to `next`, a local
//! path only.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::{explain, layout, page, PageQuery, PageResult};
use crate::domain::Password;
use crate::error::ApiError;
use crate::http::pages::csrf::CsrfForm;
use crate::http::pages::views::{FormState, ReauthPage, REAUTH_FIELDS};
use crate::http::pages::{safe_next, PageError, SignedIn};
use crate::http::AppState;
use crate::services::mfa::MfaError;
use crate::services::{ClientContext, ServiceError};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ReauthForm {
    password: String,
    code: String,
    next: String,
}

async fn view(
    state: &AppState,
    signed_in: &SignedIn,
    form: FormState,
    next: &str,
) -> Result<ReauthPage, PageError> {
    let status = state.mfa.status(&signed_in.user).await?;
    Ok(ReauthPage {
        layout: layout(
            state,
            &signed_in.portal,
            Some(signed_in.user.name.as_str().to_owned()),
            None,
        ),
        form,
        needs_code: status.totp_enabled,
        next: safe_next(next).to_owned(),
    })
}

pub async fn reauth_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let view = view(
        &state,
        &signed_in,
        FormState::labelled(REAUTH_FIELDS),
        &q.next,
    )
    .await?;
    page(StatusCode::OK, &view)
}

pub async fn reauth_submit(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    CsrfForm(f): CsrfForm<ReauthForm>,
) -> PageResult {
    let mut form = FormState::labelled(REAUTH_FIELDS);
    let status = match state
        .mfa
        .reauthenticate(
            &signed_in.user,
            &Password::new(f.password),
            &f.code,
            &client,
        )
        .await
    {
        Ok(auth) => {
            signed_in.portal.data.auth = auth;
            signed_in.portal.save().await?;
            return Ok(Redirect::to(safe_next(&f.next)).into_response());
        }
        Err(ServiceError::Mfa(MfaError::WrongCode)) => {
            let err = ServiceError::Mfa(MfaError::WrongCode);
            form.error(
                "code",
                "That code is wrong or was already used. Type the code your app shows now, or an unused recovery code.",
            );
            ApiError::from(err).status
        }
        Err(e) => explain(&mut form, "password", e)?,
    };
    let view = view(&state, &signed_in, form, &f.next).await?;
    page(status, &view)
}
