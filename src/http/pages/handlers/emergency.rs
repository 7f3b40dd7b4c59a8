//! Emergency access from the account page (issue 19): start it with a
//! reason, or end it early. The same use-case as the API's; the window is
//! the user's, so the tokens of their apps carry it too.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::account::account_view;
use super::{flash_and_return, page, PageResult};
use crate::error::ApiError;
use crate::http::pages::csrf::{CsrfForm, NoFields};
use crate::http::pages::views::{clock_time, FormState};
use crate::http::pages::SignedIn;
use crate::http::AppState;
use crate::services::emergency_access::Caller;
use crate::services::{ClientContext, ServiceError};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct StartForm {
    reason: String,
}

pub async fn start(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    CsrfForm(f): CsrfForm<StartForm>,
) -> PageResult {
    // The API's rule: a sign-in within REAUTH_WINDOW, so an unattended
    // signed-in computer cannot break the glass.
    if let Some(to) = signed_in.needs_reauth(&state, "/account") {
        return Ok(to);
    }
    let who = signed_in.authenticated();
    let caller = Caller::from(&who);
    let refused = match state
        .emergency_access
        .start(&caller, &f.reason, &client)
        .await
    {
        Ok(grant) => {
            let message = format!(
                "Emergency access is on until {}. Everything you open is recorded, and another administrator reviews it.",
                clock_time(grant.window.expires_at)
            );
            return flash_and_return(&mut signed_in.portal, &message).await;
        }
        Err(refused) => refused,
    };
    match refused {
        ServiceError::Validation(errors) => {
            let mut form = FormState::default().with_value("reason", &f.reason);
            form.field_errors(errors);
            let mut view = account_view(&state, &signed_in, FormState::default(), None).await?;
            view.emergency.form = form;
            page(StatusCode::UNPROCESSABLE_ENTITY, &view)
        }
        told @ (ServiceError::EmergencyActive | ServiceError::EmergencyNotPermitted) => {
            let message = ApiError::from(told).message;
            flash_and_return(&mut signed_in.portal, &message).await
        }
        other => Err(other.into()),
    }
}

pub async fn end(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    _: CsrfForm<NoFields>,
) -> PageResult {
    let who = signed_in.authenticated();
    let caller = Caller::from(&who);
    let message = match state.emergency_access.end(&caller, &client).await {
        Ok(_) => "Emergency access has ended.",
        Err(ServiceError::EmergencyNotActive) => "Emergency access was not on.",
        Err(other) => return Err(other.into()),
    };
    flash_and_return(&mut signed_in.portal, message).await
}
