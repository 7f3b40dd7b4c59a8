//! The one HTTP error type. Every failure a client sees, including axum's
//! own rejections, leaves through here in one JSON shape:
//! `{"error":{"code","message","fields"?}}`.
//!
//! Internal causes are logged (with the request id the client also gets in
//! `X-Request-Id`) and never sent: a 500 says only that something failed.
//!
//! `From<ServiceError> for ApiError` is also the one place a service's
//! refusal is put into words: the portal's forms show the same message
//! (`http::pages::handlers::explain`), so a person reads one sentence for one
//! condition whichever way they came.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::domain::{FieldError, RegistrationMode};
use crate::services::mfa::MfaError;
use crate::services::tokens::TokenError;
use crate::services::ServiceError;

/// Every `code` the API sends. Stable and snake_case on the wire: what a
/// program branches on, so a variant is never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not valid JSON.
    MalformedJson,
    /// 400: the request could not be read (body or query string).
    BadRequest,
    /// 400 for a reset or verification link; 401 for an access token.
    InvalidToken,
    /// 401: wrong email or password, or wrong current password.
    InvalidCredentials,
    /// 401: the refresh cookie is missing, expired, revoked or replaced.
    InvalidRefreshToken,
    /// 403: REQUIRE_VERIFIED_EMAIL and the address is not confirmed yet.
    EmailUnverified,
    /// 403: signed in without the role the route needs.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// 408: the body did not arrive within HTTP_BODY_TIMEOUT.
    RequestTimeout,
    /// 409: an account with this email exists.
    EmailTaken,
    /// 403: REGISTRATION is `invite` or `closed`: ask an administrator.
    RegistrationClosed,
    /// 403: the right password, for an account an administrator disabled.
    AccountDisabled,
    /// 409: the change would leave no active administrator.
    LastAdmin,
    /// 409: the address is already confirmed.
    AlreadyVerified,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// 422: with `fields`, every problem with every field.
    ValidationFailed,
    /// 429: the per-IP limit, or an administrator's reset email past the
    /// account's MAIL_PER_ACCOUNT_PER_HOUR, with Retry-After.
    RateLimited,
    /// 429: too many failed sign-ins for this email, with Retry-After.
    AccountLocked,
    /// 401: the authenticator or recovery code is wrong or was used.
    InvalidCode,
    /// 401: the sign-in challenge (`mfa_token`) is unknown, expired, used or
    /// ended by too many wrong codes: sign in with the password again.
    MfaTokenInvalid,
    /// 401: this change needs a sign-in within REAUTH_WINDOW: sign in again.
    ReauthenticationRequired,
    /// 401: an enrolment token (MFA_REQUIRED_ROLES) on a route other than
    /// the enrolment ones: add a second factor first.
    MfaEnrolmentRequired,
    /// 409: an authenticator is already on; remove it first.
    MfaAlreadyEnabled,
    /// 409: no authenticator setup is waiting; start the setup again.
    MfaSetupRequired,
    /// 409: two-step sign-in is not on for this account.
    MfaNotEnabled,
    /// 401: the passkey options are unknown, expired or were already used:
    /// ask for new options.
    PasskeyCeremonyInvalid,
    /// 401: the passkey was not accepted (unknown, another site's, not
    /// user-verified, bad signature, or a signature counter that went
    /// back).
    PasskeyInvalid,
    /// 409: this authenticator's passkey is already registered.
    PasskeyAlreadyRegistered,
    /// 404: APP_URL is an IP address, which WebAuthn cannot use: this
    /// service offers no passkeys.
    PasskeysUnavailable,
    /// 409: emergency access is already on; it is never extended.
    EmergencyAccessActive,
    /// 409: no emergency access is on to end.
    EmergencyAccessNotActive,
    /// 409: this emergency access use was already reviewed.
    AlreadyReviewed,
    /// 500: never the cause; quote X-Request-Id.
    InternalError,
    /// 503: the database cannot be reached or take writes, with Retry-After.
    DatabaseUnavailable,
    /// 409: only a disabled account may be erased: disable it first.
    AccountNotDisabled,
    /// 409: this address already has an open invitation: resend or revoke it.
    InvitationPending,
    /// 403: with REFRESH_COOKIE_SAMESITE=none, refresh and logout answer
    /// only requests whose Origin is in CORS_ORIGINS (or APP_URL's).
    OriginNotAllowed,
    /// 400: refresh or logout got `refresh_token` in a JSON body (as the
    /// Python service took it); the token travels only in the cookie.
    RefreshTokenInBody,
}

