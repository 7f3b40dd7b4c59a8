//! Page handlers, one file per flow: GET renders, POST acts and redirects
//! (Post/Redirect/Get). Every POST reads its form through `CsrfForm`; what
//! the flows share (the layout, the query, how a refusal is explained)
//! lives here.

pub mod account;
pub mod emergency;
pub mod passkeys;
pub mod reauth;
pub mod recovery;
pub mod registration;
pub mod second_step;
pub mod sign_in;
pub mod two_step;

/// The invitation link's page (issue 19).
pub mod invitation;

/// The admin console (issue 19).
pub mod admin;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::Portal;
use super::views::{FormState, Layout, PasswordRules};
use super::{no_store, render, PageError};
use crate::error::ApiError;
use crate::http::AppState;
use crate::services::ServiceError;

type PageResult = Result<Response, PageError>;

fn layout(
    state: &AppState,
    portal: &Portal,
    signed_in_as: Option<String>,
    notice: Option<String>,
) -> Layout {
    Layout {
        app_name: state.portal.app_name.clone(),
        csrf: portal.csrf().to_owned(),
        signed_in_as,
        notice,
        emergency_until: portal
            .emergency
            .as_ref()
            .map(|window| super::views::clock_time(window.expires_at)),
    }
}

fn page(status: StatusCode, template: &impl askama::Template) -> PageResult {
    Ok(no_store(render(status, template)))
}

fn password_rules(state: &AppState) -> PasswordRules {
    PasswordRules {
        min_length: state.portal.min_password_length,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PageQuery {
    next: String,
    token: String,
    sent: Option<String>,
    signed_out: Option<String>,
    reset: Option<String>,
    expired: Option<String>,
    registered: Option<String>,
    /// The second step's challenge expired or died of wrong codes.
    code_ended: Option<String>,
}

/// Puts a refused form's reason where the person looks for it (next to
/// `field`, or next to each invalid field) and returns the status the JSON
/// API gives the same failure. The words are the API's (`crate::error`),
/// so both say the same thing. What no form can explain becomes an error
/// page.
fn explain(form: &mut FormState, field: &str, err: ServiceError) -> Result<StatusCode, PageError> {
    match err {
        ServiceError::Validation(errors) => {
            form.field_errors(errors);
            Ok(StatusCode::UNPROCESSABLE_ENTITY)
        }
        err @ (ServiceError::InvalidCredentials
        | ServiceError::WrongCurrentPassword
        | ServiceError::AccountLocked { .. }
        | ServiceError::EmailUnverified
        | ServiceError::AccountDisabled
        | ServiceError::EmailTaken) => {
            let told = ApiError::from(err);
            form.error(field, told.message);
            Ok(told.status)
        }
        other => Err(other.into()),
    }
}

/// Two password fields that must agree, checked before the service is asked.
fn mismatch(field: &'static str, message: &'static str) -> ServiceError {
    ServiceError::Validation(vec![crate::domain::FieldError::new(field, message)])
}

pub async fn index(portal: Portal) -> Response {
    let to = if portal.data.user_id.is_some() {
        "/account"
    } else {
        "/login"
    };
    Redirect::to(to).into_response()
}

/// Leaves a one-time notice for the account page and goes back to it.
async fn flash_and_return(portal: &mut Portal, message: &str) -> PageResult {
    flash_and_go(portal, message, "/account").await
}

/// Leaves a one-time notice for the page at `to` and goes there.
async fn flash_and_go(portal: &mut Portal, message: &str, to: &str) -> PageResult {
    portal.data.flash = Some(message.to_owned());
    portal.save().await?;
    Ok(Redirect::to(to).into_response())
}
