//! Use-cases: the one implementation of register, login, refresh, logout and
//! password reset that both the JSON API and the pages call.

pub mod account;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod checkpoints;
pub mod health;
pub mod lockout;
pub mod outbox;
pub mod passwords;
pub mod tokens;
pub mod verification;

use std::net::IpAddr;

use crate::domain::FieldError;
use crate::storage::StoreError;

pub use account::{CurrentSession, SessionInfo, SessionKind};
pub use admin::{AdminService, AuditPage};
pub use audit::{Audit, AuditEntry};
pub use auth::{AuthService, AuthSettings, LoginOutcome, RegisterInput};

/// Who is asking: recorded with refresh tokens and audit events.
#[derive(Debug, Clone, Default)]
pub struct ClientContext {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// The request's `X-Request-Id`, so an audit record leads to its logs.
    pub request_id: Option<String>,
}

impl ClientContext {
    /// User agents are attacker-controlled; keep what we store bounded.
    pub const MAX_USER_AGENT: usize = 512;

    pub fn new(ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent.map(|ua| ua.chars().take(Self::MAX_USER_AGENT).collect());
        Self {
            ip,
            user_agent,
            request_id: None,
        }
    }

    pub fn with_request_id(mut self, request_id: Option<&str>) -> Self {
        self.request_id = request_id.map(str::to_owned);
        self
    }
}

/// Why a use-case failed, in terms the HTTP layer maps to statuses.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("email or password is wrong")]
    InvalidCredentials,
    #[error("email already registered")]
    EmailTaken,
    #[error("access token rejected: {0}")]
    InvalidAccessToken(tokens::TokenError),
    #[error("refresh token rejected")]
    InvalidRefreshToken,
    #[error("reset token rejected")]
    InvalidResetToken,
    #[error("current password is wrong")]
    WrongCurrentPassword,
    /// Too many failed sign-ins for this email; try again after the wait.
    #[error("account temporarily locked")]
    AccountLocked { retry_after: std::time::Duration },
    #[error("email address not verified")]
    EmailUnverified,
    #[error("verification token rejected")]
    InvalidVerificationToken,
    #[error("email address already verified")]
    AlreadyVerified,
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        let kind = match &err {
            StoreError::Conflict => "conflict",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Other(_) => "other",
        };
        metrics::counter!(crate::metrics::STORE_ERRORS, "kind" => kind).increment(1);
        match err {
            StoreError::Unavailable(e) => ServiceError::Unavailable(e),
            StoreError::Conflict => {
                ServiceError::Internal(anyhow::anyhow!("unexpected unique conflict"))
            }
            StoreError::Other(e) => ServiceError::Internal(e),
        }
    }
}

impl From<anyhow::Error> for ServiceError {
    fn from(err: anyhow::Error) -> Self {
        ServiceError::Internal(err)
    }
}
