//! Offboarding (issue 19, HIPAA 164.308(a)(3)(ii)(C)): an administrator
//! disables the account of someone who left, or enables it again. A
//! disabled account keeps its id and history (audit records point at it)
//! but nothing of it works: every session and refresh family ends and its
//! access tokens die at once, its emailed links are void, and sign-in,
//! refresh, reset and links refuse it from then on (`User::is_disabled`,
//! checked by each of those use-cases).

use std::sync::Arc;

use super::audit::Audit;
use super::password_change::PasswordChange;
use super::{ClientContext, CurrentSession, ServiceError};
use crate::clock::Clock;
use crate::domain::{AuditEvent, User, UserId};
use crate::storage::{OneTimeTokenStore, TokenPurpose, UserStore};

type Result<T> = std::result::Result<T, ServiceError>;

/// The longest reason an administrator may give (it goes into the trail).
pub const REASON_MAX_CHARS: usize = 500;

/// Who acts: a signed-in administrator, or the operator at the command
/// line (`clinic-auth user disable|enable`), who has no account to name.
/// Recorded as `by=<admin id>` or `by=cli`.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    Admin(&'a User),
    Cli,
}

impl<'a> From<&'a User> for Actor<'a> {
    fn from(admin: &'a User) -> Self {
        Actor::Admin(admin)
    }
}

impl std::fmt::Display for Actor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Admin(admin) => write!(f, "{}", admin.id),
            Actor::Cli => f.write_str("cli"),
        }
    }
}

pub struct AccountStatus {
    users: Arc<dyn UserStore>,
    links: Arc<dyn OneTimeTokenStore>,
    password_change: Arc<PasswordChange>,
    audit: Audit,
    clock: Arc<dyn Clock>,
}

impl AccountStatus {
    pub fn new(
        users: Arc<dyn UserStore>,
        links: Arc<dyn OneTimeTokenStore>,
        password_change: Arc<PasswordChange>,
        audit: Audit,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            users,
            links,
            password_change,
            audit,
            clock,
        }
    }

    /// Disables `target` on `by`'s word and ends everything it had.
    /// `NotFound` for an unknown user; `LastAdmin` when `target` is the
    /// last active administrator (nobody could undo it from the service).
    /// Disabling a disabled account changes nothing and succeeds.
    pub async fn disable<'a>(
        &self,
        target: &UserId,
        reason: Option<&str>,
        by: impl Into<Actor<'a>>,
        client: &ClientContext,
    ) -> Result<User> {
        let by = by.into();
        let reason = checked_reason(reason)?;
        self.audit.ready()?;
        let user = self.find(target).await?;
        if user.is_disabled() {
            return Ok(user);
        }
        if user.role.is_admin() && self.users.count_active_admins().await? <= 1 {
            return Err(ServiceError::LastAdmin);
        }
        let now = self.clock.now();
        if !self
            .users
            .set_user_disabled(&user.id, Some(now), now)
            .await?
        {
            return Err(ServiceError::NotFound);
        }
        let ended = self
            .password_change
            .end_sessions_except(&user.id, &CurrentSession::default())
            .await?;
        for purpose in [TokenPurpose::PasswordReset, TokenPurpose::EmailVerification] {
            self.links
                .delete_user_one_time_tokens(purpose, &user.id)
                .await?;
        }
        self.record(AuditEvent::AccountDisabled, &user, reason, by, client)
            .await?;
        tracing::info!(user_id = %user.id, by = %by, web = ended.web, api = ended.api, "account disabled");
        self.find(target).await
    }

    /// Lets a disabled account sign in again (with the password it had; an
    /// admin can send a reset link if it was forgotten).
    pub async fn enable<'a>(
        &self,
        target: &UserId,
        reason: Option<&str>,
        by: impl Into<Actor<'a>>,
        client: &ClientContext,
    ) -> Result<User> {
        let by = by.into();
        let reason = checked_reason(reason)?;
        self.audit.ready()?;
        let user = self.find(target).await?;
        if !user.is_disabled() {
            return Ok(user);
        }
        if !self
            .users
            .set_user_disabled(&user.id, None, self.clock.now())
            .await?
        {
            return Err(ServiceError::NotFound);
        }
        self.record(AuditEvent::AccountEnabled, &user, reason, by, client)
            .await?;
        tracing::info!(user_id = %user.id, by = %by, "account enabled");
        self.find(target).await
    }

    async fn find(&self, id: &UserId) -> Result<User> {
        self.users
            .find_user_by_id(id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// The record names the target (`user_id`, `email`) and the acting
    /// admin and reason in `detail`.
    async fn record(
        &self,
        event: AuditEvent,
        user: &User,
        reason: Option<String>,
        by: Actor<'_>,
        client: &ClientContext,
    ) -> Result<()> {
        let mut detail = format!("by={by}");
        if let Some(reason) = reason {
            detail.push_str(" reason=");
            detail.push_str(&reason);
        }
        let entry = self
            .audit
            .entry(event, client)
            .user(&user.id)
            .email(user.email.as_str())
            .detail(detail);
        self.audit.record(entry).await?;
        Ok(())
    }
}

/// A reason is optional; given, it is trimmed, one line, at most
/// [`REASON_MAX_CHARS`].
fn checked_reason(reason: Option<&str>) -> Result<Option<String>> {
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if reason.chars().count() > REASON_MAX_CHARS || reason.chars().any(char::is_control) {
        return Err(ServiceError::Validation(vec![
            crate::domain::FieldError::new(
                "reason",
                format!("Reason must be one line of at most {REASON_MAX_CHARS} characters."),
            ),
        ]));
    }
    Ok(Some(reason.to_owned()))
}
