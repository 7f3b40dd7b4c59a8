//! Second factors on MongoDB: `mfa_totp` (one document per user, keyed by
//! the user id), `mfa_recovery_codes` (one document per user holding the
//! set's hashes) and `passkeys`. Each "use" is one conditional update of
//! one document, which the server applies atomically: no transaction is
//! needed, so a standalone server will do. Users are never deleted by this
//! service, so these documents cannot be orphaned by it.

use async_trait::async_trait;
use bson::{doc, Bson};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{bson_date, MongoStore};
use crate::domain::mfa::{RecoveryCodeHash, SealedTotpSecret, TimeStep};
use crate::domain::TokenHash;
use crate::domain::UserId;
use crate::storage::{
    step_param, CeremonyKind, MfaStore, Passkey, PasskeyCeremony, StoreError, StoreResult,
    StoredCeremony, StoredPasskey, StoredTotp, TotpFactor,
};

pub(super) const TOTP: &str = "mfa_totp";
pub(super) const RECOVERY_CODES: &str = "mfa_recovery_codes";
pub(super) const PASSKEYS: &str = "passkeys";
/// The server halves of passkey ceremonies, keyed by the handle's hash.
pub(super) const CEREMONIES: &str = "passkey_ceremonies";

/// A stored BSON date as the domain's instant (it cannot fail: both are
/// milliseconds).
fn instant(at: bson::DateTime) -> StoreResult<DateTime<Utc>> {
    Ok(at.to_chrono())
}

#[derive(Serialize, Deserialize)]
struct RecoveryCodesDoc {
    #[serde(rename = "_id")]
    user_id: String,
    codes: Vec<String>,
    created_at: bson::DateTime,
}

impl MongoStore {
    fn totp(&self) -> mongodb::Collection<StoredTotp<bson::DateTime>> {
        self.db.collection(TOTP)
    }

    fn recovery_codes(&self) -> mongodb::Collection<RecoveryCodesDoc> {
        self.db.collection(RECOVERY_CODES)
    }

    fn passkey_docs(&self) -> mongodb::Collection<StoredPasskey<bson::DateTime>> {
        self.db.collection(PASSKEYS)
    }

    fn ceremonies(&self) -> mongodb::Collection<StoredCeremony<bson::DateTime>> {
        self.db.collection(CEREMONIES)
    }
}

