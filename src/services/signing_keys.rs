//! The access-token signing keys in memory (issue 20): [`KeyRing`] loads
//! them from the [`SigningKeyStore`], makes the first key when the store
//! has none of the configured algorithm, hands out the current key to sign
//! with and every stored key's public half to verify with and to publish.
//!
//! Several instances on one store agree on the current key because it is
//! a function of the rows (the newest unretired key of the algorithm), and
//! each instance reloads the rows every minute and at once when a token
//! names a kid it does not know (at most every [`UNKNOWN_KID_RELOAD_EVERY`],
//! so a flood of forged kids cannot turn into a flood of reads).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use jsonwebtoken::{DecodingKey, EncodingKey};

use crate::clock::Clock;
use crate::domain::mfa::MfaKey;
use crate::domain::signing_key::{encoding_key, AccessAlgorithm, GeneratedKey, PublicJwk};
use crate::storage::{SigningKeyRecord, SigningKeyStore, StoreError};

/// How often every instance re-reads the keys (the minute sweep): a key
/// rotated elsewhere is signed with here within this long.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// The least time between two reloads caused by unknown kids.
pub const UNKNOWN_KID_RELOAD_EVERY: Duration = Duration::from_secs(10);

/// The key tokens are signed with now.
pub struct Signer {
    pub kid: String,
    pub alg: AccessAlgorithm,
    pub(crate) key: EncodingKey,
}

/// A stored key's public half, ready to verify with.
#[derive(Clone)]
pub struct Verifier {
    pub alg: AccessAlgorithm,
    pub(crate) key: DecodingKey,
}

/// What one load of the store gave.
#[derive(Default)]
struct Loaded {
    signer: Option<Arc<Signer>>,
    verifiers: HashMap<String, Verifier>,
    /// The JWKS members, newest key first.
    published: Vec<serde_json::Value>,
}

pub struct KeyRing {
    store: Arc<dyn SigningKeyStore>,
    mfa_key: MfaKey,
    algorithm: AccessAlgorithm,
    clock: Arc<dyn Clock>,
    loaded: RwLock<Arc<Loaded>>,
    /// When an unknown kid last caused a reload.
    unknown_reload: tokio::sync::Mutex<Option<DateTime<Utc>>>,
}

impl KeyRing {
    /// Loads the keys, first making one when the store has no current key
    /// of `algorithm`. With HS256 the ring stays empty and never reads the
    /// store: tokens are signed with JWT_ACCESS_SECRET and nothing is
    /// published.
    pub async fn start(
        store: Arc<dyn SigningKeyStore>,
        mfa_key: MfaKey,
        algorithm: AccessAlgorithm,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<Self>> {
        let ring = Arc::new(Self {
            store,
            mfa_key,
            algorithm,
            clock,
            loaded: RwLock::new(Arc::default()),
            unknown_reload: tokio::sync::Mutex::new(None),
        });
        if algorithm.is_asymmetric() {
            match ring.reload().await {
                Ok(()) => {}
                // The service starts while MongoDB is down (as it always
                // has): no key yet, so no token can be issued, which no
                // sign-in could get to anyway; the sweep retries every
                // second until the keys load.
                Err(e) if is_unavailable(&e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "the database is unreachable: access-token signing keys not loaded yet"
                ),
                Err(e) => return Err(e.context("cannot load the access-token signing keys")),
            }
        }
        Ok(ring)
    }

    pub fn algorithm(&self) -> AccessAlgorithm {
        self.algorithm
    }

    /// Re-reads the keys. Makes a key when none of the algorithm is
    /// current (first start, a switch of JWT_ACCESS_ALGORITHM), and
    /// retires any other unretired key (two instances that made a first
    /// key at the same moment: the newer wins everywhere). On failure the
    /// keys loaded before stay in use.
    pub async fn reload(&self) -> anyhow::Result<()> {
        if !self.algorithm.is_asymmetric() {
            return Ok(());
        }
        let mut keys = self.store.list_signing_keys().await?;
        let current = match current_of(&keys, self.algorithm) {
            Some(current) => current.clone(),
            None => {
                let made = add_key(
                    self.store.as_ref(),
                    &self.mfa_key,
                    self.algorithm,
                    self.clock.now(),
                )
                .await?;
                tracing::info!(kid = %made.kid, alg = %self.algorithm, "access-token signing key generated");
                keys = self.store.list_signing_keys().await?;
                current_of(&keys, self.algorithm)
                    .cloned()
                    .context("the signing key just stored is not listed")?
            }
        };
        if keys
            .iter()
            .any(|k| k.retired_at.is_none() && k.kid != current.kid)
        {
            self.store
                .retire_signing_keys_except(&current.kid, self.clock.now())
                .await?;
        }
        let loaded = self.load(&keys, &current)?;
        *self.loaded.write().expect("key ring lock poisoned") = Arc::new(loaded);
        Ok(())
    }

    fn load(
        &self,
        keys: &[SigningKeyRecord],
        current: &SigningKeyRecord,
    ) -> anyhow::Result<Loaded> {
        let private = self
            .mfa_key
            .open_signing_key(&current.private_sealed, &current.kid)
            .with_context(|| {
                format!(
                    "the signing key {} does not open with MFA_ENCRYPTION_KEY",
                    current.kid
                )
            })?;
        let signer = Signer {
            kid: current.kid.clone(),
            alg: self.algorithm,
            key: encoding_key(self.algorithm, &private).context("no key pair for HS256")?,
        };
        let mut loaded = Loaded {
            signer: Some(Arc::new(signer)),
            ..Loaded::default()
        };
        for key in keys.iter().rev() {
            let Some((alg, public)) = public_of(key) else {
                tracing::warn!(kid = %key.kid, "stored signing key cannot be read; not used");
                continue;
            };
            let Some(decoding) = public.decoding_key(alg) else {
                tracing::warn!(kid = %key.kid, "stored signing key cannot be read; not used");
                continue;
            };
            loaded.published.push(public.published(&key.kid, alg));
            loaded
                .verifiers
                .insert(key.kid.clone(), Verifier { alg, key: decoding });
        }
        Ok(loaded)
    }

    /// True once a key to sign with is loaded (always false with HS256).
    pub fn is_loaded(&self) -> bool {
        self.snapshot().signer.is_some()
    }

    /// The key to sign with; `None` with HS256, or until the keys could
    /// be loaded.
    pub fn signer(&self) -> Option<Arc<Signer>> {
        self.snapshot().signer.clone()
    }

    /// The public key `kid` names, if it is stored (current or retired).
    pub fn verifier(&self, kid: &str) -> Option<Verifier> {
        self.snapshot().verifiers.get(kid).cloned()
    }

    /// Whether `kid` is a stored key (current or retired), as of the last
    /// reload.
    pub fn knows(&self, kid: &str) -> bool {
        self.snapshot().verifiers.contains_key(kid)
    }

    /// `{"keys": [...]}`: every stored key's public JWK, newest first;
    /// empty with HS256 (a shared secret is never published).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.snapshot().published })
    }