/// The JSON error body (documented in the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: what a program branches on.
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: Cow<'static, str>,
    /// Validation only: field name -> every problem with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    pub fields: Option<BTreeMap<String, Vec<String>>>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: None,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in errors {
            fields
                .entry(e.field.into_owned())
                .or_default()
                .extend(e.messages);
        }
        let mut err = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ValidationFailed,
            "Some fields are missing or invalid.",
        );
        err.fields = Some(fields);
        err
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "There is nothing at this address.",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "This address does not accept that HTTP method.",
        )
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "The request body is too large.",
        )
    }

    /// The body did not arrive within HTTP_BODY_TIMEOUT. The connection is
    /// closed after this answer: the rest of the body may still be on its
    /// way and would be read as the next request.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            "The request body did not arrive in time.",
        )
        .with_header(header::CONNECTION, HeaderValue::from_static("close"))
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let secs = retry_after_secs.max(1);
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("Too many requests. Try again in {secs} seconds."),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }

    pub fn invalid_token(message: &'static str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken, message).with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        )
    }

    pub fn missing_bearer() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidToken,
            "A Bearer access token is required.",
        )
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "Your account may not do this.",
        )
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DatabaseUnavailable,
            "The service cannot reach its database right now. Try again shortly.",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
    }

    /// The refresh token was sent in the body, as the Python service took
    /// it: say where it goes instead of ignoring it.
    pub fn refresh_token_in_body() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::RefreshTokenInBody,
            "The refresh token travels only in the HttpOnly cookie set at sign-in, never in the \
             request body: remove `refresh_token` from the body and send the request with the \
             cookie (fetch: credentials: \"include\").",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "Something went wrong on our side. Quote the X-Request-Id header if you report it.",
        )
    }
}

