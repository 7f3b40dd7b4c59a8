//! Signing in with a passkey (issue 18): on its own (a discoverable
//! passkey with user verification: something the user has, unlocked by
//! something they know or are, so two factors in one), or as the second
//! step after the password (the `mfa_token` of the login answer).
//!
//! `amr` (RFC 8176): `swk` for a backup-eligible passkey (a synced one: its
//! key can leave the device, so it is not hardware-bound), `hwk` for a
//! device-bound one (the authenticator's own claim: passkeys are not
//! attested), always with `mfa`; after a password, `pwd` too.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, PasskeyAuthentication, PublicKeyCredential,
    RequestChallengeResponse, WebauthnError,
};

use super::passkeys::{
    credential_key, credential_of, serialize_credential, user_handle, CeremonyStart,
    PasskeyCeremonies,
};
use super::MfaError;
use crate::clock::Clock;
use crate::domain::{AuditEvent, TokenHash, User, UserId};
use crate::services::audit::Audit;
use crate::services::lockout::{self, Lockout};
use crate::services::sessions::{LoginOutcome, Sessions};
use crate::services::tokens::Authentication;
use crate::services::{ClientContext, ServiceError, MAX_TOKEN_LEN};
use crate::storage::{CeremonyKind, MfaStore, OneTimeTokenStore, Passkey, TokenPurpose, UserStore};

type Result<T> = std::result::Result<T, ServiceError>;

/// The server half of a passkey sign-in, by how it started.
#[derive(Serialize, Deserialize)]
enum SignInState {
    /// Any passkey of this site: the passkey says whose it is.
    Discoverable(DiscoverableAuthentication),
    /// The second step: only the challenged user's passkeys.
    SecondStep(PasskeyAuthentication),
}

pub struct PasskeySignIn {
    ceremonies: Arc<PasskeyCeremonies>,
    passkeys: Arc<dyn MfaStore>,
    users: Arc<dyn UserStore>,
    /// The `mfa_token`s of password-proven sign-ins (see `SecondStep`).
    challenges: Arc<dyn OneTimeTokenStore>,
    lockout: Arc<Lockout>,
    sessions: Arc<Sessions>,
    audit: Audit,
    clock: Arc<dyn Clock>,
}

