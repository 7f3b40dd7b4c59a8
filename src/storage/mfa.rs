//! Second factors (issue 18): [`MfaStore`] keeps each user's authenticator
//! (TOTP) factor, recovery-code set and passkeys.
//!
//! Only what the domain has already made safe to store reaches here: the
//! authenticator secret sealed under MFA_ENCRYPTION_KEY, recovery codes as
//! keyed hashes, and passkeys' public credentials. Every "use" is one
//! atomic conditional write, so of concurrent requests presenting the same
//! code exactly one gets through.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use serde::{Deserialize, Serialize};

use super::{stored_count, StoreError, StoreResult};
use crate::domain::mfa::{RecoveryCodeHash, SealedTotpSecret, TimeStep};
use crate::domain::{TokenHash, UserId};

/// A user's authenticator-app factor as stored (at most one per user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpFactor {
    pub secret: SealedTotpSecret,
    /// False from setup until the user has typed a valid code: a pending
    /// factor is never asked for at sign-in.
    pub confirmed: bool,
    /// When this secret was made (setup).
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The last time step whose code was accepted (the confirming code's,
    /// then each sign-in's); codes of that step or earlier are refused.
    pub last_step: Option<TimeStep>,
}

/// A passkey (WebAuthn credential), as stored and as read back.
/// `credential` is the serialized credential of the WebAuthn library (its
/// public key, counter and flags): no secret, the private key never leaves
/// the authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passkey {
    /// Ours, chosen by the caller: what the pages and the API name it by.
    pub id: String,
    pub user_id: UserId,
    /// The authenticator's credential id (base64url), unique across users:
    /// how a sign-in with a discoverable credential finds its passkey.
    pub credential_id: String,
    /// The user's name for it ("Work laptop").
    pub name: String,
    pub credential: String,
    /// The signature counter of the last use (0 for authenticators that
    /// keep none).
    pub counter: u32,
    pub created_at: DateTime<Utc>,
    /// `None` until first used to sign in.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Which half of WebAuthn a [`PasskeyCeremony`] is waiting to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyKind {
    /// Adding a passkey to a signed-in user's account.
    Register,
    /// Signing in with a passkey (alone, or as a second step).
    SignIn,
}

impl CeremonyKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CeremonyKind::Register => "register",
            CeremonyKind::SignIn => "sign_in",
        }
    }
}

/// The server half of a WebAuthn ceremony between its options and its
/// answer: the challenge the authenticator must sign lives here, never
/// with the client, and is taken (deleted) by the answer, so each
/// challenge is answered at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyCeremony {
    /// The hash of the random handle the client holds (the handle itself
    /// is never stored).
    pub handle: TokenHash,
    pub kind: CeremonyKind,
    /// Whose ceremony it is: the signed-in user for a registration, the
    /// challenged user for a second step; `None` for a sign-in that starts
    /// with the passkey (the passkey says who it is).
    pub user_id: Option<UserId>,
    /// The WebAuthn library's serialized state (challenge and policy; no
    /// secret: the challenge is sent to the client anyway).
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A ceremony as both backends store it (see [`StoredTotp`]).
#[derive(sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct StoredCeremony<T> {
    #[serde(rename = "_id")]
    pub(crate) handle: String,
    pub(crate) kind: String,
    pub(crate) user_id: Option<String>,
    pub(crate) state: String,
    pub(crate) created_at: T,
    pub(crate) expires_at: T,
}

impl<T> StoredCeremony<T> {
    pub(crate) fn new(ceremony: &PasskeyCeremony, instant: impl Fn(DateTime<Utc>) -> T) -> Self {
        Self {
            handle: ceremony.handle.as_str().to_owned(),
            kind: ceremony.kind.as_str().to_owned(),
            user_id: ceremony.user_id.as_ref().map(|u| u.as_str().to_owned()),
            state: ceremony.state.clone(),
            created_at: instant(ceremony.created_at),
            expires_at: instant(ceremony.expires_at),
        }
    }

