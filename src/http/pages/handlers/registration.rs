//! Registration: the form, the emailed link that confirms the address, and
//! sending that link again.

use std::borrow::Cow;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::sign_in::sign_in;
use super::{explain, flash_and_return, layout, page, password_rules, PageQuery, PageResult};
use crate::domain::{FieldError, Password};
use crate::error::ApiError;
use crate::http::pages::csrf::{CsrfForm, NoFields};
use crate::http::pages::session::Portal;
use crate::http::pages::views::{FormState, RegisterPage, VerifyEmailPage, REGISTER_FIELDS};
use crate::http::pages::PageError;
use crate::http::pages::SignedIn;
use crate::http::AppState;
use crate::services::{ClientContext, RegisterInput, ServiceError};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RegisterForm {
    name: String,
    email: String,
    password: String,
    password_confirm: String,
}

pub async fn register_page(State(state): State<AppState>, portal: Portal) -> PageResult {
    if portal.data.user_id.is_some() {
        return Ok(Redirect::to("/account").into_response());
    }
    let (status, closed) = match state.registration.ensure_open() {
        Ok(()) => (StatusCode::OK, None),
        Err(e) => closed_reason(e)?,
    };
    let view = RegisterPage {
        layout: layout(&state, &portal, None, None),
        form: FormState::labelled(REGISTER_FIELDS),
        rules: password_rules(&state),
        closed,
    };
    page(status, &view)
}

/// The API's words for a closed registration, shown instead of the form
/// (with the API's 403 when a form was posted anyway).
fn closed_reason(e: ServiceError) -> Result<(StatusCode, Option<Cow<'static, str>>), PageError> {
    match e {
        e @ ServiceError::RegistrationClosed(_) => {
            Ok((StatusCode::OK, Some(ApiError::from(e).message)))
        }
        other => Err(other.into()),
    }
}

pub async fn register_submit(
    State(state): State<AppState>,
    mut portal: Portal,
    client: ClientContext,
    jar: CookieJar,
    CsrfForm(f): CsrfForm<RegisterForm>,
) -> PageResult {
    if let Err(e) = state.registration.ensure_open() {
        let (_, closed) = closed_reason(e)?;
        let view = RegisterPage {
            layout: layout(&state, &portal, None, None),
            form: FormState::labelled(REGISTER_FIELDS),
            rules: password_rules(&state),
            closed,
        };
        return page(StatusCode::FORBIDDEN, &view);
    }
    let mut form_state = FormState::labelled(REGISTER_FIELDS)
        .with_value("name", &f.name)
        .with_value("email", &f.email);
    let password = Password::new(f.password);
    let result = if password.expose() != f.password_confirm {
        // Check the rest too, so every problem shows at once.
        let mut errors = match state
            .registration
            .validate_registration(&f.name, &f.email, &password)
            .await
        {
            Err(ServiceError::Validation(errors)) => errors,
            _ => Vec::new(),
        };
        errors.push(FieldError::new(
            "password_confirm",
            "The passwords do not match.",
        ));
        Err(ServiceError::Validation(errors))
    } else {
        state
            .registration
            .register_and_sign_in(
                RegisterInput {
                    name: f.name.clone(),
                    email: f.email.clone(),
                    password,
                },
                &client,
            )
            .await
    };
    let status = match result {
        Ok(Some(outcome)) => {
            let jar = sign_in(&state, &mut portal, &client, jar, &outcome).await?;
            return Ok((jar, Redirect::to("/account")).into_response());
        }
        // The address must be confirmed before the first sign-in.
        Ok(None) => return Ok(Redirect::to("/login?registered=1").into_response()),
        Err(e) => explain(&mut form_state, "email", e)?,
    };
    let view = RegisterPage {
        layout: layout(&state, &portal, None, None),
        form: form_state,
        rules: password_rules(&state),
        closed: None,
    };
    page(status, &view)
}

/// The page behind the emailed link. Verifying is safe on GET: it only
/// confirms what the link proves (someone read that mailbox), so a mail
/// scanner that prefetches the link does no harm.
pub async fn verify_email_page(
    State(state): State<AppState>,
    portal: Portal,
    client: ClientContext,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let (status, verified) = match state.registration.verify_email(&q.token, &client).await {
        Ok(_) => (StatusCode::OK, true),
        Err(ServiceError::InvalidVerificationToken) => (StatusCode::BAD_REQUEST, false),
        Err(e) => return Err(e.into()),
    };
    let view = VerifyEmailPage {
        layout: layout(&state, &portal, None, None),
        verified,
        signed_in: portal.data.user_id.is_some(),
    };
    page(status, &view)
}

pub async fn resend_verification(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    _: CsrfForm<NoFields>,
) -> PageResult {
    let message = match state
        .registration
        .resend_verification(&signed_in.user)
        .await
    {
        Ok(()) => Cow::Borrowed("We have sent a new verification link to your email address."),
        // Nothing to do, which the notice says in the API's words.
        Err(e @ ServiceError::AlreadyVerified) => ApiError::from(e).message,
        Err(e) => return Err(e.into()),
    };
    flash_and_return(&mut signed_in.portal, &message).await
}
