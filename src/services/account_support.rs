//! Helping a colleague back in (issue 19): an administrator clears the
//! failed-sign-in lock, ends every session of an account (a lost phone, a
//! shared computer), or emails the usual password-reset link. Three small
//! actions grouped in one use-case because each is a few lines over the
//! same pieces (find the target, act through a shared piece, audit) and
//! none has rules of its own; admins never see or set a password.

use std::sync::Arc;

use super::admin_trail::AdminTrail;
use super::lockout::{key_of, Lockout};
use super::notifier::Notifier;
use super::password_change::PasswordChange;
use super::{ClientContext, CurrentSession, ServiceError};
use crate::domain::{AuditEvent, User, UserId};

type Result<T> = std::result::Result<T, ServiceError>;

pub struct AccountSupport {
    lockout: Arc<Lockout>,
    /// Ends the sessions and cuts the access tokens.
    password_change: Arc<PasswordChange>,
    notifier: Arc<Notifier>,
    trail: AdminTrail,
}

impl AccountSupport {
    pub fn new(
        lockout: Arc<Lockout>,
        password_change: Arc<PasswordChange>,
        notifier: Arc<Notifier>,
        trail: AdminTrail,
    ) -> Self {
        Self {
            lockout,
            password_change,
            notifier,
            trail,
        }
    }

    /// Forgets the failed sign-ins and lock of `target`'s address.
    pub async fn unlock(
        &self,
        target: &UserId,
        reason: Option<&str>,
        admin: &User,
        client: &ClientContext,
    ) -> Result<User> {
        let (user, reason) = self.trail.open(target, reason).await?;
        self.lockout.clear(&key_of(&user.email)).await?;
        self.trail
            .record(
                AuditEvent::AccountUnlocked,
                &user,
                admin,
                reason.as_deref(),
                None,
                client,
            )
            .await?;
        Ok(user)
    }

    /// Ends every portal session and API sign-in of `target` and cuts its
    /// access tokens; the password stays, so the user can sign in again.
    pub async fn end_sessions(
        &self,
        target: &UserId,
        reason: Option<&str>,
        admin: &User,
        client: &ClientContext,
    ) -> Result<User> {
        let (user, reason) = self.trail.open(target, reason).await?;
        let ended = self
            .password_change
            .end_sessions_except(&user.id, &CurrentSession::default())
            .await?;
        let extra = format!("web={} api={}", ended.web, ended.api);
        self.trail
            .record(
                AuditEvent::SessionsRevoked,
                &user,
                admin,
                reason.as_deref(),
                Some(extra),
                client,
            )
            .await?;
        self.trail.find(target).await
    }

    /// Emails `target` a fresh password-reset link (the earlier one stops
    /// working), as "forgot password" would. `AccountDisabled` for a
    /// disabled account: it could not use the link anyway. `MailLimit`
    /// when the account had its MAIL_PER_ACCOUNT_PER_HOUR emails this hour:
    /// the limit protects the mailbox whoever asks (a stolen admin token
    /// must not flood it either), nothing is sent or replaced, and the
    /// refusal is audited with `mail_limit` as "forgot password" does.
    pub async fn send_password_reset(
        &self,
        target: &UserId,
        reason: Option<&str>,
        admin: &User,
        client: &ClientContext,
    ) -> Result<()> {
        let (user, reason) = self.trail.open(target, reason).await?;
        if user.is_disabled() {
            return Err(ServiceError::AccountDisabled);
        }
        let limited = self.notifier.count_email(&user, "password_reset").await?;
        if limited.is_none() {
            self.notifier.send_reset(&user).await?;
        }
        self.trail
            .record(
                AuditEvent::PasswordResetRequested,
                &user,
                admin,
                reason.as_deref(),
                limited.map(|_| "mail_limit".to_owned()),
                client,
            )
            .await?;
        match limited {
            Some(retry_after) => Err(ServiceError::MailLimit { retry_after }),
            None => Ok(()),
        }
    }
}
