//! Signing in with email and password: the credential check, the per-email
//! lockout, upgrading an old hash, and the verified-email gate. A proven
//! sign-in is handed to [`Sessions`] to start.

use std::sync::Arc;

use super::audit::Audit;
use super::lockout::{self, Lockout};
use super::mfa::{MfaChallenge, SecondStep};
use super::notifier::Notifier;
use super::passwords::{Passwords, Verification};
use super::sessions::{EnrolmentGrant, LoginOutcome, Sessions};
use super::tokens::Authentication;
use super::{count_login, AuthSettings, ClientContext, ServiceError};
use crate::clock::Clock;
use crate::domain::{AuditEvent, EmailAddress, FieldError, Password, User};
use crate::storage::UserStore;

type Result<T> = std::result::Result<T, ServiceError>;

/// What the right password leads to.
#[derive(Debug)]
pub enum SignIn {
    /// Signed in: no second factor is enabled. Boxed: a sign-in carries
    /// its tokens and user, a challenge only its token.
    Complete(Box<LoginOutcome>),
    /// The password was right and a second factor is enabled: nothing is
    /// signed in until the challenge is answered ([`SecondStep::verify`]).
    SecondStepRequired(MfaChallenge),
    /// The password was right, and the policy (MFA_REQUIRED_ROLES) asks
    /// this user for a second factor they do not have yet: signed in for
    /// enrolment only, never refused, so a policy locks nobody out.
    EnrolmentRequired(Box<EnrolmentGrant>),
}

pub struct Login {
    users: Arc<dyn UserStore>,
    passwords: Arc<Passwords>,
    lockout: Arc<Lockout>,
    sessions: Arc<Sessions>,
    second_step: Arc<SecondStep>,
    notifier: Arc<Notifier>,
    audit: Audit,
    clock: Arc<dyn Clock>,
    /// Refuse sign-in (403) until the email address is verified.
    require_verified_email: bool,
}

