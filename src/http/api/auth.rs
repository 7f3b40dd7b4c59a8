//! /api/auth: register, login, refresh, logout, me, forgot and reset password.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::CookieJar;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::cookies::{cleared_cookie, refresh_cookie, CookieOrigin};
use super::responses::{
    BearerErrors, BodyErrors, LinkErrors, RateLimited, RefreshTokenInBody, Unavailable,
};
use crate::domain::{Password, Role, User};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{ApiJson, AuthUser, NoRefreshTokenInBody, SignedIn};
use crate::http::middleware::rate_limit;
use crate::http::{AppState, CookieSettings, Limiters};
use crate::services::sessions::Authenticated;
use crate::services::tokens::AccessToken;
use crate::services::{
    Account, ClientContext, CurrentSession, EnrolmentGrant, LoginOutcome, Recovery, Refreshed,
    RegisterInput, Registration, SessionInfo, SignIn,
};

pub fn router(limiters: &Limiters) -> axum::Router<AppState> {
    let limited = |l| rate_limit::layer(l);
    Router::new()
        .route(
            "/register",
            post(register).layer(limited(&limiters.register)),
        )
        .route("/login", post(login).layer(limited(&limiters.login)))
        .route("/refresh", post(refresh).layer(limited(&limiters.refresh)))
        .route("/logout", post(logout).layer(limited(&limiters.logout)))
        .route("/me", get(me))
        .route("/change-password", post(change_password))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}", axum::routing::delete(end_session))
        .route("/logout-all", post(logout_all))
        .route(
            "/forgot-password",
            post(forgot_password).layer(limited(&limiters.forgot_password)),
        )
        .route(
            "/reset-password",
            post(reset_password).layer(limited(&limiters.reset_password)),
        )
}

// ----- request and response bodies -----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(example = "Dr Jane Smith", min_length = 1, max_length = 100)]
    pub name: String,
    #[schema(example = "jane@example.com", format = "email")]
    pub email: String,
    #[schema(
        example = "Str0ng!Pass123",
        min_length = 12,
        max_length = 128,
        format = "password"
    )]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "jane@example.com", min_length = 1)]
    pub email: String,
    #[schema(example = "Str0ng!Pass123", format = "password", min_length = 1)]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotPasswordRequest {
    #[schema(example = "jane@example.com", format = "email")]
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// The token from the emailed link.
    pub token: String,
    #[schema(example = "N3w!Passphrase-2026", format = "password")]
    pub password: String,
}

