//! Use-cases: the one implementation of register, login, refresh, logout and
//! password reset that both the JSON API and the pages call. One file per
//! use-case, each a struct naming the storage traits it uses; shared pieces
//! (passwords, tokens, lockout, notifier, audit, outbox) beside them.

/// Change the password, list and end sessions.
pub mod account;
/// An admin erases a disabled account's name and email.
pub mod account_erasure;
/// Disable and enable accounts (offboarding).
pub mod account_status;
/// Admin help: unlock, end all sessions, email a reset link.
pub mod account_support;
/// Grant roles, read the audit trail (CLI and admin API).
pub mod admin;
/// What every admin action on an account shares: reason, audit record.
pub mod admin_trail;
/// Record to the audit trail and verify it.
pub mod audit;
/// Signed checkpoints of the audit chain, kept outside the database.
pub mod checkpoints;
/// Emergency ("break-glass") access: start, end, the expiry sweep.
pub mod emergency_access;
/// Emergency access reviews and the per-user permission.
pub mod emergency_review;
/// Whether the store takes writes, for /health.
pub mod health;
/// Rotating and pruning them (`clinic-auth keys`, the minute sweep).
pub mod key_rotation;
/// The per-email sign-in lock.
pub mod lockout;
/// Email and password sign-in.
pub mod login;
/// Two-step sign-in: second factors (issue 18).
pub mod mfa;
/// An admin removes a user's second factors.
pub mod mfa_reset;
/// Emails the use-cases send: links and notices.
pub mod notifier;
/// The durable email queue and its sender.
pub mod outbox;
/// Storing a new password and what must follow it (change and reset).
pub mod password_change;
/// Argon2id hashing and the password policy.
pub mod passwords;
/// Forgot and reset password.
pub mod recovery;
/// Self-registration and email verification.
pub mod registration;
/// An admin changes a user's role.
pub mod role_change;
/// API sign-ins: refresh families, Bearer authentication.
pub mod sessions;
/// The access-token signing keys in memory (issue 20).
pub mod signing_keys;
/// JWT issue and verification.
pub mod tokens;
/// The admin's view of the accounts: list, search, one user in full.
pub mod user_directory;
/// The access tokens whose signature was already checked.
pub mod verified_tokens;

use std::net::IpAddr;
use std::time::Duration;

use crate::domain::{FieldError, PasswordPolicy, RegistrationMode, Roles, TokenHash};
use crate::storage::StoreError;

pub use account::{Account, SessionInfo, SessionKind};
pub use account_erasure::AccountErasure;
pub use account_status::AccountStatus;
pub use account_support::AccountSupport;
pub use admin::{AdminService, AuditPage};
pub use admin_trail::AdminTrail;
pub use audit::{Audit, AuditEntry};
pub use emergency_access::{EmergencyAccess, EmergencyGrant};
pub use emergency_review::EmergencyReviews;
pub use lockout::{Lockout, LockoutPolicy};
pub use login::{Login, SignIn};
pub use mfa_reset::MfaReset;
pub use notifier::Notifier;
pub use password_change::PasswordChange;
pub use recovery::Recovery;
pub use registration::{RegisterInput, Registration};
pub use role_change::RoleChange;
pub use sessions::{EnrolmentGrant, LoginOutcome, Refreshed, Sessions};
pub use user_directory::UserDirectory;

/// Invitations (issue 19): an admin's side, and the invitee's.
pub mod invitations;
pub mod invitations_accept;
pub mod invitations_direct;
pub use invitations::{Invitations, InviteInput, ListedInvitation};
pub use invitations_accept::InvitationAcceptance;

/// Reset and verification tokens are 43 base64url characters, refresh
/// tokens a few hundred; anything far longer is junk and not worth hashing.
const MAX_TOKEN_LEN: usize = 4096;

/// The settings the use-cases depend on (each service takes its part).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub app_name: String,
    pub app_url: String,
    pub refresh_ttl: Duration,
    pub reset_ttl: Duration,
    pub password_policy: PasswordPolicy,
    /// An API sign-in unused for this long is over (automatic log-off).
    pub refresh_idle: Duration,
    /// How long a rotated refresh token may still be presented by a second
    /// tab before it counts as stolen; zero means strict single use.
    pub refresh_reuse_grace: Duration,
    pub lockout: LockoutPolicy,
    /// Refuse sign-in (403) until the email address is verified.
    pub require_verified_email: bool,
    /// Who may register themselves.
    pub registration: RegistrationMode,
    /// The clinic's roles and the one self-registration gets.
    pub roles: Roles,
    pub verification_ttl: Duration,
    /// Reset and verification emails per account per hour, whatever the
    /// IPs asking.
    pub mail_per_account_per_hour: u32,
    /// How recent a sign-in must be to change a second factor (step-up).
    pub reauth_window: Duration,
    /// Users of these roles must have a second factor (MFA_REQUIRED_ROLES).
    pub mfa_required_roles: Vec<crate::domain::Role>,
    /// Every user must (MFA_REQUIRED_FOR_ALL).
    pub mfa_required_for_all: bool,
    /// EMERGENCY_ACCESS_TTL: how long a break-glass window lasts.
    pub emergency_access_ttl: Duration,
    /// How long an invitation link works (INVITE_EXPIRES).
    pub invite_ttl: Duration,
}