impl PasskeySignIn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ceremonies: Arc<PasskeyCeremonies>,
        passkeys: Arc<dyn MfaStore>,
        users: Arc<dyn UserStore>,
        challenges: Arc<dyn OneTimeTokenStore>,
        lockout: Arc<Lockout>,
        sessions: Arc<Sessions>,
        audit: Audit,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            ceremonies,
            passkeys,
            users,
            challenges,
            lockout,
            sessions,
            audit,
            clock,
        }
    }

    /// The user a still-valid `mfa_token` belongs to (not consumed).
    async fn challenged(&self, mfa_token: &str) -> Result<(TokenHash, UserId)> {
        if mfa_token.is_empty() || mfa_token.len() > MAX_TOKEN_LEN {
            return Err(ServiceError::InvalidMfaToken);
        }
        let hash = TokenHash::of(mfa_token);
        let user = self
            .challenges
            .find_one_time_token(TokenPurpose::MfaChallenge, &hash, self.clock.now())
            .await?
            .ok_or(ServiceError::InvalidMfaToken)?;
        Ok((hash, user))
    }

    /// Options for `navigator.credentials.get()`: any passkey of this site,
    /// or with `mfa_token` only the challenged user's.
    pub async fn options(
        &self,
        mfa_token: Option<&str>,
    ) -> Result<CeremonyStart<RequestChallengeResponse>> {
        let webauthn = self.ceremonies.webauthn()?;
        let internal =
            |e: WebauthnError| ServiceError::Internal(anyhow::anyhow!("passkey options: {e}"));
        let (options, state, user) = match mfa_token {
            None => {
                let (options, state) = webauthn
                    .start_discoverable_authentication()
                    .map_err(internal)?;
                (options, SignInState::Discoverable(state), None)
            }
            Some(token) => {
                let (_, user) = self.challenged(token).await?;
                let creds = self
                    .passkeys
                    .passkeys(&user)
                    .await?
                    .iter()
                    .map(credential_of)
                    .collect::<Result<Vec<_>>>()?;
                if creds.is_empty() {
                    return Err(MfaError::NotEnabled.into());
                }
                let (options, state) = webauthn
                    .start_passkey_authentication(&creds)
                    .map_err(internal)?;
                (options, SignInState::SecondStep(state), Some(user))
            }
        };
        let (handle, expires_in) = self
            .ceremonies
            .begin(CeremonyKind::SignIn, user.as_ref(), &state)
            .await?;
        Ok(CeremonyStart {
            handle,
            options,
            expires_in,
        })
    }

    /// Checks the authenticator's answer to the ceremony `handle` and starts
    /// the session exactly as a password sign-in would.
    pub async fn verify(
        &self,
        handle: &str,
        credential: &serde_json::Value,
        mfa_token: Option<&str>,
        client: &ClientContext,
    ) -> Result<LoginOutcome> {
        self.audit.ready()?;
        let challenge = match mfa_token {
            Some(token) => Some(self.challenged(token).await?),
            None => None,
        };
        let expected_user = challenge.as_ref().map(|(_, user)| user);
        let state: SignInState = self
            .ceremonies
            .finish(CeremonyKind::SignIn, handle, expected_user)
            .await?;
        let answer: PublicKeyCredential =
            serde_json::from_value(credential.clone()).map_err(|_| MfaError::PasskeyRefused)?;
        let passkey = self
            .passkeys
            .find_passkey(&credential_key(answer.get_credential_id()))
            .await?
            .ok_or(MfaError::PasskeyRefused)?;
        // The passkey must be the one the ceremony was for: the challenged
        // user's, or (discoverable) the user its authenticator names.
        match (&state, expected_user) {
            (SignInState::SecondStep(_), Some(user)) if *user == passkey.user_id => {}
            (SignInState::Discoverable(_), None) => {
                let (handle_uuid, _) = self
                    .ceremonies
                    .webauthn()?
                    .identify_discoverable_authentication(&answer)
                    .map_err(|_| MfaError::PasskeyRefused)?;
                if handle_uuid != user_handle(&passkey.user_id) {
                    return Err(MfaError::PasskeyRefused.into());
                }
            }
            _ => return Err(MfaError::PasskeyRefused.into()),
        }
        let user = self
            .users
            .find_user_by_id(&passkey.user_id)
            .await?
            .ok_or(MfaError::PasskeyRefused)?;
        // The lock wrong passwords and codes start stops passkeys too: one
        // lock for the account, whatever the way in.
        let throttle_key = lockout::key_of(&user.email);
        let throttle = self.lockout.state(&throttle_key).await?;
        if let Some(retry_after) = self.lockout.remaining(throttle.as_ref()) {
            return Err(ServiceError::AccountLocked { retry_after });
        }
        let mut credential = credential_of(&passkey)?;
        let webauthn = self.ceremonies.webauthn()?;
        let checked = match state {
            SignInState::Discoverable(state) => webauthn.finish_discoverable_authentication(
                &answer,
                state,
                &[DiscoverableKey::from(&credential)],
            ),
            SignInState::SecondStep(state) => {
                webauthn.finish_passkey_authentication(&answer, &state)
            }
        };
        let result = match checked {
            Ok(result) if result.user_verified() => result,
            Ok(_) => return Err(MfaError::PasskeyRefused.into()),
            Err(WebauthnError::CredentialPossibleCompromise) => {
                return Err(self.counter_regression(&user, &passkey, client).await);
            }
            Err(e) => {
                tracing::info!(user_id = %user.id, error = %e, "passkey sign-in refused");
                return Err(MfaError::PasskeyRefused.into());
            }
        };
        credential.update_credential(&result);
        let now = self.clock.now();
        if !self
            .passkeys
            .record_passkey_use(
                &passkey.id,
                &serialize_credential(&credential)?,
                result.counter(),
                now,
            )
            .await?
        {
            // Removed between the lookup and now.
            return Err(MfaError::PasskeyRefused.into());
        }
        let key_kind = if result.backup_eligible() {
            "swk"
        } else {
            "hwk"
        };
        let amr: Vec<String> = match &challenge {
            Some((hash, _)) => {
                // Single use: of two answers racing, one signs in.
                if self
                    .challenges
                    .consume_one_time_token(TokenPurpose::MfaChallenge, hash, now)
                    .await?
                    .is_none()
                {
                    return Err(ServiceError::InvalidMfaToken);
                }
                vec!["pwd".into(), key_kind.into(), "mfa".into()]
            }
            None => vec![key_kind.into(), "mfa".into()],
        };
        if throttle.is_some() {
            self.lockout.clear(&throttle_key).await?;
        }
        let email = user.email.as_str().to_owned();
        let auth = Authentication {
            amr,
            auth_time: Some(now.timestamp()),
        };
        self.sessions.start(user, &email, auth, client).await
    }

    /// A signature counter that went back: two copies of one key may be in
    /// use. Audited for whoever investigates, and the sign-in refused.
    async fn counter_regression(
        &self,
        user: &User,
        passkey: &Passkey,
        client: &ClientContext,
    ) -> ServiceError {
        tracing::warn!(user_id = %user.id, passkey = %passkey.id, "passkey signature counter went back");
        let entry = self
            .audit
            .entry(AuditEvent::PasskeyCounterRegression, client)
            .user(&user.id)
            .detail(format!(
                "passkey={} stored_counter={}",
                passkey.id, passkey.counter
            ));
        match self.audit.record(entry).await {
            Ok(()) => MfaError::PasskeyRefused.into(),
            Err(e) => e,
        }
    }
}