    pub(crate) fn into_ceremony(
        self,
        instant: impl Fn(T) -> StoreResult<DateTime<Utc>>,
    ) -> StoreResult<PasskeyCeremony> {
        let kind = match self.kind.as_str() {
            "register" => CeremonyKind::Register,
            "sign_in" => CeremonyKind::SignIn,
            other => {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "unknown passkey ceremony kind {other:?}"
                )))
            }
        };
        Ok(PasskeyCeremony {
            handle: TokenHash::from_stored(self.handle),
            kind,
            user_id: self.user_id.map(UserId::new),
            state: self.state,
            created_at: instant(self.created_at)?,
            expires_at: instant(self.expires_at)?,
        })
    }
}

/// An authenticator factor as both backends store it, over how each stores
/// an instant (`T`: SQLite's Unix milliseconds, a BSON date), so that the
/// field list and the conversion are written once.
#[derive(sqlx::FromRow, Deserialize)]
pub(crate) struct StoredTotp<T> {
    secret: String,
    confirmed: bool,
    created_at: T,
    // Missing Option fields read as None (serde's rule for Option).
    confirmed_at: Option<T>,
    last_step: Option<i64>,
}

impl<T> StoredTotp<T> {
    pub(crate) fn into_factor(
        self,
        instant: impl Fn(T) -> StoreResult<DateTime<Utc>>,
    ) -> StoreResult<TotpFactor> {
        let last_step = self
            .last_step
            .map(|step| {
                u64::try_from(step)
                    .map(TimeStep::from_stored)
                    .map_err(|_| StoreError::Other(anyhow::anyhow!("negative last_step")))
            })
            .transpose()?;
        Ok(TotpFactor {
            secret: SealedTotpSecret::from_stored(self.secret),
            confirmed: self.confirmed,
            created_at: instant(self.created_at)?,
            confirmed_at: self.confirmed_at.map(instant).transpose()?,
            last_step,
        })
    }
}

/// A passkey as both backends store it (see [`StoredTotp`]).
#[derive(sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct StoredPasskey<T> {
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    credential_id: String,
    name: String,
    credential: String,
    counter: i64,
    created_at: T,
    last_used_at: Option<T>,
}

impl<T> StoredPasskey<T> {
    pub(crate) fn new(passkey: &Passkey, instant: impl Fn(DateTime<Utc>) -> T) -> Self {
        Self {
            id: passkey.id.clone(),
            user_id: passkey.user_id.as_str().to_owned(),
            credential_id: passkey.credential_id.clone(),
            name: passkey.name.clone(),
            credential: passkey.credential.clone(),
            counter: i64::from(passkey.counter),
            created_at: instant(passkey.created_at),
            last_used_at: passkey.last_used_at.map(instant),
        }
    }

    pub(crate) fn into_passkey(
        self,
        instant: impl Fn(T) -> StoreResult<DateTime<Utc>>,
    ) -> StoreResult<Passkey> {
        Ok(Passkey {
            id: self.id,
            user_id: UserId::new(self.user_id),
            credential_id: self.credential_id,
            name: self.name,
            credential: self.credential,
            counter: stored_count(self.counter),
            created_at: instant(self.created_at)?,
            last_used_at: self.last_used_at.map(instant).transpose()?,
        })
    }
}

/// A time step as the backends' integer (steps of 30 s stay far below
/// `i64::MAX`).
pub(crate) fn step_param(step: TimeStep) -> i64 {
    i64::try_from(step.value()).unwrap_or(i64::MAX)
}

