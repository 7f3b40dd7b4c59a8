//! Password recovery: asking for the emailed link, and the reset page it
//! lands on.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::{explain, layout, mismatch, page, password_rules, PageQuery, PageResult};
use crate::domain::Password;
use crate::http::pages::csrf::CsrfForm;
use crate::http::pages::session::Portal;
use crate::http::pages::views::{
    ForgotPage, ForgotSentPage, FormState, ResetInvalidPage, ResetPage, FORGOT_FIELDS, RESET_FIELDS,
};
use crate::http::AppState;
use crate::services::{ClientContext, ServiceError};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EmailForm {
    email: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ResetForm {
    token: String,
    password: String,
    password_confirm: String,
}

pub async fn forgot_page(
    State(state): State<AppState>,
    portal: Portal,
    Query(q): Query<PageQuery>,
) -> PageResult {
    if q.sent.is_some() {
        let view = ForgotSentPage {
            layout: layout(&state, &portal, None, None),
            minutes: state.portal.reset_minutes,
        };
        return page(StatusCode::OK, &view);
    }
    let view = ForgotPage {
        layout: layout(&state, &portal, None, None),
        form: FormState::labelled(FORGOT_FIELDS),
    };
    page(StatusCode::OK, &view)
}

pub async fn forgot_submit(
    State(state): State<AppState>,
    portal: Portal,
    client: ClientContext,
    CsrfForm(f): CsrfForm<EmailForm>,
) -> PageResult {
    let Err(err) = state.recovery.forgot_password(&f.email, &client) else {
        return Ok(Redirect::to("/forgot-password?sent=1").into_response());
    };
    let mut form_state = FormState::labelled(FORGOT_FIELDS).with_value("email", &f.email);
    let status = explain(&mut form_state, "email", err)?;
    let view = ForgotPage {
        layout: layout(&state, &portal, None, None),
        form: form_state,
    };
    page(status, &view)
}

fn reset_invalid(state: &AppState, portal: &Portal) -> PageResult {
    let view = ResetInvalidPage {
        layout: layout(state, portal, None, None),
    };
    page(StatusCode::BAD_REQUEST, &view)
}

pub async fn reset_page(
    State(state): State<AppState>,
    portal: Portal,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let Some(email) = state.recovery.reset_link_email(&q.token).await? else {
        return reset_invalid(&state, &portal);
    };
    let view = ResetPage {
        layout: layout(&state, &portal, None, None),
        form: FormState::labelled(RESET_FIELDS),
        email: email.as_str().to_owned(),
        token: q.token,
        rules: password_rules(&state),
    };
    page(StatusCode::OK, &view)
}

pub async fn reset_submit(
    State(state): State<AppState>,
    portal: Portal,
    client: ClientContext,
    CsrfForm(f): CsrfForm<ResetForm>,
) -> PageResult {
    // The form shown again names the account for password managers (and
    // a link that stopped working gets its page at once).
    let Some(email) = state.recovery.reset_link_email(&f.token).await? else {
        return reset_invalid(&state, &portal);
    };
    let result = if f.password != f.password_confirm {
        Err(mismatch("password_confirm", "The passwords do not match."))
    } else {
        state
            .recovery
            .reset_password(&f.token, &Password::new(f.password), &client)
            .await
    };
    let err = match result {
        Ok(()) => return Ok(Redirect::to("/login?reset=1").into_response()),
        Err(ServiceError::InvalidResetToken) => return reset_invalid(&state, &portal),
        Err(err) => err,
    };
    let mut form_state = FormState::labelled(RESET_FIELDS);
    let status = explain(&mut form_state, "password", err)?;
    let view = ResetPage {
        layout: layout(&state, &portal, None, None),
        form: form_state,
        email: email.as_str().to_owned(),
        token: f.token,
        rules: password_rules(&state),
    };
    page(status, &view)
}
