//! The second step of a sign-in: after the right password, a user with a
//! confirmed authenticator gets a short-lived challenge token instead of a
//! session; the session starts only when that token comes back with a
//! current authenticator code or an unused recovery code.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::{MfaError, RecoveryCodes, TotpFactors};
use crate::clock::Clock;
use crate::domain::token::random_token;
use crate::domain::{AuditEvent, TokenHash, User};
use crate::services::audit::Audit;
use crate::services::lockout::{self, Lockout};
use crate::services::notifier::Notifier;
use crate::services::sessions::{Authenticated, LoginOutcome, Sessions};
use crate::services::tokens::Authentication;
use crate::services::{span, ClientContext, ServiceError, MAX_TOKEN_LEN};
use crate::storage::{
    LoginThrottleStore, MfaStore, NewOneTimeToken, OneTimeTokenStore, TokenPurpose, UserStore,
};

type Result<T> = std::result::Result<T, ServiceError>;

/// How long the client has to send the code after the password.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);

/// Wrong codes one challenge takes before it dies (the per-account lock
/// counts them too, over a longer window).
pub const MAX_WRONG_CODES: u32 = 5;

/// The ways to answer a challenge, as the API names them.
pub const METHODS: [&str; 2] = ["totp", "recovery_code"];

/// Answering a challenge with a passkey (`/api/auth/passkeys/login/*`
/// with the `mfa_token`), offered to users who have one.
pub const PASSKEY_METHOD: &str = "passkey";

/// A password-proven sign-in waiting for its second step. The token is
/// returned to the client once; only its hash is stored.
pub struct MfaChallenge {
    pub token: SecretString,
    pub expires_in: u64,
    /// What this user can answer with (of [`METHODS`] and
    /// [`PASSKEY_METHOD`]).
    pub methods: Vec<&'static str>,
}

impl std::fmt::Debug for MfaChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaChallenge")
            .field("token", &"[REDACTED]")
            .field("expires_in", &self.expires_in)
            .field("methods", &self.methods)
            .finish()
    }
}

/// What the second step was answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    Totp,
    RecoveryCode,
}

/// Issues and answers sign-in challenges.
pub struct SecondStep {
    users: Arc<dyn UserStore>,
    challenges: Arc<dyn OneTimeTokenStore>,
    /// Wrong codes per challenge, under keys of their own namespace.
    attempts: Arc<dyn LoginThrottleStore>,
    totp: Arc<TotpFactors>,
    recovery: Arc<RecoveryCodes>,
    lockout: Arc<Lockout>,
    sessions: Arc<Sessions>,
    notifier: Arc<Notifier>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    /// Whether the user has passkeys (a passkey is a second factor too).
    passkeys: Arc<dyn MfaStore>,
}

