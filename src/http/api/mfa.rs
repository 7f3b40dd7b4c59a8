//! /api/auth/mfa: the second step of a sign-in, and two-step sign-in as
//! the signed-in user manages it (issue 18).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::CookieJar;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{signed_in, signed_in_with, LoginResponse};
use super::responses::{BearerErrors, BodyErrors, RateLimited, Unavailable};
use crate::domain::mfa::RecoveryCode;
use crate::domain::Password;
use crate::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiJson, Enrolling, SignedIn};
use crate::http::middleware::rate_limit;
use crate::http::{AppState, Limiters};
use crate::services::mfa::{MfaAccount, SecondFactor};
use crate::services::ClientContext;

pub fn router(limiters: &Limiters) -> Router<AppState> {
    Router::new()
        .route(
            "/mfa/verify",
            post(verify).layer(rate_limit::layer(&limiters.login)),
        )
        .route("/mfa", get(status))
        .route("/mfa/totp/setup", post(setup_totp))
        .route("/mfa/totp/confirm", post(confirm_totp))
        .route("/mfa/totp", axum::routing::delete(remove_totp))
        .route("/mfa/recovery-codes", post(regenerate_recovery_codes))
}

/// How the second step is answered.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MfaMethod {
    /// The 6-digit code the authenticator app shows now.
    Totp,
    /// One of the recovery codes shown when two-step sign-in was turned on.
    RecoveryCode,
}

