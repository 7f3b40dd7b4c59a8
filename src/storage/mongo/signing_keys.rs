//! `signing_keys` on MongoDB: the [`SigningKeyStore`]. One document per
//! key, its `_id` the kid (so a duplicate kid is refused by the server);
//! an index on `created_at` orders the listing.

use async_trait::async_trait;
use bson::doc;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::Collection;

use super::{bson_date, MongoStore};
use crate::storage::signing_keys::StoredSigningKey;
use crate::storage::{SigningKeyRecord, SigningKeyStore, StoreResult};

pub(super) const COLLECTION: &str = "signing_keys";

type SigningKeyDoc = StoredSigningKey<bson::DateTime>;

impl MongoStore {
    fn signing_keys(&self) -> Collection<SigningKeyDoc> {
        self.db.collection(COLLECTION)
    }
}

#[async_trait]
impl SigningKeyStore for MongoStore {
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        self.signing_keys()
            .insert_one(SigningKeyDoc::new(key))
            .await?;
        Ok(())
    }

    async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let docs: Vec<SigningKeyDoc> = self
            .signing_keys()
            .find(doc! {})
            .sort(doc! { "created_at": 1, "_id": 1 })
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(SigningKeyRecord::try_from).collect()
    }

    async fn retire_signing_keys_except(
        &self,
        current: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let done = self
            .signing_keys()
            .update_many(
                doc! { "retired_at": { "$exists": false }, "_id": { "$ne": current } },
                doc! { "$set": { "retired_at": bson_date(at) } },
            )
            .await?;
        Ok(done.modified_count)
    }

    async fn delete_signing_keys_retired_before(
        &self,
        before: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        // Read, then delete exactly those: what is printed is what went.
        let filter = doc! { "retired_at": { "$lt": bson_date(before) } };
        let kids: Vec<String> = self
            .signing_keys()
            .find(filter.clone())
            .await?
            .map_ok(|key| key.kid)
            .try_collect()
            .await?;
        if kids.is_empty() {
            return Ok(kids);
        }
        self.signing_keys()
            .delete_many(
                doc! { "_id": { "$in": &kids }, "retired_at": { "$lt": bson_date(before) } },
            )
            .await?;
        Ok(kids)
    }
}