#[async_trait]
pub trait MfaStore: Send + Sync {
    /// Stores `secret` as the user's pending (unconfirmed) authenticator,
    /// replacing a pending one, created at `now`. Returns false, and
    /// changes nothing, when the user has a confirmed authenticator: that
    /// one is only ever removed by [`MfaStore::delete_totp`].
    async fn put_pending_totp(
        &self,
        user: &UserId,
        secret: &SealedTotpSecret,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// `Ok(None)` when the user has no authenticator, pending or confirmed.
    async fn totp_factor(&self, user: &UserId) -> StoreResult<Option<TotpFactor>>;

    /// Confirms the pending authenticator whose sealed secret is exactly
    /// `secret` (the one the code was checked against: a setup in another
    /// tab in between replaced it, and then nothing is confirmed), and
    /// records `step` as its last accepted step, so the confirming code
    /// cannot be used again to sign in. Returns false when there was no
    /// such pending factor.
    async fn confirm_totp(
        &self,
        user: &UserId,
        secret: &SealedTotpSecret,
        step: TimeStep,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Records `step` as the last accepted step of the user's confirmed
    /// authenticator if it is later than the one stored (a confirmed one
    /// always has one: its confirming code's), in one atomic write. Returns false when it is not (the code was already
    /// used, by this request's twin or before) or there is no confirmed
    /// authenticator: of concurrent uses of one code, exactly one gets true.
    async fn accept_totp_step(&self, user: &UserId, step: TimeStep) -> StoreResult<bool>;

    /// Removes the user's authenticator, pending or confirmed. Returns
    /// false when there was none.
    async fn delete_totp(&self, user: &UserId) -> StoreResult<bool>;

    /// Replaces the user's whole recovery-code set with `codes` (an empty
    /// slice removes it): afterwards no code of the old set works. Atomic:
    /// a concurrent use sees either the old set or the new one.
    async fn replace_recovery_codes(
        &self,
        user: &UserId,
        codes: &[RecoveryCodeHash],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Uses up the user's recovery code `code`: returns true and forgets
    /// it when the user has it, false otherwise (unknown, already used, or
    /// another user's). Of concurrent uses of one code exactly one gets
    /// true.
    async fn use_recovery_code(&self, user: &UserId, code: &RecoveryCodeHash) -> StoreResult<bool>;

    /// How many unused recovery codes the user has.
    async fn recovery_codes_left(&self, user: &UserId) -> StoreResult<u32>;

    /// Stores a new passkey. `Err(Conflict)` when its id or credential id
    /// is already stored (the same authenticator registered twice).
    async fn add_passkey(&self, passkey: &Passkey) -> StoreResult<()>;

    /// The user's passkeys, oldest first.
    async fn passkeys(&self, user: &UserId) -> StoreResult<Vec<Passkey>>;

    /// `Ok(None)` when no passkey has that credential id.
    async fn find_passkey(&self, credential_id: &str) -> StoreResult<Option<Passkey>>;

    /// Renames the user's passkey `id`. Returns false when the user has no
    /// passkey with that id (another user's is not theirs to rename).
    async fn rename_passkey(&self, user: &UserId, id: &str, name: &str) -> StoreResult<bool>;

    /// Removes the user's passkey `id`. Returns false when the user has no
    /// passkey with that id.
    async fn delete_passkey(&self, user: &UserId, id: &str) -> StoreResult<bool>;

    /// After a sign-in with passkey `id`: stores its updated credential and
    /// signature counter and the time it was used. Returns false when the
    /// passkey is gone (removed meanwhile). Whether the counter went back
    /// (a cloned authenticator) is the caller's check, before this.
    async fn record_passkey_use(
        &self,
        id: &str,
        credential: &str,
        counter: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Stores the server half of a passkey ceremony until its answer.
    async fn put_passkey_ceremony(&self, ceremony: &PasskeyCeremony) -> StoreResult<()>;

    /// Takes (deletes) the ceremony of that handle and kind, in one atomic
    /// write: of concurrent answers at most one gets it. `Ok(None)` when
    /// there is none, or it had expired at `now` (it is deleted all the
    /// same).
    async fn take_passkey_ceremony(
        &self,
        handle: &TokenHash,
        kind: CeremonyKind,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PasskeyCeremony>>;
}