/// The one mapping from a service's refusal to status, code and the words
/// a person reads. The portal's forms show this same message next to the
/// field, so the API and the pages cannot drift apart; the portal's fuller
/// wording (the next step to take) is the one both use.
impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Validation(errors) => ApiError::validation(errors),
            ServiceError::InvalidCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "The email or password is not correct.",
            ),
            ServiceError::EmailTaken => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::EmailTaken,
                "An account with this email already exists. Sign in, or reset your password.",
            ),
            ServiceError::NotFound => ApiError::not_found(),
            ServiceError::LastAdmin => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::LastAdmin,
                "This is the last active administrator: make another one first.",
            ),
            ServiceError::AccountNotDisabled => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::AccountNotDisabled,
                "Only a disabled account can be erased: disable it first.",
            ),
            ServiceError::AccountDisabled => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::AccountDisabled,
                "This account is disabled. Ask your clinic's administrator if you need access.",
            ),
            ServiceError::RegistrationClosed(mode) => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::RegistrationClosed,
                match mode {
                    RegistrationMode::Invite => {
                        "Accounts are by invitation only. Ask your clinic's administrator to invite you."
                    }
                    RegistrationMode::Closed | RegistrationMode::Open => "New accounts are created by your clinic's administrators. Ask them for access.",
                },
            ),
            ServiceError::InvalidAccessToken(TokenError::Expired) => {
                ApiError::invalid_token("The access token has expired.")
            }
            ServiceError::InvalidAccessToken(TokenError::Invalid) => {
                ApiError::invalid_token("The access token is not valid.")
            }
            ServiceError::InvalidRefreshToken => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidRefreshToken,
                "The session has ended or the refresh token is not valid. Sign in again.",
            ),
            ServiceError::InvalidResetToken => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidToken,
                "This reset link is not valid, was already used or has expired. Ask for a new one.",
            ),
            ServiceError::AccountLocked { retry_after } => {
                let secs = ceil_secs(retry_after);
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::AccountLocked,
                    format!(
                        "Too many failed sign-ins for this email. Try again in {}, or reset your password.",
                        wait_in_words(secs)
                    ),
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
            }
            ServiceError::MailLimit { retry_after } => {
                let secs = ceil_secs(retry_after);
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    format!(
                        "This account has been sent as many emails as allowed in an hour. Try again in {}.",
                        wait_in_words(secs)
                    ),
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
            }
            ServiceError::EmailUnverified => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::EmailUnverified,
                "Confirm your email address first: we have sent you a new link. Open it, then sign in.",
            ),
            ServiceError::InvalidVerificationToken => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidToken,
                "This verification link is not valid, was already used or has expired.",
            ),
            ServiceError::AlreadyVerified => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::AlreadyVerified,
                "Your email address is already verified.",
            ),
            ServiceError::WrongCurrentPassword => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCredentials,
                "Your current password is not correct.",
            ),
            ServiceError::InvalidMfaToken => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::MfaTokenInvalid,
                "This sign-in has expired or was ended. Sign in with your password again.",
            ),
            ServiceError::ReauthenticationRequired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::ReauthenticationRequired,
                "For this change, sign in again first: your last sign-in was too long ago.",
            ),
            ServiceError::MfaEnrolmentRequired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::MfaEnrolmentRequired,
                "Set up two-step sign-in first: this token only reaches the enrolment routes.",
            ),
            ServiceError::Mfa(MfaError::WrongCode) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidCode,
                "The code is not correct or was already used.",
            ),
            ServiceError::Mfa(MfaError::AlreadyEnabled) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::MfaAlreadyEnabled,
                "An authenticator app is already set up. Remove it before setting up another.",
            ),
            ServiceError::Mfa(MfaError::NothingToConfirm) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::MfaSetupRequired,
                "No authenticator setup is waiting for a code. Start the setup again.",
            ),
            ServiceError::Mfa(MfaError::NotEnabled) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::MfaNotEnabled,
                "Two-step sign-in is not turned on for this account.",
            ),
            ServiceError::Mfa(MfaError::CeremonyInvalid) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::PasskeyCeremonyInvalid,
                "This passkey request has expired or was already used. Try again.",
            ),
            ServiceError::Mfa(MfaError::PasskeyRefused) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::PasskeyInvalid,
                "This passkey was not accepted.",
            ),
            ServiceError::Mfa(MfaError::PasskeyExists) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::PasskeyAlreadyRegistered,
                "This passkey is already registered.",
            ),
            ServiceError::Mfa(MfaError::PasskeysUnavailable) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::PasskeysUnavailable,
                "Passkeys are not available here: the service's address (APP_URL) must be a host name, not an IP address.",
            ),
            ServiceError::Mfa(MfaError::PasskeyNotFound) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "No such passkey.",
            ),
            ServiceError::Mfa(e) => {
                tracing::error!(error = ?e, "second factor failed");
                ApiError::internal()
            }
            ServiceError::EmergencyNotPermitted => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "Your account does not have emergency access. Ask your clinic's administrator.",
            ),
            ServiceError::EmergencyActive => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::EmergencyAccessActive,
                "Emergency access is already on. It cannot be extended; start it again once it has ended.",
            ),
            ServiceError::EmergencyNotActive => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::EmergencyAccessNotActive,
                "Emergency access is not on.",
            ),
            ServiceError::OwnEmergencyReview => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "Another administrator must review your own emergency access.",
            ),
            ServiceError::AlreadyReviewed => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::AlreadyReviewed,
                "This emergency access was already reviewed.",
            ),
            ServiceError::Unavailable(e) => {
                tracing::warn!(error = ?e, "database unavailable");
                ApiError::unavailable()
            }
            ServiceError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                ApiError::internal()
            }
            ServiceError::InvitationPending => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::InvitationPending,
                "This address already has an open invitation: send it again or revoke it.",
            ),
            ServiceError::InvalidInvitation => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidToken,
                "This invitation link has expired or was already used. Ask your clinic's administrator for a new one.",
            ),
        }
    }
}

/// Whole seconds, rounded up so retrying at the advertised second works.
pub fn ceil_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .max(1)
}

/// "45 seconds", "3 minutes": for messages people read.
pub fn wait_in_words(secs: u64) -> String {
    match secs {
        1 => "1 second".to_owned(),
        s if s < 60 => format!("{s} seconds"),
        s => {
            let minutes = s.div_ceil(60);
            if minutes == 1 {
                "1 minute".to_owned()
            } else {
                format!("{minutes} minutes")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                fields: self.fields,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}