/// A user as the API shows it: never a password hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub id: String,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub verified: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&User> for UserResponse {
    fn from(user: &User) -> Self {
        Self {
            id: user.id.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
            role: user.role.clone(),
            verified: user.verified,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    pub expires_in: u64,
}

impl From<&AccessToken> for TokenResponse {
    fn from(access: &AccessToken) -> Self {
        Self {
            access_token: access.token.clone(),
            token_type: "Bearer",
            expires_in: access.expires_in,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    #[schema(example = 900)]
    pub expires_in: u64,
    pub user: UserResponse,
}

/// The right password for an account with two-step sign-in on: nothing is
/// signed in yet. Send `mfa_token` with a code to `/api/auth/mfa/verify`.
#[derive(Serialize, ToSchema)]
pub struct MfaRequiredResponse {
    /// Always `true`: tells this answer from a completed sign-in.
    pub mfa_required: bool,
    /// Single use, bound to this sign-in attempt; dies after 5 wrong codes.
    pub mfa_token: String,
    /// What `/api/auth/mfa/verify` accepts as `method`.
    /// `passkey`: answer with `/api/auth/passkeys/login/options` and
    /// `/login/verify`, passing this `mfa_token`.
    #[schema(example = json!(["totp", "recovery_code", "passkey"]))]
    pub methods: Vec<&'static str>,
    /// Seconds the token stays valid.
    #[schema(example = 300)]
    pub expires_in: u64,
}

/// The right password for an account that must have a second factor
/// (MFA_REQUIRED_ROLES, MFA_REQUIRED_FOR_ALL) and has none: no session and
/// no refresh cookie, but a Bearer token that only the enrolment routes
/// accept (`GET /api/auth/mfa`, `POST /api/auth/mfa/totp/setup` and
/// `/totp/confirm`, passkey registration); every other route answers 401
/// `mfa_enrolment_required`. Confirming a factor with it answers a full
/// sign-in.
#[derive(Serialize, ToSchema)]
pub struct EnrolmentRequiredResponse {
    /// Always `true`: tells this answer from a completed sign-in.
    pub mfa_enrolment_required: bool,
    pub enrolment_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds the enrolment token stays valid.
    #[schema(example = 600)]
    pub expires_in: u64,
}

/// What the right password answers: signed in, a second step, or
/// enrolment first.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginAnswer {
    SignedIn(LoginResponse),
    MfaRequired(MfaRequiredResponse),
    EnrolmentRequired(EnrolmentRequiredResponse),
}

/// What a refresh answers: a new access token, or (the policy now asks
/// this user for a second factor) an enrolment token.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum RefreshAnswer {
    Refreshed(TokenResponse),
    EnrolmentRequired(EnrolmentRequiredResponse),
}

#[derive(Serialize, ToSchema)]
pub struct MessageResponse {
    pub message: &'static str,
}

// ----- handlers -----

/// Register a new account (role DEFAULT_ROLE, `doctor` unless configured;
/// unverified). Only while REGISTRATION is `open`.
#[utoipa::path(
    post, path = "/api/auth/register", tag = "auth",
    operation_id = "register",
    request_body(content = RegisterRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Account created", body = UserResponse),
        (status = 403, description = "REGISTRATION is `invite` or `closed`: accounts come from an administrator (`registration_closed`)", body = ErrorBody),
        (status = 409, description = "Email already registered (`email_taken`)", body = ErrorBody),
        BodyErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn register(
    State(registration): State<Arc<Registration>>,
    client: ClientContext,
    body: Result<ApiJson<RegisterRequest>, ApiError>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    // Closed is the answer whatever was sent, even a body that would not
    // parse.
    registration.ensure_open()?;
    let ApiJson(body) = body?;
    let user = registration
        .register(
            RegisterInput {
                name: body.name,
                email: body.email,
                password: Password::new(body.password),
            },
            &client,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(UserResponse::from(&user))))
}

/// Sign in: access token in the body, refresh token in an HttpOnly cookie.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth",
    operation_id = "login",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in (sets the refresh cookie); or, with two-step sign-in on, `mfa_required` with an `mfa_token` and no token or cookie; or, when MFA_REQUIRED_ROLES/MFA_REQUIRED_FOR_ALL asks this user for a second factor they do not have, `mfa_enrolment_required` with an `enrolment_token` (only the enrolment routes accept it) and no cookie", body = LoginAnswer, headers(("Set-Cookie" = String, description = "The refresh token: `refresh_token` (`__Secure-refresh_token` over https), HttpOnly, SameSite per REFRESH_COOKIE_SAMESITE (Strict by default), Path=/api/auth"))),
        (status = 401, description = "Wrong email or password (`invalid_credentials`)", body = ErrorBody),
        (status = 403, description = "REQUIRE_VERIFIED_EMAIL is on and the address is not verified yet (`email_unverified`); a new link is emailed", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Rate limited (`rate_limited`), or too many failed sign-ins for this email (`account_locked`)", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        Unavailable,
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: ClientContext,
    jar: CookieJar,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    match state
        .login
        .login(&body.email, &Password::new(body.password), &client)
        .await?
    {
        SignIn::Complete(outcome) => Ok(signed_in(&state.cookies, jar, *outcome)),
        SignIn::SecondStepRequired(challenge) => Ok(Json(MfaRequiredResponse {
            mfa_required: true,
            mfa_token: challenge.token.expose_secret().to_owned(),
            methods: challenge.methods,
            expires_in: challenge.expires_in,
        })
        .into_response()),
        SignIn::EnrolmentRequired(grant) => Ok(Json(enrolment_required(&grant)).into_response()),
    }
}

/// The answer of a completed sign-in: the access token in the body, the
/// refresh token in its cookie.
pub(super) fn signed_in(
    cookies: &CookieSettings,
    jar: CookieJar,
    outcome: LoginOutcome,
) -> Response {
    let jar = jar.add(refresh_cookie(cookies, &outcome.refresh));
    (jar, Json(login_response(&outcome))).into_response()
}

/// A completed sign-in whose answer says more than the session (an
/// enrolment: what was enrolled, shown once): the body `wrap` makes of the
/// sign-in's answer, with `status`, and the refresh cookie.
pub(super) fn signed_in_with<T: Serialize>(
    cookies: &CookieSettings,
    jar: CookieJar,
    status: StatusCode,
    outcome: &LoginOutcome,
    wrap: impl FnOnce(LoginResponse) -> T,
) -> Response {
    let jar = jar.add(refresh_cookie(cookies, &outcome.refresh));
    (status, jar, Json(wrap(login_response(outcome)))).into_response()
}

/// The body of a completed sign-in.
pub(super) fn login_response(outcome: &LoginOutcome) -> LoginResponse {
    LoginResponse {
        access_token: outcome.access.token.clone(),
        token_type: "Bearer",
        expires_in: outcome.access.expires_in,
        user: UserResponse::from(&outcome.user),
    }
}

/// The gate's answer (MFA_REQUIRED_ROLES): no session, an enrolment token.
fn enrolment_required(grant: &EnrolmentGrant) -> EnrolmentRequiredResponse {
    EnrolmentRequiredResponse {
        mfa_enrolment_required: true,
        enrolment_token: grant.token.token.clone(),
        token_type: "Bearer",
        expires_in: grant.token.expires_in,
    }
}

/// Exchange the refresh cookie for a new access token and a new refresh
/// cookie (rotation: the presented token stops working).
#[utoipa::path(
    post, path = "/api/auth/refresh", tag = "auth",
    operation_id = "refresh",
    security(("refresh_cookie" = [])),
    responses(
        (status = 200, description = "New access token; sets a new refresh cookie. When the policy (MFA_REQUIRED_ROLES) now asks this user for a second factor they do not have: `mfa_enrolment_required` with an `enrolment_token` instead (the cookie still rotates)", body = RefreshAnswer, headers(("Set-Cookie" = String, description = "The refresh token: `refresh_token` (`__Secure-refresh_token` over https), HttpOnly, SameSite per REFRESH_COOKIE_SAMESITE (Strict by default), Path=/api/auth"))),
        (status = 401, description = "Missing, expired, revoked or unknown refresh token (`invalid_refresh_token`); the cookie is cleared", body = ErrorBody, headers(("Set-Cookie" = String, description = "Clears the refresh cookie (`Max-Age=0`)"))),
        (status = 403, description = "REFRESH_COOKIE_SAMESITE=none and the Origin is missing or not in CORS_ORIGINS (`origin_not_allowed`)", body = ErrorBody),
        RefreshTokenInBody,
        RateLimited,
        Unavailable,
    )
)]
pub async fn refresh(
    _: CookieOrigin,
    State(state): State<AppState>,
    client: ClientContext,
    jar: CookieJar,
    _: NoRefreshTokenInBody,
) -> Result<Response, ApiError> {
    let presented = jar.get(state.cookies.name).map(|c| c.value().to_owned());
    match state.sessions.refresh(presented.as_deref(), &client).await {
        Ok(Refreshed::Complete(outcome)) => {
            let jar = jar.add(refresh_cookie(&state.cookies, &outcome.refresh));
            Ok((jar, Json(TokenResponse::from(&outcome.access))).into_response())
        }
        Ok(Refreshed::EnrolmentRequired { refresh, enrolment }) => {
            let jar = jar.add(refresh_cookie(&state.cookies, &refresh));
            Ok((jar, Json(enrolment_required(&enrolment))).into_response())
        }
        // A dead cookie is useless to the browser: clear it with the 401.
        Err(e) => {
            let jar = jar.add(cleared_cookie(&state.cookies));
            Ok((jar, ApiError::from(e)).into_response())
        }
    }
}