impl From<MfaMethod> for SecondFactor {
    fn from(method: MfaMethod) -> Self {
        match method {
            MfaMethod::Totp => SecondFactor::Totp,
            MfaMethod::RecoveryCode => SecondFactor::RecoveryCode,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaVerifyRequest {
    /// From the `mfa_required` answer of `/api/auth/login`.
    pub mfa_token: String,
    pub method: MfaMethod,
    #[schema(example = "123456")]
    pub code: String,
}

/// Finish a sign-in with a second factor: answers exactly what
/// `/api/auth/login` answers for an account without one.
#[utoipa::path(
    post, path = "/api/auth/mfa/verify", tag = "auth",
    operation_id = "mfa_verify",
    request_body(content = MfaVerifyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in; sets the refresh cookie", body = super::auth::LoginResponse, headers(("Set-Cookie" = String, description = "The refresh token: `refresh_token` (`__Secure-refresh_token` over https), HttpOnly, SameSite per REFRESH_COOKIE_SAMESITE (Strict by default), Path=/api/auth"))),
        (status = 401, description = "Wrong or used code (`invalid_code`); or the `mfa_token` is unknown, expired, used or ended by 5 wrong codes (`mfa_token_invalid`): sign in again", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Rate limited (`rate_limited`), or too many failed sign-ins for this account (`account_locked`)", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        Unavailable,
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    client: ClientContext,
    jar: CookieJar,
    ApiJson(body): ApiJson<MfaVerifyRequest>,
) -> Result<Response, ApiError> {
    let outcome = state
        .second_step
        .verify(&body.mfa_token, body.method.into(), &body.code, &client)
        .await?;
    Ok(signed_in(&state.cookies, jar, outcome))
}

/// What is on for the signed-in user.
#[derive(Serialize, ToSchema)]
pub struct MfaStatusResponse {
    /// An authenticator app is confirmed: sign-in asks for its code.
    pub totp_enabled: bool,
    /// Unused recovery codes.
    #[schema(example = 10)]
    pub recovery_codes_left: u32,
    /// Passkeys registered (each a complete second factor; listed by
    /// `GET /api/auth/passkeys`).
    #[schema(example = 1)]
    pub passkeys: usize,
}

/// What an authenticator app needs, shown once. Carries the secret: keep
/// it out of logs and caches.
#[derive(Serialize, ToSchema)]
pub struct TotpSetupResponse {
    /// Base32, for typing into the app by hand.
    #[schema(example = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")]
    pub manual_entry_key: String,
    /// The `otpauth://` URI the QR code holds.
    pub otpauth_uri: String,
    /// The QR code as an SVG document.
    pub qr_svg: String,
}

/// Recovery codes, shown this once: only their hashes are kept.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodesResponse {
    #[schema(example = json!(["ABCD-EFGH-JKLM", "..."]))]
    pub recovery_codes: Vec<String>,
}

impl From<Vec<RecoveryCode>> for RecoveryCodesResponse {
    fn from(codes: Vec<RecoveryCode>) -> Self {
        Self {
            recovery_codes: codes
                .iter()
                .map(|c| c.formatted().expose_secret().to_owned())
                .collect(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirmRequest {
    /// The code the app shows now.
    #[schema(example = "123456")]
    pub code: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpRemoveRequest {
    #[schema(example = "Str0ng!Pass123", format = "password", min_length = 1)]
    pub password: String,
    /// A current authenticator code or an unused recovery code.
    #[schema(example = "123456")]
    pub code: String,
}

/// Two-step sign-in: what is on, and how many recovery codes are left.
#[utoipa::path(
    get, path = "/api/auth/mfa", tag = "account",
    operation_id = "mfa_status",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What is enrolled", body = MfaStatusResponse),
        BearerErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn status(
    State(state): State<AppState>,
    Enrolling(who): Enrolling,
) -> Result<Json<MfaStatusResponse>, ApiError> {
    let status = state.mfa.status(&who.user).await?;
    let passkeys = state.passkeys.list(&who.user).await?.len();
    Ok(Json(MfaStatusResponse {
        totp_enabled: status.totp_enabled,
        recovery_codes_left: status.recovery_codes_left,
        passkeys,
    }))
}

/// Start setting up an authenticator app: a new secret (QR code, URI and
/// text). Nothing changes at sign-in until `/mfa/totp/confirm`.
#[utoipa::path(
    post, path = "/api/auth/mfa/totp/setup", tag = "account",
    operation_id = "mfa_setup_totp",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new secret, shown once", body = TotpSetupResponse),
        (status = 401, description = "Bad access token (`invalid_token`), or the sign-in is older than REAUTH_WINDOW (`reauthentication_required`)", body = ErrorBody),
        (status = 409, description = "An authenticator is already on (`mfa_already_enabled`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn setup_totp(
    State(mfa): State<Arc<MfaAccount>>,
    Enrolling(who): Enrolling,
) -> Result<Json<TotpSetupResponse>, ApiError> {
    let setup = mfa.setup_totp(&who).await?;
    Ok(Json(TotpSetupResponse {
        manual_entry_key: setup.manual_entry_key.expose_secret().to_owned(),
        otpauth_uri: setup.otpauth_uri.expose_secret().to_owned(),
        qr_svg: setup.qr_svg,
    }))
}

/// Turn the authenticator on with its first code. Answers the 10 recovery
/// codes, the only time they are shown.
#[utoipa::path(
    post, path = "/api/auth/mfa/totp/confirm", tag = "account",
    operation_id = "mfa_confirm_totp",
    security(("bearer" = [])),
    request_body(content = TotpConfirmRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Two-step sign-in is on; the recovery codes, shown once. With an enrolment token, also the access token and the refresh cookie of a completed sign-in", body = TotpConfirmAnswer, headers(("Set-Cookie" = String, description = "With an enrolment token only: the refresh token, as `/api/auth/login` sets it"))),
        (status = 401, description = "Bad access or enrolment token (`invalid_token`), sign-in older than REAUTH_WINDOW (`reauthentication_required`), or a wrong code (`invalid_code`)", body = ErrorBody),
        (status = 409, description = "No setup is waiting for a code (`mfa_setup_required`)", body = ErrorBody),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn confirm_totp(
    State(state): State<AppState>,
    Enrolling(who): Enrolling,
    client: ClientContext,
    jar: CookieJar,
    ApiJson(body): ApiJson<TotpConfirmRequest>,
) -> Result<Response, ApiError> {
    let codes = state.mfa.confirm_totp(&who, &body.code, &client).await?;
    let codes = RecoveryCodesResponse::from(codes);
    // Confirmed with an enrolment token: the sign-in it stood for is
    // complete now, without asking for the password again.
    match state
        .second_step
        .complete_enrolment(&who, "otp", &client)
        .await?
    {
        Some(outcome) => Ok(enrolled(&state.cookies, jar, codes, outcome)),
        None => Ok(Json(codes).into_response()),
    }
}

/// Enrolment with an enrolment token is done: the recovery codes (or the
/// passkey's answer) and the session a sign-in would have started, refresh
/// cookie included.
#[derive(Serialize, ToSchema)]
pub struct EnrolledResponse {
    #[schema(example = json!(["ABCD-EFGH-JKLM", "..."]))]
    pub recovery_codes: Vec<String>,
    #[serde(flatten)]
    pub session: LoginResponse,
}

/// What confirming an authenticator answers.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum TotpConfirmAnswer {
    /// With an access token: the recovery codes.
    Codes(RecoveryCodesResponse),
    /// With an enrolment token: the codes and a full sign-in.
    CodesAndSession(EnrolledResponse),
}

fn enrolled(
    cookies: &crate::http::CookieSettings,
    jar: CookieJar,
    codes: RecoveryCodesResponse,
    outcome: crate::services::LoginOutcome,
) -> Response {
    signed_in_with(cookies, jar, StatusCode::OK, &outcome, |session| {
        EnrolledResponse {
            recovery_codes: codes.recovery_codes,
            session,
        }
    })
}

/// Turn the authenticator off (its recovery codes go too). Needs the
/// password and a current code or a recovery code.
#[utoipa::path(
    delete, path = "/api/auth/mfa/totp", tag = "account",
    operation_id = "mfa_remove_totp",
    security(("bearer" = [])),
    request_body(content = TotpRemoveRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Two-step sign-in is off"),
        (status = 401, description = "Bad access token (`invalid_token`), sign-in older than REAUTH_WINDOW (`reauthentication_required`), wrong password (`invalid_credentials`) or wrong code (`invalid_code`)", body = ErrorBody),
        (status = 409, description = "Two-step sign-in is not on (`mfa_not_enabled`)", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Rate limited (`rate_limited`), or too many failed attempts for this account (`account_locked`)", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        Unavailable,
    )
)]
pub async fn remove_totp(
    State(mfa): State<Arc<MfaAccount>>,
    SignedIn(who): SignedIn,
    client: ClientContext,
    ApiJson(body): ApiJson<TotpRemoveRequest>,
) -> Result<StatusCode, ApiError> {
    mfa.remove_totp(&who, &Password::new(body.password), &body.code, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new set of 10 recovery codes; the old set stops working.
#[utoipa::path(
    post, path = "/api/auth/mfa/recovery-codes", tag = "account",
    operation_id = "mfa_regenerate_recovery_codes",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new codes, shown once", body = RecoveryCodesResponse),
        (status = 401, description = "Bad access token (`invalid_token`), or the sign-in is older than REAUTH_WINDOW (`reauthentication_required`)", body = ErrorBody),
        (status = 409, description = "Two-step sign-in is not on (`mfa_not_enabled`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn regenerate_recovery_codes(
    State(mfa): State<Arc<MfaAccount>>,
    SignedIn(who): SignedIn,
    client: ClientContext,
) -> Result<Json<RecoveryCodesResponse>, ApiError> {
    let codes = mfa.regenerate_recovery_codes(&who, &client).await?;
    Ok(Json(codes.into()))
}