#[async_trait]
impl MfaStore for MongoStore {
    async fn put_pending_totp(
        &self,
        user: &UserId,
        secret: &SealedTotpSecret,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // Matches only a pending factor; with none, the upsert inserts one,
        // and with a confirmed one that insert is refused by the `_id`.
        let written = self
            .totp()
            .update_one(
                doc! { "_id": user.as_str(), "confirmed": false },
                doc! { "$set": {
                    "secret": secret.as_str(),
                    "confirmed": false,
                    "created_at": bson_date(now),
                    "confirmed_at": Bson::Null,
                    "last_step": Bson::Null,
                } },
            )
            .upsert(true)
            .await
            .map_err(StoreError::from);
        match written {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn totp_factor(&self, user: &UserId) -> StoreResult<Option<TotpFactor>> {
        self.totp()
            .find_one(doc! { "_id": user.as_str() })
            .await?
            .map(|doc| doc.into_factor(instant))
            .transpose()
    }

    async fn confirm_totp(
        &self,
        user: &UserId,
        secret: &SealedTotpSecret,
        step: TimeStep,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = self
            .totp()
            .update_one(
                doc! { "_id": user.as_str(), "confirmed": false, "secret": secret.as_str() },
                doc! { "$set": {
                    "confirmed": true,
                    "confirmed_at": bson_date(now),
                    "last_step": step_param(step),
                } },
            )
            .await?;
        Ok(done.matched_count == 1)
    }

    async fn accept_totp_step(&self, user: &UserId, step: TimeStep) -> StoreResult<bool> {
        let step = step_param(step);
        // A confirmed factor always has a last step (its confirming
        // code's), so no `$or` with a missing one is needed; nx-27017, the
        // tests' server, would also drop the other conditions of a filter
        // holding a top-level `$or`.
        let done = self
            .totp()
            .update_one(
                doc! { "_id": user.as_str(), "confirmed": true, "last_step": { "$lt": step } },
                doc! { "$set": { "last_step": step } },
            )
            .await?;
        Ok(done.matched_count == 1)
    }

    async fn delete_totp(&self, user: &UserId) -> StoreResult<bool> {
        let done = self
            .totp()
            .delete_one(doc! { "_id": user.as_str() })
            .await?;
        Ok(done.deleted_count == 1)
    }

    /// The set is one document, replaced whole in one write.
    async fn replace_recovery_codes(
        &self,
        user: &UserId,
        codes: &[RecoveryCodeHash],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let filter = doc! { "_id": user.as_str() };
        if codes.is_empty() {
            self.recovery_codes().delete_one(filter).await?;
            return Ok(());
        }
        let set = RecoveryCodesDoc {
            user_id: user.as_str().to_owned(),
            codes: codes.iter().map(|c| c.as_str().to_owned()).collect(),
            created_at: bson_date(now),
        };
        self.recovery_codes()
            .replace_one(filter, set)
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn use_recovery_code(&self, user: &UserId, code: &RecoveryCodeHash) -> StoreResult<bool> {
        // Matches only while the set still holds the code, so of
        // concurrent uses only the first pull finds it.
        let done = self
            .recovery_codes()
            .update_one(
                doc! { "_id": user.as_str(), "codes": code.as_str() },
                doc! { "$pull": { "codes": code.as_str() } },
            )
            .await?;
        Ok(done.modified_count == 1)
    }

    async fn recovery_codes_left(&self, user: &UserId) -> StoreResult<u32> {
        let set = self
            .recovery_codes()
            .find_one(doc! { "_id": user.as_str() })
            .await?;
        Ok(set.map_or(0, |set| u32::try_from(set.codes.len()).unwrap_or(u32::MAX)))
    }

    async fn add_passkey(&self, passkey: &Passkey) -> StoreResult<()> {
        // The unique index on credential_id refuses a second registration
        // of one authenticator only once it exists.
        self.indexes.ensure().await?;
        self.passkey_docs()
            .insert_one(StoredPasskey::new(passkey, bson_date))
            .await?;
        Ok(())
    }

    async fn passkeys(&self, user: &UserId) -> StoreResult<Vec<Passkey>> {
        let docs: Vec<StoredPasskey<bson::DateTime>> = self
            .passkey_docs()
            .find(doc! { "user_id": user.as_str() })
            .sort(doc! { "created_at": 1, "_id": 1 })
            .await?
            .try_collect()
            .await?;
        docs.into_iter()
            .map(|doc| doc.into_passkey(instant))
            .collect()
    }

    async fn find_passkey(&self, credential_id: &str) -> StoreResult<Option<Passkey>> {
        self.passkey_docs()
            .find_one(doc! { "credential_id": credential_id })
            .await?
            .map(|doc| doc.into_passkey(instant))
            .transpose()
    }

    async fn rename_passkey(&self, user: &UserId, id: &str, name: &str) -> StoreResult<bool> {
        let done = self
            .passkey_docs()
            .update_one(
                doc! { "_id": id, "user_id": user.as_str() },
                doc! { "$set": { "name": name } },
            )
            .await?;
        Ok(done.matched_count == 1)
    }

    async fn delete_passkey(&self, user: &UserId, id: &str) -> StoreResult<bool> {
        let done = self
            .passkey_docs()
            .delete_one(doc! { "_id": id, "user_id": user.as_str() })
            .await?;
        Ok(done.deleted_count == 1)
    }

    async fn record_passkey_use(
        &self,
        id: &str,
        credential: &str,
        counter: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = self
            .passkey_docs()
            .update_one(
                doc! { "_id": id },
                doc! { "$set": {
                    "credential": credential,
                    "counter": i64::from(counter),
                    "last_used_at": bson_date(now),
                } },
            )
            .await?;
        Ok(done.matched_count == 1)
    }

    async fn put_passkey_ceremony(&self, ceremony: &PasskeyCeremony) -> StoreResult<()> {
        self.ceremonies()
            .insert_one(StoredCeremony::new(ceremony, bson_date))
            .await?;
        Ok(())
    }

    async fn take_passkey_ceremony(
        &self,
        handle: &TokenHash,
        kind: CeremonyKind,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PasskeyCeremony>> {
        // findOneAndDelete is atomic on one document: a second answer
        // finds nothing. The expiry is judged after, so an expired
        // ceremony is gone too.
        let Some(doc) = self
            .ceremonies()
            .find_one_and_delete(doc! { "_id": handle.as_str(), "kind": kind.as_str() })
            .await?
        else {
            return Ok(None);
        };
        let ceremony = doc.into_ceremony(instant)?;
        Ok((ceremony.expires_at > now).then_some(ceremony))
    }
}