    /// Reloads because a token named `kid`, unknown here: it may come from
    /// another instance that already signs with a key rotated in since the
    /// last reload. At most once per [`UNKNOWN_KID_RELOAD_EVERY`]; true
    /// when `kid` is known afterwards.
    pub async fn reload_for_unknown(&self, kid: &str) -> bool {
        if !self.algorithm.is_asymmetric() {
            return false;
        }
        {
            let mut last = self.unknown_reload.lock().await;
            let now = self.clock.now();
            let every = chrono::Duration::from_std(UNKNOWN_KID_RELOAD_EVERY)
                .expect("ten seconds fit a chrono duration");
            if last.is_some_and(|at| now >= at && now - at < every) {
                return self.verifier(kid).is_some();
            }
            *last = Some(now);
            if let Err(e) = self.reload().await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "reloading the signing keys failed"
                );
            }
        }
        self.verifier(kid).is_some()
    }

    fn snapshot(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().expect("key ring lock poisoned"))
    }
}

fn is_unavailable(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<StoreError>(),
        Some(StoreError::Unavailable(_))
    )
}

/// The newest unretired key of `alg` (the list is oldest first).
fn current_of(keys: &[SigningKeyRecord], alg: AccessAlgorithm) -> Option<&SigningKeyRecord> {
    keys.iter()
        .rev()
        .find(|k| k.retired_at.is_none() && k.alg == alg.as_str())
}

/// A stored key's algorithm and public JWK, if both read.
pub(crate) fn public_of(key: &SigningKeyRecord) -> Option<(AccessAlgorithm, PublicJwk)> {
    let alg = AccessAlgorithm::parse(&key.alg).filter(|a| a.is_asymmetric())?;
    let public = serde_json::from_str(&key.public_jwk).ok()?;
    Some((alg, public))
}

/// Makes a key pair of `alg` and stores it (private half sealed) as
/// created at `now`: the newest unretired key, so the current one. Retiring
/// the others is the caller's (a rotation retires them at once; a first
/// start retires whatever is not current after listing again, so two
/// instances starting together cannot retire each other's key).
pub(crate) async fn add_key(
    store: &dyn SigningKeyStore,
    mfa_key: &MfaKey,
    alg: AccessAlgorithm,
    now: DateTime<Utc>,
) -> Result<SigningKeyRecord, StoreError> {
    let generated = GeneratedKey::generate(alg)
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("HS256 has no key pair")))?;
    let record = SigningKeyRecord {
        kid: generated.kid.clone(),
        alg: alg.as_str().to_owned(),
        public_jwk: serde_json::to_string(&generated.public)
            .map_err(|e| StoreError::Other(e.into()))?,
        private_sealed: mfa_key.seal_signing_key(&generated.private_pkcs8, &generated.kid),
        created_at: now,
        retired_at: None,
    };
    store.insert_signing_key(&record).await?;
    Ok(record)
}