/// Sign out: ends the sign-in (its refresh-token family, and with it the
/// access tokens it issued) and clears the cookie.
#[utoipa::path(
    post, path = "/api/auth/logout", tag = "auth",
    operation_id = "logout",
    security((), ("refresh_cookie" = [])),
    responses(
        (status = 204, description = "Signed out (also when there was no session)", headers(("Set-Cookie" = String, description = "Clears the refresh cookie (`Max-Age=0`)"))),
        (status = 403, description = "REFRESH_COOKIE_SAMESITE=none and the Origin is missing or not in CORS_ORIGINS (`origin_not_allowed`)", body = ErrorBody),
        RefreshTokenInBody,
        RateLimited,
        Unavailable,
    )
)]
pub async fn logout(
    _: CookieOrigin,
    State(state): State<AppState>,
    client: ClientContext,
    jar: CookieJar,
    _: NoRefreshTokenInBody,
) -> Result<Response, ApiError> {
    let presented = jar.get(state.cookies.name).map(|c| c.value().to_owned());
    state.sessions.logout(presented.as_deref(), &client).await?;
    let jar = jar.add(cleared_cookie(&state.cookies));
    Ok((StatusCode::NO_CONTENT, jar).into_response())
}

/// The signed-in user.
#[utoipa::path(
    get, path = "/api/auth/me", tag = "auth",
    operation_id = "get_me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user behind the access token", body = UserResponse),
        BearerErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn me(AuthUser(user, _): AuthUser) -> Json<UserResponse> {
    Json(UserResponse::from(&user))
}

