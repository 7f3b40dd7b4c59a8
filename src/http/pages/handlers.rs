//! Page handlers: GET renders, POST acts and redirects (Post/Redirect/Get).

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::session::Portal;
use super::views::{
    AccountPage, ForgotPage, ForgotSentPage, FormState, Layout, LoginPage, PasswordRules,
    RegisterPage, ResetInvalidPage, ResetPage, SessionRow, UserView, VerifyEmailPage,
};
use super::{check_csrf, no_store, render, safe_next, PageError, SignedIn};
use crate::domain::Password;
use crate::http::api::auth::{cleared_cookie, refresh_cookie};
use crate::http::AppState;
use crate::services::{ClientContext, CurrentSession, LoginOutcome, RegisterInput, ServiceError};

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
    }
}

fn page(status: StatusCode, template: &impl askama::Template) -> PageResult {
    Ok(no_store(render(status, template)))
}

/// Form payloads default every field, so a missing one is a validation
/// message, not a rejection.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    csrf: String,
    email: String,
    password: String,
    next: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RegisterForm {
    csrf: String,
    name: String,
    email: String,
    password: String,
    password_confirm: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EmailForm {
    csrf: String,
    email: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ResetForm {
    csrf: String,
    token: String,
    password: String,
    password_confirm: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ChangePasswordForm {
    csrf: String,
    current_password: String,
    new_password: String,
    password_confirm: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SessionForm {
    csrf: String,
    session: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CsrfForm {
    csrf: String,
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
}

/// Unreadable form bodies are a 400 page, not axum's plain-text rejection.
fn form<T>(
    result: Result<Form<T>, axum::extract::rejection::FormRejection>,
) -> Result<T, PageError> {
    result.map(|Form(f)| f).map_err(|_| PageError::BadRequest)
}

/// Puts a refused form's reason where the person looks for it (next to
/// `field`, or next to each invalid field) and returns the status the JSON
/// API gives the same failure. What no form can explain becomes an error
/// page.
fn explain(form: &mut FormState, field: &str, err: ServiceError) -> Result<StatusCode, PageError> {
    let (message, status) = match err {
        ServiceError::Validation(errors) => {
            form.field_errors(errors);
            return Ok(StatusCode::UNPROCESSABLE_ENTITY);
        }
        ServiceError::InvalidCredentials => (
            "The email or password is not correct.".to_owned(),
            StatusCode::UNAUTHORIZED,
        ),
        ServiceError::WrongCurrentPassword => (
            "Your current password is not correct.".to_owned(),
            StatusCode::UNAUTHORIZED,
        ),
        ServiceError::AccountLocked { retry_after } => (
            format!(
                "Too many failed sign-ins for this email. Try again in {}, or reset your password.",
                crate::error::wait_in_words(crate::error::ceil_secs(retry_after))
            ),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        ServiceError::EmailUnverified => (
            "Confirm your email address first: we have sent you a new link. Open it, then sign in."
                .to_owned(),
            StatusCode::FORBIDDEN,
        ),
        ServiceError::EmailTaken => (
            "An account with this email already exists. Sign in, or reset your password."
                .to_owned(),
            StatusCode::CONFLICT,
        ),
        other => return Err(other.into()),
    };
    form.error(field, message);
    Ok(status)
}

pub async fn index(portal: Portal) -> Response {
    let to = if portal.data.user_id.is_some() {
        "/account"
    } else {
        "/login"
    };
    Redirect::to(to).into_response()
}

// ----- sign in -----

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
        form: FormState::default(),
        next: safe_next(&q.next).to_owned(),
    };
    page(StatusCode::OK, &view)
}

pub async fn login_submit(
    State(state): State<AppState>,
    mut portal: Portal,
    client: ClientContext,
    jar: CookieJar,
    headers: HeaderMap,
    body: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> PageResult {
    let f = form(body)?;
    if portal.lost_its_form_cookie() && !f.csrf.is_empty() {
        // The sign-in form outlived the browser's form cookie (a browser
        // restarted with the page still open): nothing was done, so offer
        // the form again rather than an error page.
        let view = LoginPage {
            layout: layout(
                &state,
                &portal,
                None,
                Some("The page had expired. Please sign in again.".to_owned()),
            ),
            form: FormState::default().with_value("email", &f.email),
            next: safe_next(&f.next).to_owned(),
        };
        return page(StatusCode::FORBIDDEN, &view);
    }
    check_csrf(&state, &portal, &f.csrf, &headers)?;
    let mut form_state = FormState::default().with_value("email", &f.email);
    let status = match state
        .login
        .login(&f.email, &Password::new(f.password), &client)
        .await
    {
        Ok(outcome) => {
            let jar = sign_in(&state, &mut portal, &client, jar, &outcome).await?;
            return Ok((jar, Redirect::to(safe_next(&f.next))).into_response());
        }
        Err(e) => explain(&mut form_state, "email", e)?,
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
async fn sign_in(
    state: &AppState,
    portal: &mut Portal,
    client: &ClientContext,
    jar: CookieJar,
    outcome: &LoginOutcome,
) -> Result<CookieJar, PageError> {
    // A previous sign-in in this browser ends cleanly first.
    if let (Some(user_id), Some(hash)) = (portal.user_id(), portal.id_hash()) {
        state
            .account
            .end_web_session(&user_id, &hash, portal.data.refresh_family.as_deref())
            .await?;
    }
    portal.begin_sign_in().await?;
    portal.data.user_id = Some(outcome.user.id.as_str().to_owned());
    portal.data.signed_in_at = Some(state.clock.now());
    portal.data.token_version = outcome.user.token_version;
    portal.data.refresh_family = Some(outcome.refresh_family.clone());
    portal.data.user_agent = client.user_agent.clone();
    portal.data.ip = client.ip.map(|ip| ip.to_string());
    portal.save().await?;
    Ok(jar.add(refresh_cookie(&state.cookies, &outcome.refresh)))
}

/// Ends the portal session in the store (and its API family), and empties
/// the browser's session. `signed_out_by` is the client when the person
/// signed out (recorded as a logout), `None` when the session simply ran out.
pub(super) async fn end_portal_session(
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
    headers: HeaderMap,
    body: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> PageResult {
    let f = form(body)?;
    check_csrf(&state, &portal, &f.csrf, &headers)?;
    end_portal_session(&state, &portal, Some(&client)).await?;
    let jar = jar.add(cleared_cookie(&state.cookies));
    Ok((jar, Redirect::to("/login?signed_out=1")).into_response())
}

// ----- registration -----

pub async fn register_page(State(state): State<AppState>, portal: Portal) -> PageResult {
    if portal.data.user_id.is_some() {
        return Ok(Redirect::to("/account").into_response());
    }
    let view = RegisterPage {
        layout: layout(&state, &portal, None, None),
        form: FormState::default(),
        rules: PasswordRules {
            min_length: state.portal.min_password_length,
        },
    };
    page(StatusCode::OK, &view)
}

pub async fn register_submit(
    State(state): State<AppState>,
    mut portal: Portal,
    client: ClientContext,
    jar: CookieJar,
    headers: HeaderMap,
    body: Result<Form<RegisterForm>, axum::extract::rejection::FormRejection>,
) -> PageResult {
    let f = form(body)?;
    check_csrf(&state, &portal, &f.csrf, &headers)?;
    let mut form_state = FormState::default()
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
        errors.push(crate::domain::FieldError::new(
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
        rules: PasswordRules {
            min_length: state.portal.min_password_length,
        },
    };
    page(status, &view)
}

// ----- forgot / reset -----

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
        form: FormState::default(),
    };
    page(StatusCode::OK, &view)
}

pub async fn forgot_submit(
    State(state): State<AppState>,
    portal: Portal,
    client: ClientContext,
    headers: HeaderMap,
    body: Result<Form<EmailForm>, axum::extract::rejection::FormRejection>,
) -> PageResult {
    let f = form(body)?;
    check_csrf(&state, &portal, &f.csrf, &headers)?;
    let Err(err) = state.recovery.forgot_password(&f.email, &client) else {
        return Ok(Redirect::to("/forgot-password?sent=1").into_response());
    };
    let mut form_state = FormState::default().with_value("email", &f.email);
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
    if !state.recovery.reset_token_is_valid(&q.token).await? {
        return reset_invalid(&state, &portal);
    }
    let view = ResetPage {
        layout: layout(&state, &portal, None, None),
        form: FormState::default(),
        token: q.token,
        rules: PasswordRules {
            min_length: state.portal.min_password_length,
        },
    };
    page(StatusCode::OK, &view)
}

pub async fn reset_submit(
    State(state): State<AppState>,
    portal: Portal,
    client: ClientContext,
    headers: HeaderMap,
    body: Result<Form<ResetForm>, axum::extract::rejection::FormRejection>,
) -> PageResult {
    let f = form(body)?;
    check_csrf(&state, &portal, &f.csrf, &headers)?;
    let result = if f.password != f.password_confirm {
        if !state.recovery.reset_token_is_valid(&f.token).await? {
            return reset_invalid(&state, &portal);
        }
        Err(ServiceError::Validation(vec![
            crate::domain::FieldError::new("password_confirm", "The passwords do not match."),
        ]))
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
    let mut form_state = FormState::default();
    let status = explain(&mut form_state, "password", err)?;
    let view = ResetPage {
        layout: layout(&state, &portal, None, None),
        form: form_state,
        token: f.token,
        rules: PasswordRules {
            min_length: state.portal.min_password_length,
        },
    };
    page(status, &view)
}

// ----- email verification -----

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
    headers: HeaderMap,
    body: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> PageResult {
    let f = form(body)?;
    check_csrf(&state, &signed_in.portal, &f.csrf, &headers)?;
    let message = match state
        .registration
        .resend_verification(&signed_in.user)
        .await
    {
        Ok(()) => "We have sent a new verification link to your email address.",
        Err(ServiceError::AlreadyVerified) => "Your email address is already verified.",
        Err(e) => return Err(e.into()),
    };
    flash_and_return(&mut signed_in.portal, message).await
}

// ----- account -----

fn current(portal: &Portal) -> CurrentSession {
    CurrentSession {
        web: portal.id_hash(),
        family: portal.data.refresh_family.clone(),
    }
}

async fn account_view(
    state: &AppState,
    signed_in: &SignedIn,
    form: FormState,
    notice: Option<String>,
) -> Result<AccountPage, PageError> {
    let user = &signed_in.user;
    let sessions = state
        .account
        .list_sessions(&user.id, &current(&signed_in.portal))
        .await?;
    let when = |t: chrono::DateTime<chrono::Utc>| t.format("%d %b %Y, %H:%M UTC").to_string();
    Ok(AccountPage {
        layout: layout(
            state,
            &signed_in.portal,
            Some(user.name.as_str().to_owned()),
            notice,
        ),
        form,
        user: UserView {
            name: user.name.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
            role: user.role.as_str(),
            verified: user.verified,
        },
        sessions: sessions
            .into_iter()
            .map(|s| SessionRow {
                device: match s.kind {
                    crate::services::SessionKind::Browser => {
                        super::views::device_name(s.user_agent.as_deref())
                    }
                    crate::services::SessionKind::Api => {
                        format!(
                            "App: {}",
                            super::views::device_name(s.user_agent.as_deref())
                        )
                    }
                },
                ip: s.ip_address.unwrap_or_else(|| "unknown".to_owned()),
                created: when(s.created_at),
                created_iso: s.created_at.to_rfc3339(),
                last_used: when(s.last_used_at),
                last_used_iso: s.last_used_at.to_rfc3339(),
                current: s.current,
                id: s.id,
            })
            .collect(),
        rules: PasswordRules {
            min_length: state.portal.min_password_length,
        },
    })
}

pub async fn account_page(State(state): State<AppState>, mut signed_in: SignedIn) -> PageResult {
    let notice = signed_in.portal.data.flash.take();
    if notice.is_some() {
        signed_in.portal.save().await?;
    }
    let view = account_view(&state, &signed_in, FormState::default(), notice).await?;
    page(StatusCode::OK, &view)
}

async fn flash_and_return(portal: &mut Portal, message: &str) -> PageResult {
    portal.data.flash = Some(message.to_owned());
    portal.save().await?;
    Ok(Redirect::to("/account").into_response())
}

pub async fn change_password(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    headers: HeaderMap,
    body: Result<Form<ChangePasswordForm>, axum::extract::rejection::FormRejection>,
) -> PageResult {
    let f = form(body)?;
    check_csrf(&state, &signed_in.portal, &f.csrf, &headers)?;
    let result = if f.new_password != f.password_confirm {
        Err(ServiceError::Validation(vec![
            crate::domain::FieldError::new("password_confirm", "The new passwords do not match."),
        ]))
    } else {
        state
            .account
            .change_password(
                &signed_in.user,
                &Password::new(f.current_password),
                &Password::new(f.new_password),
                &current(&signed_in.portal),
                &client,
            )
            .await
    };
    let mut form_state = FormState::default();
    let status = match result {
        Ok(token_version) => {
            // This session stays signed in across the cut-off that ended
            // every other one.
            signed_in.portal.data.token_version = token_version;
            return flash_and_return(
                &mut signed_in.portal,
                "Your password has been changed. You were signed out everywhere else.",
            )
            .await;
        }
        Err(e) => explain(&mut form_state, "current_password", e)?,
    };
    let view = account_view(&state, &signed_in, form_state, None).await?;
    page(status, &view)
}

pub async fn end_session(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    headers: HeaderMap,
    body: Result<Form<SessionForm>, axum::extract::rejection::FormRejection>,
) -> PageResult {
    let f = form(body)?;
    check_csrf(&state, &signed_in.portal, &f.csrf, &headers)?;
    let message = if state
        .account
        .end_session(&signed_in.user.id, &f.session, &client)
        .await?
    {
        "That session has been signed out."
    } else {
        "That session had already ended."
    };
    flash_and_return(&mut signed_in.portal, message).await
}

pub async fn end_all_sessions(
    State(state): State<AppState>,
    signed_in: SignedIn,
    client: ClientContext,
    jar: CookieJar,
    headers: HeaderMap,
    body: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> PageResult {
    let f = form(body)?;
    check_csrf(&state, &signed_in.portal, &f.csrf, &headers)?;
    state
        .account
        .end_other_sessions(&signed_in.user.id, &CurrentSession::default(), &client)
        .await?;
    signed_in.portal.session.flush().await?;
    let jar = jar.add(cleared_cookie(&state.cookies));
    Ok((jar, Redirect::to("/login?signed_out=1")).into_response())
}
