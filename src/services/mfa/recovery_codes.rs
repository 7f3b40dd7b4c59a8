//! Recovery codes: a new set (shown once), using one in place of an
//! authenticator code, and how many are left.

use std::sync::Arc;

use super::MfaError;
use crate::clock::Clock;
use crate::domain::mfa::{MfaKey, RecoveryCode};
use crate::domain::UserId;
use crate::storage::MfaStore;

/// The user's recovery-code set. The routes decide who may regenerate
/// (signed in, recently re-authenticated); this only keeps the set.
pub struct RecoveryCodes {
    store: Arc<dyn MfaStore>,
    key: MfaKey,
    clock: Arc<dyn Clock>,
}

impl RecoveryCodes {
    pub fn new(store: Arc<dyn MfaStore>, key: MfaKey, clock: Arc<dyn Clock>) -> Self {
        Self { store, key, clock }
    }

    /// A fresh set replacing the whole old one (no old code works after),
    /// returned in clear this once: only keyed hashes are stored.
    pub async fn regenerate(&self, user: &UserId) -> Result<Vec<RecoveryCode>, MfaError> {
        let codes = RecoveryCode::generate_set();
        let hashes: Vec<_> = codes.iter().map(|c| c.hash(&self.key, user)).collect();
        self.store
            .replace_recovery_codes(user, &hashes, self.clock.now())
            .await?;
        Ok(codes)
    }

    /// Uses up the code the user typed (case, blanks, dashes and look-alike
    /// letters forgiven) and returns how many are left. `WrongCode` when it
    /// is not one of the user's unused codes; of concurrent uses of one
    /// code, exactly one succeeds.
    pub async fn use_code(&self, user: &UserId, typed: &str) -> Result<u32, MfaError> {
        let code = RecoveryCode::parse(typed).ok_or(MfaError::WrongCode)?;
        if !self
            .store
            .use_recovery_code(user, &code.hash(&self.key, user))
            .await?
        {
            return Err(MfaError::WrongCode);
        }
        self.left(user).await
    }

    /// How many unused codes the user has (the account page shows it).
    pub async fn left(&self, user: &UserId) -> Result<u32, MfaError> {
        Ok(self.store.recovery_codes_left(user).await?)
    }
}
