//! Access-token signing keys (issue 20): [`SigningKeyStore`], the key
//! pairs every instance on one store signs and verifies with.
//!
//! The current key of an algorithm is its newest unretired one (by
//! `created_at`, then `kid`), so instances that read the same rows agree
//! on it without a lock. A retired key still verifies and is still
//! published until it is pruned. The private half is stored only sealed
//! under MFA_ENCRYPTION_KEY (the store never sees it in clear).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{StoreResult, StoredInstant};

/// One key pair as the services see it. No `Debug` derive: the sealed
/// private key is harmless without MFA_ENCRYPTION_KEY but has no business
/// in a log.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The JOSE name: `ES256` or `EdDSA`.
    pub alg: String,
    /// The public JWK (`kty`, `crv`, `x`, `y`) as JSON text.
    pub public_jwk: String,
    /// The PKCS#8 private key sealed by `MfaKey::seal_signing_key`.
    pub private_sealed: String,
    pub created_at: DateTime<Utc>,
    /// When a newer key replaced it; `None` while it is (or may become) the
    /// current key.
    pub retired_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// A key as both backends store it: a `signing_keys` row (`T = i64`) or
/// document (`T = bson::DateTime`), keyed by `kid`. A document leaves out
/// `retired_at` until it is retired.
#[derive(sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct StoredSigningKey<T> {
    #[serde(rename = "_id")]
    pub(crate) kid: String,
    pub(crate) alg: String,
    pub(crate) public_jwk: String,
    pub(crate) private_sealed: String,
    pub(crate) created_at: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retired_at: Option<T>,
}

impl<T: StoredInstant> StoredSigningKey<T> {
    pub(crate) fn new(key: &SigningKeyRecord) -> Self {
        Self {
            kid: key.kid.clone(),
            alg: key.alg.clone(),
            public_jwk: key.public_jwk.clone(),
            private_sealed: key.private_sealed.clone(),
            created_at: T::from_utc(key.created_at),
            retired_at: key.retired_at.map(T::from_utc),
        }
    }
}

impl<T: StoredInstant> TryFrom<StoredSigningKey<T>> for SigningKeyRecord {
    type Error = super::StoreError;

    fn try_from(stored: StoredSigningKey<T>) -> StoreResult<Self> {
        Ok(Self {
            kid: stored.kid,
            alg: stored.alg,
            public_jwk: stored.public_jwk,
            private_sealed: stored.private_sealed,
            created_at: stored.created_at.to_utc()?,
            retired_at: stored.retired_at.map(T::to_utc).transpose()?,
        })
    }
}

#[async_trait]
pub trait SigningKeyStore: Send + Sync {
    /// Stores a new key. `Err(Conflict)` when its kid is already stored,
    /// and then nothing changes.
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;

    /// Every stored key, oldest first (by `created_at`, then `kid`).
    async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;

    /// Sets `retired_at = at` on every unretired key but `current`;
    /// returns how many. Idempotent: instances that agree on the current
    /// key can all call it.
    async fn retire_signing_keys_except(
        &self,
        current: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// Deletes the keys retired before `before` and returns their kids.
    async fn delete_signing_keys_retired_before(
        &self,
        before: DateTime<Utc>,
    ) -> StoreResult<Vec<String>>;
}
