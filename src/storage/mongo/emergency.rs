//! `emergency_uses` on MongoDB: the [`EmergencyStore`]. One open use per
//! user is a unique sparse index on `open_user_id`, a field present only
//! while the use is open (a partial index cannot select "field missing");
//! each end and review is one conditional update.

use async_trait::async_trait;
use bson::{doc, Document};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;

use super::{bson_date, MongoStore};
use crate::domain::{EmergencyEnd, EmergencyReview, EmergencyUse, UserId};
use crate::storage::{
    EmergencyFilter, EmergencyStore, StoreError, StoreResult, StoredEmergencyUse,
};

pub(super) const COLLECTION: &str = "emergency_uses";
/// Present while the use is open: the unique (sparse) index's key.
pub(super) const OPEN_USER: &str = "open_user_id";

type Doc = StoredEmergencyUse<bson::DateTime>;

impl MongoStore {
    fn emergency_uses(&self) -> mongodb::Collection<Doc> {
        self.db.collection(COLLECTION)
    }

    async fn emergency_uses_matching(
        &self,
        filter: Document,
        sort: Document,
        limit: u32,
    ) -> StoreResult<Vec<EmergencyUse>> {
        let docs: Vec<Doc> = self
            .emergency_uses()
            .find(filter)
            .sort(sort)
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(EmergencyUse::try_from).collect()
    }
}

#[async_trait]
impl EmergencyStore for MongoStore {
    async fn start_emergency_use(&self, started: &EmergencyUse) -> StoreResult<bool> {
        // The unique index is what refuses a second open use.
        self.indexes.ensure().await?;
        match self.emergency_uses().insert_one(Doc::new(started)).await {
            Ok(_) => Ok(true),
            Err(e) => match StoreError::from(e) {
                StoreError::Conflict => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn open_emergency_use(&self, user: &UserId) -> StoreResult<Option<EmergencyUse>> {
        let found = self
            .emergency_uses()
            .find_one(doc! { OPEN_USER: user.as_str() })
            .await?;
        found.map(EmergencyUse::try_from).transpose()
    }

    async fn end_emergency_use(
        &self,
        id: &str,
        at: DateTime<Utc>,
        how: EmergencyEnd,
    ) -> StoreResult<bool> {
        let done = self
            .emergency_uses()
            .update_one(
                doc! { "_id": id, "ended_at": { "$exists": false } },
                doc! {
                    "$set": { "ended_at": bson_date(at), "ended_how": how.as_str() },
                    "$unset": { OPEN_USER: "" },
                },
            )
            .await?;
        Ok(done.modified_count == 1)
    }

    async fn expired_open_emergency_uses(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<EmergencyUse>> {
        self.emergency_uses_matching(
            doc! { "ended_at": { "$exists": false }, "expires_at": { "$lte": bson_date(now) } },
            doc! { "expires_at": 1, "_id": 1 },
            limit,
        )
        .await
    }

    async fn find_emergency_use(&self, id: &str) -> StoreResult<Option<EmergencyUse>> {
        let found = self.emergency_uses().find_one(doc! { "_id": id }).await?;
        found.map(EmergencyUse::try_from).transpose()
    }

    async fn list_emergency_uses(
        &self,
        filter: EmergencyFilter,
        limit: u32,
    ) -> StoreResult<Vec<EmergencyUse>> {
        let newest = doc! { "started_at": -1, "_id": -1 };
        let (filter, sort) = match filter {
            EmergencyFilter::All => (doc! {}, newest),
            EmergencyFilter::Unreviewed => (
                doc! { "reviewed_at": { "$exists": false } },
                doc! { "started_at": 1, "_id": 1 },
            ),
            EmergencyFilter::Reviewed => (doc! { "reviewed_at": { "$exists": true } }, newest),
        };
        self.emergency_uses_matching(filter, sort, limit).await
    }

    async fn review_emergency_use(&self, id: &str, review: &EmergencyReview) -> StoreResult<bool> {
        let done = self
            .emergency_uses()
            .update_one(
                doc! { "_id": id, "reviewed_at": { "$exists": false } },
                doc! { "$set": {
                    "reviewed_at": bson_date(review.at),
                    "reviewed_by": review.by.as_str(),
                    "review_note": &review.note,
                } },
            )
            .await?;
        Ok(done.modified_count == 1)
    }

    async fn count_unreviewed_emergency_uses(
        &self,
        started_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        Ok(self
            .emergency_uses()
            .count_documents(doc! {
                "reviewed_at": { "$exists": false },
                "started_at": { "$lt": bson_date(started_before) },
            })
            .await?)
    }
}