impl Login {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        users: Arc<dyn UserStore>,
        passwords: Arc<Passwords>,
        lockout: Arc<Lockout>,
        sessions: Arc<Sessions>,
        second_step: Arc<SecondStep>,
        notifier: Arc<Notifier>,
        audit: Audit,
        clock: Arc<dyn Clock>,
        settings: &AuthSettings,
    ) -> Self {
        Self {
            users,
            passwords,
            lockout,
            sessions,
            second_step,
            notifier,
            audit,
            clock,
            require_verified_email: settings.require_verified_email,
        }
    }

    /// Checks the credentials and starts a new refresh-token family, or,
    /// for a user with a second factor, a challenge for it.
    ///
    /// Unknown email and wrong password are indistinguishable, in answer and
    /// in time: an unknown email still pays for one argon2 verification.
    pub async fn login(
        &self,
        email: &str,
        password: &Password,
        client: &ClientContext,
    ) -> Result<SignIn> {
        let mut errors = Vec::new();
        if email.trim().is_empty() {
            errors.push(FieldError::new("email", "Email is required."));
        }
        if password.expose().is_empty() {
            errors.push(FieldError::new("password", "Password is required."));
        }
        if !errors.is_empty() {
            return Err(ServiceError::Validation(errors));
        }
        // Every outcome from here on is audited; while the trail cannot be
        // written, refuse before hashing or changing anything.
        self.audit.ready()?;
        // Checked before any password work, for known and unknown emails
        // alike, so a locked answer is cheap and reveals nothing.
        let throttle_key = lockout::key(email);
        let throttle = self.lockout.state(&throttle_key).await?;
        if let Some(retry_after) = self.lockout.remaining(throttle.as_ref()) {
            count_login("locked");
            tracing::info!("login refused: email locked after failed attempts");
            let entry = self
                .audit
                .entry(AuditEvent::LoginFailure, client)
                .email(email);
            self.audit.record(entry.detail("account_locked")).await?;
            return Err(ServiceError::AccountLocked { retry_after });
        }
        let user = match EmailAddress::parse(email) {
            Ok(email) => self.users.find_user_by_email(&email).await?,
            Err(_) => None,
        };
        let Some(user) = user else {
            self.passwords.verify_dummy(password).await?;
            count_login("invalid_credentials");
            let entry = self
                .audit
                .entry(AuditEvent::LoginFailure, client)
                .email(email);
            // Counted even when the record times out: a guess answered with
            // 503 still counts towards the lock.
            let recorded = self.audit.record(entry).await;
            self.lockout
                .count_failure(&throttle_key, email, None, client)
                .await?;
            recorded?;
            return Err(ServiceError::InvalidCredentials);
        };
        match self.passwords.verify(password, &user.password_hash).await? {
            Verification::Invalid => {
                count_login("invalid_credentials");
                let entry = self
                    .audit
                    .entry(AuditEvent::LoginFailure, client)
                    .email(email);
                let recorded = self.audit.record(entry.user(&user.id)).await;
                tracing::info!(user_id = %user.id, "login failed: wrong password");
                self.lockout
                    .count_failure(&throttle_key, email, Some(&user), client)
                    .await?;
                recorded?;
                Err(ServiceError::InvalidCredentials)
            }
            Verification::Valid { needs_rehash } => {
                // Only someone who knows the password learns the account is
                // disabled; a wrong password got the usual 401 above.
                if user.is_disabled() {
                    count_login("disabled");
                    let entry = self
                        .audit
                        .entry(AuditEvent::LoginFailure, client)
                        .email(email);
                    let entry = entry.user(&user.id).detail("account_disabled");
                    self.audit.record(entry).await?;
                    return Err(ServiceError::AccountDisabled);
                }
                if needs_rehash {
                    self.upgrade_hash(&user, password).await;
                }
                let second_step = self.second_step.required(&user).await?;
                // With a second factor the password proves only half: the
                // count (which wrong codes add to) is cleared when the code
                // is right, or a thief with the password could reset it
                // between guesses at the code.
                if throttle.is_some() && !second_step {
                    self.lockout.clear(&throttle_key).await?;
                }
                if self.require_verified_email && !user.verified {
                    count_login("unverified");
                    tracing::info!(user_id = %user.id, "login refused: email not verified");
                    let entry = self
                        .audit
                        .entry(AuditEvent::LoginFailure, client)
                        .email(email);
                    let entry = entry.user(&user.id).detail("email_unverified");
                    self.audit.record(entry).await?;
                    // The person cannot reach the Bearer-only resend route
                    // without signing in, so the refusal sends a fresh link.
                    self.notifier.send_verification(&user).await?;
                    return Err(ServiceError::EmailUnverified);
                }
                if second_step {
                    tracing::info!(user_id = %user.id, "password accepted: second step required");
                    return Ok(SignIn::SecondStepRequired(
                        self.second_step.challenge(&user).await?,
                    ));
                }
                let auth = Authentication::password(self.clock.now());
                if self.sessions.must_enrol(&user).await? {
                    return self
                        .sessions
                        .start_enrolment(user, email, auth, client)
                        .await
                        .map(|grant| SignIn::EnrolmentRequired(Box::new(grant)));
                }
                self.sessions
                    .start(user, email, auth, client)
                    .await
                    .map(|outcome| SignIn::Complete(Box::new(outcome)))
            }
        }
    }

    /// Replaces a legacy (bcrypt) or weaker hash while the plaintext is at
    /// hand. A failure here must not fail the login: the old hash still works.
    async fn upgrade_hash(&self, user: &User, password: &Password) {
        let result = async {
            let hash = self.passwords.hash(password).await?;
            self.users
                .set_password_hash(&user.id, &hash, self.clock.now())
                .await?;
            Ok::<_, ServiceError>(())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(user_id = %user.id, "password hash upgraded to argon2id"),
            Err(e) => {
                tracing::warn!(user_id = %user.id, error = %e, "password hash upgrade failed")
            }
        }
    }
}
