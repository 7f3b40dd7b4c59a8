//! The authenticator-app factor: setup (a new secret, pending), confirm
//! (the first valid code turns it on and returns the recovery codes,
//! shown once) and the sign-in check, which refuses a code used before.

use std::sync::Arc;

use secrecy::SecretString;

use super::{MfaError, RecoveryCodes};
use crate::clock::Clock;
use crate::domain::mfa::{otpauth_uri, qr_svg, MfaKey, RecoveryCode, TimeStep, TotpSecret};
use crate::domain::{User, UserId};
use crate::storage::MfaStore;

/// What enrolment shows the user, once: the QR code and the same secret
/// as text for typing in. Every field carries the secret, so `Debug`
/// prints none of them.
pub struct TotpSetup {
    /// Base32, for manual entry.
    pub manual_entry_key: SecretString,
    /// The `otpauth://` URI the QR code holds (for a link on a phone).
    pub otpauth_uri: SecretString,
    /// An SVG document.
    pub qr_svg: String,
}

impl std::fmt::Debug for TotpSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSetup(<redacted>)")
    }
}

/// Enrolment and checks of authenticator-app codes.
pub struct TotpFactors {
    store: Arc<dyn MfaStore>,
    key: MfaKey,
    clock: Arc<dyn Clock>,
    /// APP_NAME: the issuer the authenticator app shows.
    app_name: String,
    /// Turning the authenticator on hands out the first recovery codes.
    recovery: Arc<RecoveryCodes>,
}

impl TotpFactors {
    pub fn new(
        store: Arc<dyn MfaStore>,
        key: MfaKey,
        clock: Arc<dyn Clock>,
        app_name: impl Into<String>,
        recovery: Arc<RecoveryCodes>,
    ) -> Self {
        Self {
            store,
            key,
            clock,
            app_name: app_name.into(),
            recovery,
        }
    }

    /// Makes a new secret and keeps it, sealed, as the user's pending
    /// authenticator (replacing an unconfirmed one). Nothing changes at
    /// sign-in until [`Self::confirm`]. `AlreadyEnabled` when the user has
    /// a confirmed one.
    pub async fn setup(&self, user: &User) -> Result<TotpSetup, MfaError> {
        let secret = TotpSecret::generate();
        let uri = otpauth_uri(&secret, &self.app_name, user.email.as_str());
        let qr_svg = qr_svg(&uri).map_err(|_| MfaError::QrCode)?;
        let sealed = self.key.seal(&secret, &user.id);
        if !self
            .store
            .put_pending_totp(&user.id, &sealed, self.clock.now())
            .await?
        {
            return Err(MfaError::AlreadyEnabled);
        }
        Ok(TotpSetup {
            manual_entry_key: secret.manual_entry_key(),
            otpauth_uri: uri,
            qr_svg,
        })
    }

    /// Turns the pending authenticator on when `code` is its current code,
    /// and returns a fresh set of recovery codes (the only time they are
    /// shown). The confirming code is used up: it cannot also sign in.
    pub async fn confirm(&self, user: &UserId, code: &str) -> Result<Vec<RecoveryCode>, MfaError> {
        let factor = self
            .store
            .totp_factor(user)
            .await?
            .filter(|f| !f.confirmed)
            .ok_or(MfaError::NothingToConfirm)?;
        let now = self.clock.now();
        let step = self
            .key
            .open(&factor.secret, user)?
            .verify(code, now, factor.last_step)
            .ok_or(MfaError::WrongCode)?;
        // The codes first: a confirmed authenticator always has its
        // recovery codes, and codes stored for a setup that then fails to
        // confirm open nothing (no second step is asked for without one).
        let codes = self.recovery.regenerate(user).await?;
        if !self
            .store
            .confirm_totp(user, &factor.secret, step, now)
            .await?
        {
            // Another setup replaced the secret this code was checked
            // against.
            return Err(MfaError::NothingToConfirm);
        }
        Ok(codes)
    }

    /// The second step of a sign-in: `Ok` when `code` is a current code of
    /// the user's confirmed authenticator that was not used before. The
    /// step is claimed atomically, so of two requests with the same code
    /// (a replay racing the real one) exactly one passes.
    pub async fn verify(&self, user: &UserId, code: &str) -> Result<TimeStep, MfaError> {
        let factor = self
            .store
            .totp_factor(user)
            .await?
            .filter(|f| f.confirmed)
            .ok_or(MfaError::NotEnabled)?;
        let step = self
            .key
            .open(&factor.secret, user)?
            .verify(code, self.clock.now(), factor.last_step)
            .ok_or(MfaError::WrongCode)?;
        if !self.store.accept_totp_step(user, step).await? {
            return Err(MfaError::WrongCode);
        }
        Ok(step)
    }

    /// Removes the user's authenticator (pending or confirmed) and, with it,
    /// the recovery codes, which only ever stand in for it. Returns false
    /// when there was none. The routes decide who may (password and code).
    pub async fn remove(&self, user: &UserId) -> Result<bool, MfaError> {
        let removed = self.store.delete_totp(user).await?;
        self.store
            .replace_recovery_codes(user, &[], self.clock.now())
            .await?;
        Ok(removed)
    }

    /// Whether the user has a confirmed authenticator (sign-in asks for a
    /// code only then).
    pub async fn is_enabled(&self, user: &UserId) -> Result<bool, MfaError> {
        Ok(self
            .store
            .totp_factor(user)
            .await?
            .is_some_and(|f| f.confirmed))
    }
}