/// A setting's duration as a span of time to add to a `DateTime`
/// (saturating: "forever" stays forever).
fn span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn count_login(outcome: &'static str) {
    metrics::counter!(crate::metrics::LOGINS, "outcome" => outcome).increment(1);
}

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

/// Which session is asking, so it can be marked and kept.
#[derive(Debug, Clone, Default)]
pub struct CurrentSession {
    pub web: Option<TokenHash>,
    pub family: Option<String>,
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
    /// REGISTRATION is `invite` or `closed`: accounts come from an
    /// administrator (an invitation, the admin console or the CLI).
    /// The user (or other thing) the caller named does not exist.
    #[error("not found")]
    NotFound,
    /// The change would leave no active administrator.
    #[error("last active admin")]
    LastAdmin,
    /// The right password for an account an administrator disabled.
    #[error("account disabled")]
    AccountDisabled,
    #[error("self-registration is off")]
    RegistrationClosed(RegistrationMode),
    #[error("access token rejected: {0}")]
    InvalidAccessToken(tokens::TokenError),
    #[error("refresh token rejected")]
    InvalidRefreshToken,
    #[error("reset token rejected")]
    InvalidResetToken,
    #[error("current password is wrong")]
    WrongCurrentPassword,
    /// The account was sent MAIL_PER_ACCOUNT_PER_HOUR emails in its
    /// current hour: nothing more until `retry_after` has passed. Only an
    /// administrator's request hears it; the public requests answer as
    /// always, so the limit reveals nothing to them.
    #[error("per-account email limit reached")]
    MailLimit { retry_after: std::time::Duration },
    /// Too many failed sign-ins for this email; try again after the wait.
    #[error("account temporarily locked")]
    AccountLocked { retry_after: std::time::Duration },
    #[error("email address not verified")]
    EmailUnverified,
    #[error("verification token rejected")]
    InvalidVerificationToken,
    #[error("email address already verified")]
    AlreadyVerified,
    /// The sign-in challenge token is unknown, expired, used, or was killed
    /// by too many wrong codes: sign in with the password again.
    #[error("sign-in challenge rejected")]
    InvalidMfaToken,
    /// The route changes a factor (or the password) and the sign-in behind
    /// the access token is older than REAUTH_WINDOW.
    #[error("a recent sign-in is required")]
    ReauthenticationRequired,
    /// An enrolment token (MFA_REQUIRED_ROLES) on a route other than the
    /// enrolment ones: add a second factor first.
    #[error("second-factor enrolment required")]
    MfaEnrolmentRequired,
    /// A second factor refused (wrong code, nothing to confirm, ...). Only
    /// the user's own variants arrive here: store and sealing failures
    /// become `Unavailable` or `Internal` on the way in.
    #[error("second factor refused: {0}")]
    Mfa(mfa::MfaError),
    /// Emergency access (issue 19): the user has no permission for it.
    #[error("emergency access not permitted")]
    EmergencyNotPermitted,
    /// Emergency access is already on: a window is never stacked or
    /// extended.
    #[error("emergency access already active")]
    EmergencyActive,
    /// Nothing to end: no emergency access is on.
    #[error("emergency access not active")]
    EmergencyNotActive,
    /// An administrator reviewing their own emergency access.
    #[error("own emergency access")]
    OwnEmergencyReview,
    /// The use was already reviewed (by someone else, or a double submit).
    #[error("already reviewed")]
    AlreadyReviewed,
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
    /// Erasing an account that is still active.
    #[error("account not disabled")]
    AccountNotDisabled,
    /// The address already has an open invitation: resend or revoke it.
    #[error("invitation already pending")]
    InvitationPending,
    /// The invitation link is unknown, expired, used or revoked.
    #[error("invitation link rejected")]
    InvalidInvitation,
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

impl From<mfa::MfaError> for ServiceError {
    fn from(err: mfa::MfaError) -> Self {
        use mfa::MfaError;
        match err {
            MfaError::Store(e) => ServiceError::from(e),
            // Never the user's doing: a changed key or an altered row, or
            // an APP_NAME too long to draw. Logged as a 500.
            e @ (MfaError::Sealed(_) | MfaError::QrCode) => ServiceError::Internal(e.into()),
            e => ServiceError::Mfa(e),
        }
    }
}

impl From<anyhow::Error> for ServiceError {
    fn from(err: anyhow::Error) -> Self {
        ServiceError::Internal(err)
    }
}
