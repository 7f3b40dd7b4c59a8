//! Password recovery: "forgot password" emails a single-use link; the link
//! sets a new password and signs the user out everywhere.

use std::sync::Arc;

use super::audit::Audit;
use super::lockout::{self, Lockout};
use super::notifier::Notifier;
use super::password_change::PasswordChange;
use super::passwords::Passwords;
use super::{AuthSettings, ClientContext, CurrentSession, ServiceError, MAX_TOKEN_LEN};
use crate::clock::Clock;
use crate::domain::{AuditEvent, EmailAddress, Password, PasswordPolicy, TokenHash};
use crate::storage::{OneTimeTokenStore, TokenPurpose, UserStore};

type Result<T> = std::result::Result<T, ServiceError>;

pub struct Recovery {
    users: Arc<dyn UserStore>,
    links: Arc<dyn OneTimeTokenStore>,
    passwords: Arc<Passwords>,
    /// Whoever completes a reset owns the mailbox: its lock is lifted.
    lockout: Arc<Lockout>,
    notifier: Arc<Notifier>,
    /// A completed reset stores the password and ends every sign-in: API
    /// families and page sessions.
    password_change: Arc<PasswordChange>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    password_policy: PasswordPolicy,
}

impl Recovery {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        users: Arc<dyn UserStore>,
        links: Arc<dyn OneTimeTokenStore>,
        passwords: Arc<Passwords>,
        lockout: Arc<Lockout>,
        notifier: Arc<Notifier>,
        password_change: Arc<PasswordChange>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        settings: &AuthSettings,
    ) -> Self {
        Self {
            users,
            links,
            passwords,
            lockout,
            notifier,
            password_change,
            audit,
            clock,
            password_policy: settings.password_policy,
        }
    }

    /// Starts a password reset. Answers the same whether or not the account
    /// exists: the lookup, token and email all happen in the background, so
    /// not even the response time depends on it.
    pub fn forgot_password(self: &Arc<Self>, email: &str, client: &ClientContext) -> Result<()> {
        let email = EmailAddress::parse(email).map_err(|e| ServiceError::Validation(vec![e]))?;
        let this = Arc::clone(self);
        let client = client.clone();
        let pending = self.notifier.will_queue();
        tokio::spawn(async move {
            if let Err(e) = this.send_reset_email(&email, &client).await {
                tracing::error!(error = ?e, "password reset email not queued");
            }
            drop(pending);
        });
        Ok(())
    }

    async fn send_reset_email(
        &self,
        email: &EmailAddress,
        client: &ClientContext,
    ) -> anyhow::Result<()> {
        let user = self.users.find_user_by_email(email).await?;
        let mut entry = self
            .audit
            .entry(AuditEvent::PasswordResetRequested, client)
            .email(email.as_str());
        let mut allowed = true;
        if let Some(user) = &user {
            entry = entry.user(&user.id);
            allowed = self.notifier.allowed(user, "password_reset").await?;
            if !allowed {
                entry = entry.detail("mail_limit");
            }
        }
        self.audit.record(entry).await?;
        let Some(user) = user else {
            tracing::info!("password reset requested for an unknown email");
            return Ok(());
        };
        // Same answer as for anyone: the requester learns nothing.
        if user.is_disabled() {
            tracing::info!(user_id = %user.id, "password reset requested for a disabled account: nothing sent");
            return Ok(());
        }
        // Over the limit nothing changes, not even the stored link: the one
        // already emailed keeps working.
        if !allowed {
            return Ok(());
        }
        self.notifier.send_reset(&user).await?;
        Ok(())
    }

    /// The address of the account a reset link is for, while the link is
    /// usable (the page behind the link shows the form, with the address
    /// for password managers: whoever holds the link may set the password
    /// anyway). `None` for a bad, used or expired link, or a disabled
    /// account, which `reset_password` would refuse too.
    pub async fn reset_link_email(&self, token: &str) -> Result<Option<EmailAddress>> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let Some(user_id) = self
            .links
            .find_one_time_token(
                TokenPurpose::PasswordReset,
                &TokenHash::of(token),
                self.clock.now(),
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(self
            .users
            .find_user_by_id(&user_id)
            .await?
            .filter(|user| !user.is_disabled())
            .map(|user| user.email))
    }

    /// Completes a reset: sets the new password and signs the user out
    /// everywhere (every refresh token is revoked).
    pub async fn reset_password(
        &self,
        token: &str,
        password: &Password,
        client: &ClientContext,
    ) -> Result<()> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(ServiceError::InvalidResetToken);
        }
        // Consuming the link is final: refuse before it while the trail
        // cannot record the reset.
        self.audit.ready()?;
        let hash = TokenHash::of(token);
        let now = self.clock.now();
        // Peek first so a password the policy rejects does not burn the link.
        let user_id = self
            .links
            .find_one_time_token(TokenPurpose::PasswordReset, &hash, now)
            .await?
            .ok_or(ServiceError::InvalidResetToken)?;
        let user = self
            .users
            .find_user_by_id(&user_id)
            .await?
            .filter(|user| !user.is_disabled())
            .ok_or(ServiceError::InvalidResetToken)?;
        let new_hash = self
            .passwords
            .check_and_hash_new(
                password,
                &self.password_policy,
                Some(&user.email),
                "password",
            )
            .await?
            .map_err(|e| ServiceError::Validation(vec![e]))?;
        match self
            .links
            .consume_one_time_token(TokenPurpose::PasswordReset, &hash, self.clock.now())
            .await?
        {
            Some(owner) if owner == user.id => {}
            _ => return Err(ServiceError::InvalidResetToken),
        }
        let ended = self
            .password_change
            .store(&user, &new_hash, &CurrentSession::default())
            .await?;
        // Whoever completed a reset owns the mailbox: lift any lock.
        self.lockout.clear(&lockout::key_of(&user.email)).await?;
        self.password_change
            .announce(&user, AuditEvent::PasswordResetCompleted, client)
            .await?;
        // The link reached this mailbox and came back: the same proof a
        // verification link gives, so the address counts as verified.
        if !user.verified && self.users.set_verified(&user.id, self.clock.now()).await? {
            let entry = self
                .audit
                .entry(AuditEvent::EmailVerified, client)
                .user(&user.id)
                .email(user.email.as_str())
                .detail("password_reset");
            self.audit.record(entry).await?;
        }
        tracing::info!(user_id = %user.id, revoked_sessions = ended.api, "password reset completed");
        Ok(())
    }
}
