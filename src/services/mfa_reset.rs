//! An administrator resets a user's second factor (issue 19): a lost
//! phone with no recovery codes left. Every factor goes (authenticator
//! app, recovery codes, passkeys) and every session ends, so the user's
//! next sign-in is with the password alone and, where MFA_REQUIRED_ROLES
//! covers them, limited to enrolling a new factor. The user and every
//! administrator are emailed: a reset is how an attacker with an admin's
//! session would take over an account, so it must not go unnoticed.

use std::sync::Arc;

use super::admin_trail::AdminTrail;
use super::notifier::Notifier;
use super::password_change::PasswordChange;
use super::{ClientContext, CurrentSession, ServiceError};
use crate::domain::{AuditEvent, Role, User, UserId};
use crate::storage::{MfaStore, UserQuery, UserStore, USER_PAGE_MAX};

type Result<T> = std::result::Result<T, ServiceError>;

/// What a reset removed.
#[derive(Debug, Clone, Copy)]
pub struct RemovedFactors {
    pub totp: bool,
    pub passkeys: usize,
}

pub struct MfaReset {
    users: Arc<dyn UserStore>,
    mfa: Arc<dyn MfaStore>,
    password_change: Arc<PasswordChange>,
    notifier: Arc<Notifier>,
    trail: AdminTrail,
}

impl MfaReset {
    pub fn new(
        users: Arc<dyn UserStore>,
        mfa: Arc<dyn MfaStore>,
        password_change: Arc<PasswordChange>,
        notifier: Arc<Notifier>,
        trail: AdminTrail,
    ) -> Self {
        Self {
            users,
            mfa,
            password_change,
            notifier,
            trail,
        }
    }

    /// Removes `target`'s factors and ends its sessions on `admin`'s
    /// word; audited (`mfa_reset`, with what was removed) and emailed.
    pub async fn reset(
        &self,
        target: &UserId,
        reason: Option<&str>,
        admin: &User,
        client: &ClientContext,
    ) -> Result<User> {
        let (user, reason) = self.trail.open(target, reason).await?;
        let removed = self.remove_factors(&user.id).await?;
        self.password_change
            .end_sessions_except(&user.id, &CurrentSession::default())
            .await?;
        let extra = format!("totp={} passkeys={}", removed.totp, removed.passkeys);
        self.trail
            .record(
                AuditEvent::MfaReset,
                &user,
                admin,
                reason.as_deref(),
                Some(extra),
                client,
            )
            .await?;
        self.notifier.mfa_reset(&user, &user).await;
        for other in self.admins().await? {
            if other.id != user.id {
                self.notifier.mfa_reset(&other, &user).await;
            }
        }
        tracing::info!(user_id = %user.id, admin_id = %admin.id, "second factors reset");
        self.trail.find(target).await
    }

    /// Removes every second factor of `user` (also for erasing an
    /// account). Sessions are the caller's next step.
    pub async fn remove_factors(&self, user: &UserId) -> Result<RemovedFactors> {
        let totp = self.mfa.delete_totp(user).await?;
        self.mfa
            .replace_recovery_codes(user, &[], self.trail.now())
            .await?;
        let passkeys = self.mfa.passkeys(user).await?;
        for passkey in &passkeys {
            self.mfa.delete_passkey(user, &passkey.id).await?;
        }
        Ok(RemovedFactors {
            totp,
            passkeys: passkeys.len(),
        })
    }

    /// Every active administrator, page by page.
    async fn admins(&self) -> Result<Vec<User>> {
        let mut admins = Vec::new();
        let mut query = UserQuery {
            role: Some(Role::admin()),
            disabled: Some(false),
            limit: USER_PAGE_MAX,
            ..UserQuery::default()
        };
        loop {
            let page = self.users.list_users(&query).await?;
            let last = page.len() < USER_PAGE_MAX as usize;
            query.after_email = page.last().map(|u| u.email.as_str().to_owned());
            admins.extend(page);
            if last {
                return Ok(admins);
            }
        }
    }
}