impl SecondStep {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        users: Arc<dyn UserStore>,
        challenges: Arc<dyn OneTimeTokenStore>,
        attempts: Arc<dyn LoginThrottleStore>,
        totp: Arc<TotpFactors>,
        recovery: Arc<RecoveryCodes>,
        lockout: Arc<Lockout>,
        sessions: Arc<Sessions>,
        notifier: Arc<Notifier>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        passkeys: Arc<dyn MfaStore>,
    ) -> Self {
        Self {
            passkeys,
            users,
            challenges,
            attempts,
            totp,
            recovery,
            lockout,
            sessions,
            notifier,
            audit,
            clock,
        }
    }

    /// Whether signing in as `user` needs a second step.
    pub async fn required(&self, user: &User) -> Result<bool> {
        Ok(!self.methods(user).await?.is_empty())
    }

    /// The second factors `user` has: an authenticator (with its recovery
    /// codes) and passkeys.
    async fn methods(&self, user: &User) -> Result<Vec<&'static str>> {
        let mut methods = Vec::new();
        if self.totp.is_enabled(&user.id).await? {
            methods.extend(METHODS);
        }
        if !self.passkeys.passkeys(&user.id).await?.is_empty() {
            methods.push(PASSKEY_METHOD);
        }
        Ok(methods)
    }

    /// Starts the second step of a password-proven sign-in. The new
    /// challenge replaces any earlier one of the user: only the latest
    /// attempt can be finished.
    pub async fn challenge(&self, user: &User) -> Result<MfaChallenge> {
        let token = random_token();
        let now = self.clock.now();
        self.challenges
            .replace_one_time_token(
                TokenPurpose::MfaChallenge,
                &NewOneTimeToken {
                    user_id: user.id.clone(),
                    token_hash: TokenHash::of(&token),
                    expires_at: now + span(CHALLENGE_TTL),
                    created_at: now,
                },
            )
            .await?;
        Ok(MfaChallenge {
            token: SecretString::from(token),
            expires_in: CHALLENGE_TTL.as_secs(),
            methods: self.methods(user).await?,
        })
    }

    /// Answers a challenge: with the right code, the sign-in starts exactly
    /// as a password-only one would, with `amr` saying a code was used.
    pub async fn verify(
        &self,
        mfa_token: &str,
        factor: SecondFactor,
        code: &str,
        client: &ClientContext,
    ) -> Result<LoginOutcome> {
        if mfa_token.is_empty() || mfa_token.len() > MAX_TOKEN_LEN {
            return Err(ServiceError::InvalidMfaToken);
        }
        self.audit.ready()?;
        let now = self.clock.now();
        let hash = TokenHash::of(mfa_token);
        let user_id = self
            .challenges
            .find_one_time_token(TokenPurpose::MfaChallenge, &hash, now)
            .await?
            .ok_or(ServiceError::InvalidMfaToken)?;
        let user = self
            .users
            .find_user_by_id(&user_id)
            .await?
            .ok_or(ServiceError::InvalidMfaToken)?;
        // The lock that wrong passwords start also stops codes: a thief
        // with the password gets the same few guesses in all.
        let throttle_key = lockout::key_of(&user.email);
        let throttle = self.lockout.state(&throttle_key).await?;
        if let Some(retry_after) = self.lockout.remaining(throttle.as_ref()) {
            return Err(ServiceError::AccountLocked { retry_after });
        }
        let checked = match factor {
            SecondFactor::Totp => self.totp.verify(&user.id, code).await.map(|_| None),
            SecondFactor::RecoveryCode => self.recovery.use_code(&user.id, code).await.map(Some),
        };
        let recovery_left = match checked {
            Ok(left) => left,
            Err(MfaError::WrongCode) => {
                self.wrong_code(&hash, &user, factor, client).await?;
                return Err(MfaError::WrongCode.into());
            }
            // The authenticator was removed after the password step: the
            // challenge is stale, and the password alone signs in now.
            Err(MfaError::NotEnabled) => return Err(ServiceError::InvalidMfaToken),
            Err(e) => return Err(e.into()),
        };
        // Single use: of two answers racing with good codes, one signs in.
        if self
            .challenges
            .consume_one_time_token(TokenPurpose::MfaChallenge, &hash, now)
            .await?
            .is_none()
        {
            return Err(ServiceError::InvalidMfaToken);
        }
        if throttle.is_some() {
            self.lockout.clear(&throttle_key).await?;
        }
        self.attempts
            .clear_login_throttle(&attempts_key(&hash))
            .await?;
        if let Some(left) = recovery_left {
            let entry = self
                .audit
                .entry(AuditEvent::RecoveryCodeUsed, client)
                .user(&user.id)
                .detail(format!("left={left}"));
            self.audit.record(entry).await?;
            self.notifier.recovery_code_used(&user, left).await;
        }
        let email = user.email.as_str().to_owned();
        self.sessions
            .start(user, &email, Authentication::password_and_code(now), client)
            .await
    }

    /// Ends an enrolment-only sign-in (MFA_REQUIRED_ROLES) once its second
    /// factor is on: a full session, as if the user had signed in with the
    /// password and that factor, so nobody is asked to sign in again. The
    /// sign-in keeps the password's `auth_time`; `amr` adds `method` (RFC
    /// 8176: `otp` for an authenticator, `hwk`/`swk` for a passkey).
    /// `None` when `who` is not an enrolment sign-in (nothing to complete)
    /// or the user still has no factor the policy counts.
    pub async fn complete_enrolment(
        &self,
        who: &Authenticated,
        method: &str,
        client: &ClientContext,
    ) -> Result<Option<LoginOutcome>> {
        if !who.enrolling || self.sessions.must_enrol(&who.user).await? {
            return Ok(None);
        }
        let auth = Authentication {
            amr: ["pwd", method, "mfa"].map(str::to_owned).to_vec(),
            auth_time: who.auth.auth_time,
        };
        let user = who.user.clone();
        let email = user.email.as_str().to_owned();
        self.sessions
            .start(user, &email, auth, client)
            .await
            .map(Some)
    }

    /// Records a wrong code: audited, counted towards the account's lock,
    /// and the challenge dies at the fifth.
    async fn wrong_code(
        &self,
        hash: &TokenHash,
        user: &User,
        factor: SecondFactor,
        client: &ClientContext,
    ) -> Result<()> {
        let method = match factor {
            SecondFactor::Totp => "method=totp",
            SecondFactor::RecoveryCode => "method=recovery_code",
        };
        let entry = self
            .audit
            .entry(AuditEvent::MfaChallengeFailed, client)
            .user(&user.id)
            .detail(method);
        let recorded = self.audit.record(entry).await;
        tracing::info!(user_id = %user.id, "second step failed: wrong code");
        let now = self.clock.now();
        // The window covers the challenge's whole life, so its count never
        // restarts before it expires.
        let counted = self
            .attempts
            .add_login_failure(&attempts_key(hash), now, now - span(CHALLENGE_TTL))
            .await?;
        if counted.failures >= MAX_WRONG_CODES {
            self.challenges
                .consume_one_time_token(TokenPurpose::MfaChallenge, hash, now)
                .await?;
        }
        self.lockout
            .count_failure(
                &lockout::key_of(&user.email),
                user.email.as_str(),
                Some(user),
                client,
            )
            .await?;
        recorded
    }
}

/// The counter of wrong codes for one challenge: a namespace of its own in
/// the throttle store, so it never mixes with a per-email count.
fn attempts_key(challenge: &TokenHash) -> TokenHash {
    TokenHash::of(&format!("mfa-challenge:{}", challenge.as_str()))
}
