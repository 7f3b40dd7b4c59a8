//! /api/auth/passkeys: signing in with a passkey (alone, or as the second
//! step with the login's `mfa_token`), and passkeys as the signed-in user
//! manages them (issue 18). Each ceremony is two calls: `.../options`
//! answers what to pass to `navigator.credentials.create()`/`get()` and a
//! `ceremony_id`; `.../verify` takes that id and the browser's answer.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::CookieJar;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{signed_in, signed_in_with};
use super::responses::{BearerErrors, BodyErrors, RateLimited, Unavailable};
use crate::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiJson, AuthUser, Enrolling, SignedIn};
use crate::http::middleware::rate_limit;
use crate::http::{AppState, Limiters};
use crate::services::mfa::{CeremonyStart, PasskeySignIn, Passkeys};
use crate::services::ClientContext;
use crate::storage::Passkey;

pub fn router(limiters: &Limiters) -> Router<AppState> {
    let limited = |l| rate_limit::layer(l);
    Router::new()
        .route(
            "/passkeys/login/options",
            post(login_options).layer(limited(&limiters.login)),
        )
        .route(
            "/passkeys/login/verify",
            post(login_verify).layer(limited(&limiters.login)),
        )
        .route("/passkeys/register/options", post(register_options))
        .route("/passkeys/register/verify", post(register_verify))
        .route("/passkeys", get(list))
        .route("/passkeys/{id}", patch(rename).delete(remove))
}

/// A started ceremony: pass `options` to the browser, keep `ceremony_id`
/// for the verify call.
#[derive(Serialize, ToSchema)]
pub struct CeremonyResponse {
    /// Names this ceremony at `.../verify`; single use.
    pub ceremony_id: String,
    /// Seconds until the ceremony expires.
    #[schema(example = 300)]
    pub expires_in: u64,
    /// WebAuthn options, `{"publicKey": {...}}`, with binary fields as
    /// base64url strings: decode them before `navigator.credentials`.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

impl<T: Serialize> TryFrom<CeremonyStart<T>> for CeremonyResponse {
    type Error = ApiError;

