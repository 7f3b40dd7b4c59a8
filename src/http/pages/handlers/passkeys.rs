//! Passkeys on the portal (issue 18): signing in with one from the sign-in
//! (or code) page, and adding, renaming and removing them on the account
//! page. `/static/js/passkeys.js` fetches a ceremony's options from the
//! `.../options` routes (JSON, behind the form's CSRF token), runs WebAuthn
//! and submits the answer as an ordinary form; everything after that is
//! Post/Redirect/Get like the other forms.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::sign_in::sign_in;
use super::two_step::back_with;
use super::{layout, page, PageResult};
use crate::domain::User;
use crate::error::ApiError;
use crate::http::api::passkeys::CeremonyResponse;
use crate::http::pages::csrf::{CsrfForm, NoFields};
use crate::http::pages::session::Portal;
use crate::http::pages::views::{FormState, LoginPage};
use crate::http::pages::{safe_next, PageError, SignedIn};
use crate::http::AppState;
use crate::services::{ClientContext, ServiceError};

/// The script, compiled in like the stylesheet: the binary is the whole
/// deployment, and `script-src 'self'` needs it served from here.
const SCRIPT: &str = include_str!("../../../../static/js/passkeys.js");

/// Where the account actions return to: the two-step page, whose
/// passkeys section they change.
const RETURN_TO: &str = "/account/two-step";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login/passkey/options", post(sign_in_options))
        .route("/login/passkey", post(sign_in_submit))
        .route("/account/two-step/passkeys/options", post(add_options))
        .route("/account/two-step/passkeys", post(add_submit))
        .route("/account/two-step/passkeys/{id}/rename", post(rename))
        .route("/account/two-step/passkeys/{id}/remove", post(remove))
}

/// The script's route, outside the session layer (it needs no session).
pub fn script_router() -> Router<AppState> {
    Router::new().route("/static/js/passkeys.js", get(script))
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SCRIPT,
    )
}

/// One passkey as the account page lists it.
pub struct PasskeyRow {
    pub id: String,
    pub name: String,
    pub created: String,
    pub created_iso: String,
    pub last_used: Option<String>,
    pub last_used_iso: String,
}

/// What `templates/pages/_passkeys.html` needs (beside `layout`).
pub struct PasskeysSection {
    pub rows: Vec<PasskeyRow>,
}

/// The passkeys section of `user`'s account page.
pub async fn section(state: &AppState, user: &User) -> Result<PasskeysSection, PageError> {
    let when = crate::http::pages::views::date_time;
    let rows = state
        .passkeys
        .list(user)
        .await?
        .into_iter()
        .map(|p| PasskeyRow {
            created: when(p.created_at),
            created_iso: p.created_at.to_rfc3339(),
            last_used: p.last_used_at.map(when),
            last_used_iso: p.last_used_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            id: p.id,
            name: p.name,
        })
        .collect();
    Ok(PasskeysSection { rows })
}

/// A ceremony's options for the script: JSON, the API's words on refusal.
fn options_answer(
    started: Result<crate::services::mfa::CeremonyStart<impl serde::Serialize>, ServiceError>,
) -> Response {
    match started
        .map_err(ApiError::from)
        .and_then(CeremonyResponse::try_from)
    {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn sign_in_options(State(state): State<AppState>, _: CsrfForm<NoFields>) -> Response {
    options_answer(state.passkey_sign_in.options(None).await)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasskeyAnswerForm {
    ceremony_id: String,
    credential: String,
    next: String,
    name: String,
}

/// The browser's answer, as the services take it; `Null` (refused by
/// them as not a passkey answer) when the field is not JSON.
fn answer(form: &PasskeyAnswerForm) -> serde_json::Value {
    serde_json::from_str(&form.credential).unwrap_or(serde_json::Value::Null)
}

pub async fn sign_in_submit(
    State(state): State<AppState>,
    mut portal: Portal,
    client: ClientContext,
    jar: CookieJar,
    CsrfForm(f): CsrfForm<PasskeyAnswerForm>,
) -> PageResult {
    let result = state
        .passkey_sign_in
        .verify(&f.ceremony_id, &answer(&f), None, &client)
        .await;
    let refusal = match result {
        Ok(outcome) => {
            let jar = sign_in(&state, &mut portal, &client, jar, &outcome).await?;
            return Ok((jar, Redirect::to(safe_next(&f.next))).into_response());
        }
        Err(e @ (ServiceError::Mfa(_) | ServiceError::AccountLocked { .. })) => ApiError::from(e),
        Err(e) => return Err(e.into()),
    };
    let view = LoginPage {
        layout: layout(&state, &portal, None, Some(refusal.message.to_string())),
        form: FormState::default(),
        next: safe_next(&f.next).to_owned(),
    };
    page(refusal.status, &view)
}

pub async fn add_options(
    State(state): State<AppState>,
    signed_in: SignedIn,
    _: CsrfForm<NoFields>,
) -> Response {
    options_answer(
        state
            .passkeys
            .register_options(&signed_in.authenticated())
            .await,
    )
}

/// Where a change that needs a recent sign-in sends the person: the
/// step-up page, back here afterwards.
fn reauthenticate() -> Response {
    Redirect::to(&format!("/account/reauth?next={RETURN_TO}")).into_response()
}

/// A refusal the person can act on, as a notice on the account page.
async fn refused(signed_in: &mut SignedIn, err: ServiceError) -> PageResult {
    match err {
        ServiceError::ReauthenticationRequired => Ok(reauthenticate()),
        e @ (ServiceError::Mfa(_) | ServiceError::Validation(_)) => {
            let told = ApiError::from(e);
            back_with(signed_in, &told.message).await
        }
        e => Err(e.into()),
    }
}

pub async fn add_submit(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    CsrfForm(f): CsrfForm<PasskeyAnswerForm>,
) -> PageResult {
    let name = Some(f.name.as_str());
    let who = signed_in.authenticated();
    match state
        .passkeys
        .register(&who, &f.ceremony_id, &answer(&f), name, &client)
        .await
    {
        Ok(passkey) => {
            let message = format!("Passkey \u{201c}{}\u{201d} added.", passkey.name);
            back_with(&mut signed_in, &message).await
        }
        Err(e) => refused(&mut signed_in, e).await,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RenameForm {
    name: String,
}

pub async fn rename(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    Path(id): Path<String>,
    CsrfForm(f): CsrfForm<RenameForm>,
) -> PageResult {
    match state.passkeys.rename(&signed_in.user, &id, &f.name).await {
        Ok(()) => back_with(&mut signed_in, "Passkey renamed.").await,
        Err(e) => refused(&mut signed_in, e).await,
    }
}

pub async fn remove(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    Path(id): Path<String>,
    _: CsrfForm<NoFields>,
) -> PageResult {
    let who = signed_in.authenticated();
    match state.passkeys.remove(&who, &id, &client).await {
        Ok(()) => back_with(&mut signed_in, "Passkey removed.").await,
        Err(e) => refused(&mut signed_in, e).await,
    }
}
