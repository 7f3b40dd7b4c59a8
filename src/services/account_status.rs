//! Offboarding (issue 19, HIPAA 164.308(a)(3)(ii)(C)): an administrator
//! disables the account of someone who left, or enables it again. A
//! disabled account keeps its id and history (audit records point at it)
//! but nothing of it works: every session and refresh family ends and its
//! access tokens die at once, its emailed links are void, and sign-in,
//! refresh, reset and links refuse it from then on (`User::is_disabled`,
//! checked by each of those use-cases).

use std::sync::Arc;

pub use super::admin_trail::Actor;
use super::admin_trail::AdminTrail;
use super::audit::Audit;
use super::password_change::{EndedSessions, PasswordChange};
use super::{ClientContext, CurrentSession, ServiceError};
use crate::clock::Clock;
use crate::domain::{AuditEvent, User, UserId};
use crate::storage::{OneTimeTokenStore, TokenPurpose, UserStore};

type Result<T> = std::result::Result<T, ServiceError>;

pub struct AccountStatus {
    users: Arc<dyn UserStore>,
    links: Arc<dyn OneTimeTokenStore>,
    password_change: Arc<PasswordChange>,
    trail: AdminTrail,
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
            trail: AdminTrail::new(Arc::clone(&users), audit),
            users,
            links,
            password_change,
            clock,
        }
    }

    /// Disables `target` on `by`'s word (an administrator, or the CLI) and
    /// ends everything it had. `NotFound` for an unknown user; `LastAdmin`
    /// when `target` is the last active administrator (nobody could undo
    /// it from the service). Disabling a disabled account changes nothing
    /// and succeeds.
    pub async fn disable<'a>(
        &self,
        target: &UserId,
        reason: Option<&str>,
        by: impl Into<Actor<'a>>,
        client: &ClientContext,
    ) -> Result<User> {
        let by = by.into();
        let (user, reason) = self.trail.open(target, reason).await?;
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
        let ended = self.end_everything(&user.id).await?;
        self.trail
            .record(
                AuditEvent::AccountDisabled,
                &user,
                by,
                reason.as_deref(),
                None,
                client,
            )
            .await?;
        tracing::info!(user_id = %user.id, by = %by, web = ended.web, api = ended.api, "account disabled");
        self.trail.find(target).await
    }

    /// Ends every session and refresh family of `user`, cuts its access
    /// tokens and voids its emailed links: what disabling does, and what
    /// erasing an account does again.
    pub async fn end_everything(&self, user: &UserId) -> Result<EndedSessions> {
        let ended = self
            .password_change
            .end_sessions_except(user, &CurrentSession::default())
            .await?;
        for purpose in [TokenPurpose::PasswordReset, TokenPurpose::EmailVerification] {
            self.links
                .delete_user_one_time_tokens(purpose, user)
                .await?;
        }
        Ok(ended)
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
        let (user, reason) = self.trail.open(target, reason).await?;
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
        self.trail
            .record(
                AuditEvent::AccountEnabled,
                &user,
                by,
                reason.as_deref(),
                None,
                client,
            )
            .await?;
        tracing::info!(user_id = %user.id, by = %by, "account enabled");
        self.trail.find(target).await
    }
}
