//! `login_throttles` on MongoDB: the [`LoginThrottleStore`], counted with
//! conditional single-document writes.

use async_trait::async_trait;
use bson::doc;
use chrono::{DateTime, Utc};
use mongodb::options::ReturnDocument;

use super::{bson_date, is_duplicate_key, MongoStore};
use crate::domain::TokenHash;
use crate::storage::login_throttles::StoredThrottle;
use crate::storage::{LoginThrottle, LoginThrottleStore, StoreError, StoreResult};

/// Passes of `add_login_failure` before giving up: each pass that writes
/// nothing lost to another request's write, so more than a few means
/// something is wrong, not contention.
const MAX_COUNT_ATTEMPTS: usize = 5;

/// A `login_throttles` document.
pub(super) type ThrottleDoc = StoredThrottle<bson::DateTime>;

#[async_trait]
impl LoginThrottleStore for MongoStore {
    async fn login_throttle(&self, key: &TokenHash) -> StoreResult<Option<LoginThrottle>> {
        self.login_throttles
            .find_one(doc! { "_id": key.as_str() })
            .await?
            .map(LoginThrottle::try_from)
            .transpose()
    }

    async fn add_login_failure(
        &self,
        key: &TokenHash,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> StoreResult<LoginThrottle> {
        // Without a pipeline update (older servers and the test server lack
        // it) a window restart and an increment are separate writes; each is
        // conditional so concurrent failures are all counted:
        // 1. count in the open window;
        // 2. else restart a window that is over: the filter names the old
        //    window, so of several racers exactly one matches, and the others
        //    find the restarted window open at step 1 when they loop;
        // 3. else no document exists: insert the first failure; a racer that
        //    inserted first makes this a duplicate key, and the loop counts
        //    in its window instead.
        // Each pass that writes nothing saw another request's write, so a
        // few passes always settle.
        let open_window = doc! { "$gt": bson_date(window_start) };
        for _ in 0..MAX_COUNT_ATTEMPTS {
            let counted = self
                .login_throttles
                .find_one_and_update(
                    doc! { "_id": key.as_str(), "window_started_at": open_window.clone() },
                    doc! { "$inc": { "failures": 1_i64 } },
                )
                .return_document(ReturnDocument::After)
                .await?;
            if let Some(doc) = counted {
                return doc.try_into();
            }
            let restarted = self
                .login_throttles
                .find_one_and_update(
                    doc! {
                        "_id": key.as_str(),
                        "window_started_at": { "$lte": bson_date(window_start) },
                    },
                    doc! { "$set": { "failures": 1_i64, "window_started_at": bson_date(now) } },
                )
                .return_document(ReturnDocument::After)
                .await?;
            if let Some(doc) = restarted {
                return doc.try_into();
            }
            let first = ThrottleDoc {
                key_hash: key.as_str().to_owned(),
                failures: 1,
                window_started_at: bson_date(now),
                locked_until: None,
                lock_count: 0,
            };
            match self.login_throttles.insert_one(&first).await {
                Ok(_) => return first.try_into(),
                Err(e) if is_duplicate_key(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "login failure not counted after {MAX_COUNT_ATTEMPTS} attempts"
        )))
    }

    async fn lock_login(
        &self,
        key: &TokenHash,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let now = bson_date(now);
        let done = self
            .login_throttles
            .update_one(
                doc! {
                    "_id": key.as_str(),
                    "$or": [ { "locked_until": null }, { "locked_until": { "$lte": now } } ],
                },
                doc! {
                    "$set": { "locked_until": bson_date(until), "failures": 0_i64, "window_started_at": now },
                    "$inc": { "lock_count": 1_i64 },
                },
            )
            .await?;
        Ok(done.modified_count == 1)
    }

    async fn clear_login_throttle(&self, key: &TokenHash) -> StoreResult<()> {
        self.login_throttles
            .delete_one(doc! { "_id": key.as_str() })
            .await?;
        Ok(())
    }
}
