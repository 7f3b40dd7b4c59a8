//! Rotating and pruning the access-token signing keys (issue 20): what
//! `clinic-auth keys rotate|prune|list` and the minute sweep do.
//!
//! Rotation signs nobody out: the new key becomes current, the previous
//! one is retired but stays stored, so it still verifies and stays in the
//! JWKS. It may be pruned once no token it signed can still be accepted:
//! JWT_ACCESS_EXPIRES after its retirement, plus the reload interval (an
//! instance may go on signing with it until its next reload) and the
//! verification leeway.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::signing_keys::{add_key, RELOAD_EVERY};
use super::tokens::LEEWAY_SECS;
use super::{Audit, ClientContext};
use crate::clock::Clock;
use crate::domain::audit::AuditEvent;
use crate::domain::mfa::MfaKey;
use crate::domain::signing_key::AccessAlgorithm;
use crate::storage::{SigningKeyRecord, SigningKeyStore, StoreError};

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Tokens are signed with it.
    Current,
    /// Replaced, but tokens it signed may still be valid: still verified
    /// and published.
    Retired,
    /// Retired long enough that no token it signed is valid: `keys prune`
    /// (or the sweep) removes it.
    Prunable,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Retired => "retired",
            Self::Prunable => "prunable",
        }
    }
}

/// One key as `keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    pub kid: String,
    pub alg: String,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub state: KeyState,
}

/// Why a rotation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// HS256 signs with JWT_ACCESS_SECRET: there is no key pair to rotate.
    #[error("JWT_ACCESS_ALGORITHM is HS256: access tokens are signed with JWT_ACCESS_SECRET, there is no key pair to rotate")]
    SharedSecret,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct KeyRotation {
    store: Arc<dyn SigningKeyStore>,
    mfa_key: MfaKey,
    algorithm: AccessAlgorithm,
    access_ttl: Duration,
    clock: Arc<dyn Clock>,
    /// Where rotations and prunings are recorded, and who did them
    /// (`cli`, `sweep`): operator actions on what every token relies on.
    audit: Option<(Audit, ClientContext, &'static str)>,
}

impl KeyRotation {
    pub fn new(
        store: Arc<dyn SigningKeyStore>,
        mfa_key: MfaKey,
        algorithm: AccessAlgorithm,
        access_ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            mfa_key,
            algorithm,
            access_ttl,
            clock,
            audit: None,
        }
    }

    /// Records every rotation and pruning in the audit trail, as done by
    /// `by` (`cli`, `sweep`) from `client`.
    pub fn audited(mut self, audit: Audit, client: ClientContext, by: &'static str) -> Self {
        self.audit = Some((audit, client, by));
        self
    }

    async fn record(&self, event: AuditEvent, detail: String) {
        if let Some((audit, client, by)) = &self.audit {
            let entry = audit
                .entry(event, client)
                .detail(format!("by={by} {detail}"));
            // The key change is done either way; a record that cannot be
            // stored is logged by the audit writer.
            if let Err(e) = audit.record(entry).await {
                tracing::error!(target: "audit", error = %e, event = %event, "signing key change not recorded");
            }
        }
    }

    /// How long a retired key is kept: JWT_ACCESS_EXPIRES, the reload
    /// interval and the leeway.
    pub fn keep_retired(&self) -> Duration {
        self.access_ttl + RELOAD_EVERY + Duration::from_secs(LEEWAY_SECS)
    }

    fn prune_before(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - chrono::Duration::from_std(self.keep_retired()).unwrap_or(chrono::Duration::MAX)
    }

    /// Every stored key, oldest first, with its state.
    pub async fn list(&self) -> Result<Vec<ListedKey>, StoreError> {
        let keys = self.store.list_signing_keys().await?;
        let before = self.prune_before(self.clock.now());
        Ok(keys
            .into_iter()
            .map(|key| ListedKey {
                state: state_of(&key, before),
                kid: key.kid,
                alg: key.alg,
                created_at: key.created_at,
                retired_at: key.retired_at,
            })
            .collect())
    }

    /// A new current key of the configured algorithm; every other key is
    /// retired now and stays published until pruned. Returns the new kid.
    pub async fn rotate(&self) -> Result<String, RotationError> {
        if !self.algorithm.is_asymmetric() {
            return Err(RotationError::SharedSecret);
        }
        let now = self.clock.now();
        let key = add_key(self.store.as_ref(), &self.mfa_key, self.algorithm, now).await?;
        let retired = self.store.retire_signing_keys_except(&key.kid, now).await?;
        self.record(
            AuditEvent::SigningKeyRotated,
            format!("kid={} alg={} retired={retired}", key.kid, key.alg),
        )
        .await;
        Ok(key.kid)
    }

    /// Removes the keys retired longer than [`Self::keep_retired`] ago and
    /// returns their kids.
    pub async fn prune(&self) -> Result<Vec<String>, StoreError> {
        let before = self.prune_before(self.clock.now());
        let removed = self
            .store
            .delete_signing_keys_retired_before(before)
            .await?;
        if !removed.is_empty() {
            self.record(
                AuditEvent::SigningKeysPruned,
                format!("kids={}", removed.join(",")),
            )
            .await;
        }
        Ok(removed)
    }
}

fn state_of(key: &SigningKeyRecord, prune_before: DateTime<Utc>) -> KeyState {
    match key.retired_at {
        None => KeyState::Current,
        Some(at) if at < prune_before => KeyState::Prunable,
        Some(_) => KeyState::Retired,
    }
}