const FORGOT_MESSAGE: &str =
    "If an account exists for that email, we have sent a link to reset its password.";

/// Ask for a password-reset email. The answer is the same whether or not
/// the account exists.
#[utoipa::path(
    post, path = "/api/auth/forgot-password", tag = "auth",
    operation_id = "forgot_password",
    request_body(content = ForgotPasswordRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted (always, for any well-formed email)", body = MessageResponse),
        BodyErrors,
        (status = 422, description = "Not an email address", body = ErrorBody),
        RateLimited,
    )
)]
pub async fn forgot_password(
    State(recovery): State<Arc<Recovery>>,
    client: ClientContext,
    ApiJson(body): ApiJson<ForgotPasswordRequest>,
) -> Result<(StatusCode, Json<MessageResponse>), ApiError> {
    recovery.forgot_password(&body.email, &client)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageResponse {
            message: FORGOT_MESSAGE,
        }),
    ))
}

/// Set a new password with the token from the emailed link. Signs the user
/// out everywhere.
#[utoipa::path(
    post, path = "/api/auth/reset-password", tag = "auth",
    operation_id = "reset_password",
    request_body(content = ResetPasswordRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Password changed", body = MessageResponse),
        BodyErrors,
        LinkErrors,
        (status = 422, description = "The new password is not acceptable", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn reset_password(
    State(recovery): State<Arc<Recovery>>,
    client: ClientContext,
    ApiJson(body): ApiJson<ResetPasswordRequest>,
) -> Result<Json<MessageResponse>, ApiError> {
    recovery
        .reset_password(&body.token, &Password::new(body.password), &client)
        .await?;
    Ok(Json(MessageResponse {
        message: "Your password has been changed. Sign in with the new one.",
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(example = "Str0ng!Pass123", format = "password", min_length = 1)]
    pub current_password: String,
    #[schema(example = "N3w!Passphrase-2026", format = "password")]
    pub new_password: String,
}

/// Change the password. Needs a sign-in within REAUTH_WINDOW (step-up).
/// Every other session (API sign-ins and portal sessions) ends and earlier
/// access tokens stop working; the caller's sign-in stays, with the fresh
/// access token in the answer.
#[utoipa::path(
    post, path = "/api/auth/change-password", tag = "account",
    operation_id = "change_password",
    security(("bearer" = [])),
    request_body(content = ChangePasswordRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Password changed; a fresh access token for this sign-in", body = TokenResponse),
        (status = 401, description = "Bad access token (`invalid_token`, with `WWW-Authenticate`), the sign-in is older than REAUTH_WINDOW (`reauthentication_required`: sign in again), or wrong current password (`invalid_credentials`)", body = ErrorBody),
        BodyErrors,
        (status = 422, description = "The new password is not acceptable", body = ErrorBody),
        (status = 429, description = "Rate limited (`rate_limited`), or too many wrong current passwords for this account (`account_locked`)", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        Unavailable,
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    SignedIn(signed_in): SignedIn,
    client: ClientContext,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    state.sessions.require_recent(&signed_in)?;
    let Authenticated {
        user,
        session,
        auth,
        ..
    } = signed_in;
    let keep = CurrentSession {
        web: None,
        family: session.clone(),
    };
    let version = state
        .account
        .change_password(
            &user,
            &Password::new(body.current_password),
            &Password::new(body.new_password),
            &keep,
            &client,
        )
        .await?;
    let access = state
        .sessions
        .fresh_access(&user.id, session.as_deref(), &auth, version)
        .await?;
    Ok(Json(TokenResponse::from(&access)))
}

/// Where the user is signed in: API sign-ins (refresh-token families) and
/// portal browser sessions.
#[utoipa::path(
    get, path = "/api/auth/sessions", tag = "account",
    operation_id = "list_sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user's live sessions, most recently used first", body = Vec<SessionInfo>),
        BearerErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn list_sessions(
    State(account): State<Arc<Account>>,
    AuthUser(user, session): AuthUser,
) -> Result<Json<Vec<SessionInfo>>, ApiError> {
    let current = CurrentSession {
        web: None,
        family: session,
    };
    Ok(Json(account.list_sessions(&user.id, &current).await?))
}

/// End one session (the caller's own included).
#[utoipa::path(
    delete, path = "/api/auth/sessions/{id}", tag = "account",
    operation_id = "end_session",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A session id from GET /api/auth/sessions")),
    responses(
        (status = 204, description = "Ended"),
        BearerErrors,
        (status = 404, description = "No such session of this user", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn end_session(
    State(account): State<Arc<Account>>,
    AuthUser(user, _): AuthUser,
    client: ClientContext,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    if account.end_session(&user.id, &id, &client).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "There is no such session of yours.",
        ))
    }
}

/// Sign out everywhere: every session ends, the caller's included, and every
/// access token issued so far stops working.
#[utoipa::path(
    post, path = "/api/auth/logout-all", tag = "account",
    operation_id = "logout_all",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out everywhere; the refresh cookie is cleared", headers(("Set-Cookie" = String, description = "Clears the refresh cookie (`Max-Age=0`)"))),
        BearerErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn logout_all(
    State(state): State<AppState>,
    AuthUser(user, _): AuthUser,
    client: ClientContext,
    jar: CookieJar,
) -> Result<Response, ApiError> {
    state
        .account
        .end_other_sessions(&user.id, &CurrentSession::default(), &client)
        .await?;
    let jar = jar.add(cleared_cookie(&state.cookies));
    Ok((StatusCode::NO_CONTENT, jar).into_response())
}