    fn try_from(start: CeremonyStart<T>) -> Result<Self, ApiError> {
        let options = serde_json::to_value(&start.options).map_err(|e| {
            tracing::error!(error = %e, "passkey options do not serialize");
            ApiError::internal()
        })?;
        Ok(Self {
            ceremony_id: start.handle.expose_secret().to_owned(),
            expires_in: start.expires_in,
            options,
        })
    }
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LoginOptionsRequest {
    /// From the `mfa_required` answer of `/api/auth/login`: the passkey is
    /// then the second step and only that user's passkeys are offered.
    /// Without it, any passkey of this site signs in on its own.
    pub mfa_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginVerifyRequest {
    pub ceremony_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get()`, as
    /// JSON (binary fields base64url).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    /// The same `mfa_token` the options were asked for with, if any.
    pub mfa_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterVerifyRequest {
    pub ceremony_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create()`, as
    /// JSON (binary fields base64url).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    /// What to call it; "Passkey" when absent or blank.
    #[schema(example = "Work laptop", max_length = 64)]
    pub name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    #[schema(example = "Work laptop", min_length = 1, max_length = 64)]
    pub name: String,
}

/// A passkey as listed (no key material).
#[derive(Serialize, ToSchema)]
pub struct PasskeyResponse {
    pub id: String,
    #[schema(example = "Work laptop")]
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Absent until first used to sign in.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<Passkey> for PasskeyResponse {
    fn from(p: Passkey) -> Self {
        Self {
            id: p.id,
            name: p.name,
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

/// Start a passkey sign-in: options for `navigator.credentials.get()`.
#[utoipa::path(
    post, path = "/api/auth/passkeys/login/options", tag = "auth",
    operation_id = "passkey_login_options",
    request_body(content = LoginOptionsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The ceremony, valid 5 minutes", body = CeremonyResponse),
        (status = 401, description = "The `mfa_token` is unknown, expired or used (`mfa_token_invalid`)", body = ErrorBody),
        (status = 409, description = "The challenged user has no passkey (`mfa_not_enabled`)", body = ErrorBody),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn login_options(
    State(sign_in): State<Arc<PasskeySignIn>>,
    ApiJson(body): ApiJson<LoginOptionsRequest>,
) -> Result<Json<CeremonyResponse>, ApiError> {
    let start = sign_in.options(body.mfa_token.as_deref()).await?;
    Ok(Json(start.try_into()?))
}

/// Finish a passkey sign-in: answers exactly what `/api/auth/login`
/// answers for a completed sign-in (access token, refresh cookie).
#[utoipa::path(
    post, path = "/api/auth/passkeys/login/verify", tag = "auth",
    operation_id = "passkey_login_verify",
    request_body(content = LoginVerifyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in; sets the refresh cookie", body = super::auth::LoginResponse, headers(("Set-Cookie" = String, description = "The refresh token: `refresh_token` (`__Secure-refresh_token` over https), HttpOnly, SameSite per REFRESH_COOKIE_SAMESITE (Strict by default), Path=/api/auth"))),
        (status = 401, description = "The ceremony is unknown, expired, used or another sign-in's (`passkey_ceremony_invalid`); the passkey was not accepted (`passkey_invalid`: unknown, another site's, not user-verified, bad signature, or its signature counter went back); or the `mfa_token` is invalid (`mfa_token_invalid`)", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Rate limited (`rate_limited`), or too many failed sign-ins for this account (`account_locked`)", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        Unavailable,
    )
)]
pub async fn login_verify(
    State(state): State<AppState>,
    client: ClientContext,
    jar: CookieJar,
    ApiJson(body): ApiJson<LoginVerifyRequest>,
) -> Result<Response, ApiError> {
    let outcome = state
        .passkey_sign_in
        .verify(
            &body.ceremony_id,
            &body.credential,
            body.mfa_token.as_deref(),
            &client,
        )
        .await?;
    Ok(signed_in(&state.cookies, jar, outcome))
}

/// Start adding a passkey: options for `navigator.credentials.create()`.
#[utoipa::path(
    post, path = "/api/auth/passkeys/register/options", tag = "account",
    operation_id = "passkey_register_options",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The ceremony, valid 5 minutes", body = CeremonyResponse),
        (status = 401, description = "Bad access token (`invalid_token`), or the sign-in is older than REAUTH_WINDOW (`reauthentication_required`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn register_options(
    State(passkeys): State<Arc<Passkeys>>,
    Enrolling(who): Enrolling,
) -> Result<Json<CeremonyResponse>, ApiError> {
    let start = passkeys.register_options(&who).await?;
    Ok(Json(start.try_into()?))
}

/// Finish adding a passkey. The owner is emailed.
#[utoipa::path(
    post, path = "/api/auth/passkeys/register/verify", tag = "account",
    operation_id = "passkey_register_verify",
    security(("bearer" = [])),
    request_body(content = RegisterVerifyRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Added. With an enrolment token (MFA_REQUIRED_ROLES), also the access token and refresh cookie of the completed sign-in", body = PasskeyAddedAnswer, headers(("Set-Cookie" = String, description = "With an enrolment token only: the refresh token, as `/api/auth/login` sets it"))),
        (status = 401, description = "Bad access token (`invalid_token`), sign-in older than REAUTH_WINDOW (`reauthentication_required`), the ceremony is unknown, expired, used or another user's (`passkey_ceremony_invalid`), or the authenticator's answer does not verify (`passkey_invalid`)", body = ErrorBody),
        (status = 409, description = "This authenticator's passkey is already registered (`passkey_already_registered`)", body = ErrorBody),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn register_verify(
    State(state): State<AppState>,
    Enrolling(who): Enrolling,
    client: ClientContext,
    jar: CookieJar,
    ApiJson(body): ApiJson<RegisterVerifyRequest>,
) -> Result<Response, ApiError> {
    let passkey: PasskeyResponse = state
        .passkeys
        .register(
            &who,
            &body.ceremony_id,
            &body.credential,
            body.name.as_deref(),
            &client,
        )
        .await?
        .into();
    // Added with an enrolment token: the sign-in it stood for is complete.
    // At registration webauthn-rs does not say whether the key can leave
    // the device, so the sign-in claims the weaker `swk`, never more than
    // was proven.
    match state
        .second_step
        .complete_enrolment(&who, "swk", &client)
        .await?
    {
        Some(outcome) => Ok(signed_in_with(
            &state.cookies,
            jar,
            StatusCode::CREATED,
            &outcome,
            |session| PasskeyEnrolledResponse { passkey, session },
        )),
        None => Ok((StatusCode::CREATED, Json(passkey)).into_response()),
    }
}

/// A passkey added with an enrolment token: the passkey and a full sign-in.
#[derive(Serialize, ToSchema)]
pub struct PasskeyEnrolledResponse {
    pub passkey: PasskeyResponse,
    #[serde(flatten)]
    pub session: super::auth::LoginResponse,
}

/// What adding a passkey answers.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documents the two shapes; handlers build each one
pub enum PasskeyAddedAnswer {
    /// With an access token: the passkey.
    Added(PasskeyResponse),
    /// With an enrolment token: the passkey and a full sign-in.
    AddedAndSignedIn(PasskeyEnrolledResponse),
}

/// The signed-in user's passkeys, oldest first.
#[utoipa::path(
    get, path = "/api/auth/passkeys", tag = "account",
    operation_id = "list_passkeys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The passkeys", body = [PasskeyResponse]),
        BearerErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn list(
    State(passkeys): State<Arc<Passkeys>>,
    AuthUser(user, _): AuthUser,
) -> Result<Json<Vec<PasskeyResponse>>, ApiError> {
    let list = passkeys.list(&user).await?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

/// Rename one of the signed-in user's passkeys.
#[utoipa::path(
    patch, path = "/api/auth/passkeys/{id}", tag = "account",
    operation_id = "rename_passkey",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A passkey id from GET /api/auth/passkeys")),
    request_body(content = RenameRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Renamed"),
        BearerErrors,
        (status = 404, description = "No such passkey of this user (`not_found`)", body = ErrorBody),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn rename(
    State(passkeys): State<Arc<Passkeys>>,
    AuthUser(user, _): AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RenameRequest>,
) -> Result<StatusCode, ApiError> {
    passkeys.rename(&user, &id, &body.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove one of the signed-in user's passkeys. The owner is emailed.
#[utoipa::path(
    delete, path = "/api/auth/passkeys/{id}", tag = "account",
    operation_id = "remove_passkey",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A passkey id from GET /api/auth/passkeys")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Bad access token (`invalid_token`), or the sign-in is older than REAUTH_WINDOW (`reauthentication_required`)", body = ErrorBody),
        (status = 404, description = "No such passkey of this user (`not_found`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn remove(
    State(passkeys): State<Arc<Passkeys>>,
    SignedIn(who): SignedIn,
    client: ClientContext,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    passkeys.remove(&who, &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
