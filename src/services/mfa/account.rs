//! Two-step sign-in as the signed-in user manages it: what is on, turning
//! the authenticator on and off, a new set of recovery codes. Every change
//! needs a recent sign-in (REAUTH_WINDOW), is audited and (on and off)
//! emailed.

use std::sync::Arc;
use std::time::Duration;

use super::{MfaError, RecoveryCodes, TotpFactors, TotpSetup};
use crate::clock::Clock;
use crate::domain::mfa::RecoveryCode;
use crate::domain::{AuditEvent, Password, User};
use crate::services::audit::Audit;
use crate::services::lockout::{self, Lockout};
use crate::services::notifier::Notifier;
use crate::services::passwords::{Passwords, Verification};
use crate::services::sessions::Authenticated;
use crate::services::tokens::Authentication;
use crate::services::{ClientContext, ServiceError};

type Result<T> = std::result::Result<T, ServiceError>;

/// What `GET /api/auth/mfa` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfaStatus {
    pub totp_enabled: bool,
    pub recovery_codes_left: u32,
}

pub struct MfaAccount {
    totp: Arc<TotpFactors>,
    recovery: Arc<RecoveryCodes>,
    passwords: Arc<Passwords>,
    lockout: Arc<Lockout>,
    notifier: Arc<Notifier>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    /// How recent the sign-in behind a change must be.
    reauth_window: Duration,
}

impl MfaAccount {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        totp: Arc<TotpFactors>,
        recovery: Arc<RecoveryCodes>,
        passwords: Arc<Passwords>,
        lockout: Arc<Lockout>,
        notifier: Arc<Notifier>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        reauth_window: Duration,
    ) -> Self {
        Self {
            totp,
            recovery,
            passwords,
            lockout,
            notifier,
            audit,
            clock,
            reauth_window,
        }
    }

    pub async fn status(&self, user: &User) -> Result<MfaStatus> {
        Ok(MfaStatus {
            totp_enabled: self.totp.is_enabled(&user.id).await?,
            recovery_codes_left: self.recovery.left(&user.id).await?,
        })
    }

    /// Step-up: a stolen access token (or an unattended, signed-in
    /// computer) must not be enough to change how the account signs in.
    /// Public so the portal asks the same question before its own
    /// sensitive forms (changing the password).
    pub fn recent(&self, who: &Authenticated) -> Result<()> {
        who.auth.ensure_recent(self.reauth_window, self.clock.now())
    }

    /// A new pending authenticator: nothing changes at sign-in until
    /// [`Self::confirm_totp`].
    pub async fn setup_totp(&self, who: &Authenticated) -> Result<TotpSetup> {
        self.recent(who)?;
        Ok(self.totp.setup(&who.user).await?)
    }

    /// Turns the authenticator on with its first code; returns the recovery
    /// codes, shown this once.
    pub async fn confirm_totp(
        &self,
        who: &Authenticated,
        code: &str,
        client: &ClientContext,
    ) -> Result<Vec<RecoveryCode>> {
        self.recent(who)?;
        self.audit.ready()?;
        let codes = self.totp.confirm(&who.user.id, code).await?;
        let entry = self
            .audit
            .entry(AuditEvent::MfaEnabled, client)
            .user(&who.user.id)
            .detail("method=totp");
        self.audit.record(entry).await?;
        self.notifier.two_step_changed(&who.user, true).await;
        Ok(codes)
    }

    /// Turns the authenticator off (and its recovery codes with it). Needs
    /// the password and a current code or a recovery code: a recent
    /// sign-in alone is not enough to lower the account's protection.
    pub async fn remove_totp(
        &self,
        who: &Authenticated,
        password: &Password,
        code: &str,
        client: &ClientContext,
    ) -> Result<()> {
        self.recent(who)?;
        self.audit.ready()?;
        let user = &who.user;
        if !self.totp.is_enabled(&user.id).await? {
            return Err(MfaError::NotEnabled.into());
        }
        self.prove(user, password, Some(code), client, "remove_totp")
            .await?;
        self.totp.remove(&user.id).await?;
        let entry = self
            .audit
            .entry(AuditEvent::MfaDisabled, client)
            .user(&user.id)
            .detail("method=totp");
        self.audit.record(entry).await?;
        self.notifier.two_step_changed(user, false).await;
        Ok(())
    }

    /// The portal's re-authentication (step-up): the password, and a
    /// current code or a recovery code when the user has an authenticator.
    /// Returns the fresh proof the session then carries. Wrong answers
    /// count towards the account lock like a sign-in's.
    pub async fn reauthenticate(
        &self,
        user: &User,
        password: &Password,
        code: &str,
        client: &ClientContext,
    ) -> Result<Authentication> {
        self.audit.ready()?;
        let with_code = self.totp.is_enabled(&user.id).await?;
        self.prove(
            user,
            password,
            with_code.then_some(code),
            client,
            "reauthenticate",
        )
        .await?;
        let now = self.clock.now();
        Ok(if with_code {
            Authentication::password_and_code(now)
        } else {
            Authentication::password(now)
        })
    }

    /// Checks the password and, when `code` is asked for, an authenticator
    /// or recovery code (a recovery code is used up): the lock first, so a
    /// locked account gets no more guesses; each wrong answer is audited
    /// and counted. `detail` names the action in the audit trail.
    async fn prove(
        &self,
        user: &User,
        password: &Password,
        code: Option<&str>,
        client: &ClientContext,
        detail: &'static str,
    ) -> Result<()> {
        let key = lockout::key_of(&user.email);
        let throttle = self.lockout.state(&key).await?;
        if let Some(retry_after) = self.lockout.remaining(throttle.as_ref()) {
            return Err(ServiceError::AccountLocked { retry_after });
        }
        let password_ok = matches!(
            self.passwords.verify(password, &user.password_hash).await?,
            Verification::Valid { .. }
        );
        if !password_ok {
            return Err(self
                .lockout
                .wrong_current_password(&key, user, client, detail)
                .await);
        }
        let Some(code) = code else {
            return Ok(());
        };
        let code_ok = match self.totp.verify(&user.id, code).await {
            Ok(_) => true,
            Err(MfaError::WrongCode) => match self.recovery.use_code(&user.id, code).await {
                Ok(_) => true,
                Err(MfaError::WrongCode) => false,
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        if !code_ok {
            let entry = self
                .audit
                .entry(AuditEvent::MfaChallengeFailed, client)
                .user(&user.id)
                .detail(detail);
            let recorded = self.audit.record(entry).await;
            self.lockout
                .count_failure(&key, user.email.as_str(), Some(user), client)
                .await?;
            recorded?;
            return Err(MfaError::WrongCode.into());
        }
        Ok(())
    }

    /// A new set of recovery codes, replacing the old; shown this once.
    pub async fn regenerate_recovery_codes(
        &self,
        who: &Authenticated,
        client: &ClientContext,
    ) -> Result<Vec<RecoveryCode>> {
        self.recent(who)?;
        self.audit.ready()?;
        // Codes without an authenticator would be a second factor nobody
        // is asked for: they only ever stand in for one.
        if !self.totp.is_enabled(&who.user.id).await? {
            return Err(MfaError::NotEnabled.into());
        }
        let codes = self.recovery.regenerate(&who.user.id).await?;
        let entry = self
            .audit
            .entry(AuditEvent::RecoveryCodesRegenerated, client)
            .user(&who.user.id);
        self.audit.record(entry).await?;
        Ok(codes)
    }
}
