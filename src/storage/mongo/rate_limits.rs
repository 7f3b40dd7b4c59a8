//! RATE_LIMIT_BACKEND=store on MongoDB: one document per limit, client and
//! window in `rate_limits`, counted with `$inc` and removed by the TTL index
//! on `expires_at` once the window is over.
//!
//! A document per window rather than one per client that rolls over: the
//! roll-over ("restart at 1 when the window is newer") needs an update
//! pipeline, which older servers and wire-compatible ones lack, while
//! `$inc` with upsert is atomic everywhere.

use async_trait::async_trait;
use bson::doc;
use chrono::{DateTime, Utc};
use mongodb::options::{ReturnDocument, WriteConcern};
use serde::Deserialize;

use super::{bson_date, MongoStore};
use crate::storage::{RateLimitStore, StoreError, StoreResult};

pub(super) const COLLECTION: &str = "rate_limits";

#[derive(Deserialize)]
struct CounterDoc {
    hits: i64,
}

#[async_trait]
impl RateLimitStore for MongoStore {
    async fn count_request(
        &self,
        limiter: &str,
        client: &str,
        window_start: DateTime<Utc>,
        window_end: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let counters = self.db.collection::<CounterDoc>(COLLECTION);
        // Equality on `_id` alone: the server can then retry an upsert that
        // lost the race to insert the same document, and so can we.
        let id = format!("{limiter}|{client}|{}", window_start.timestamp_millis());
        let count = || {
            counters
                .find_one_and_update(
                    doc! { "_id": &id },
                    // `$max` rather than `$setOnInsert`: every request of
                    // the window names the same end, so both give the new
                    // document its expiry, and nx-27017 (the tests' server)
                    // ignores `$setOnInsert` on an upsert.
                    doc! {
                        "$inc": { "hits": 1_i64 },
                        "$max": { "expires_at": bson_date(window_end) },
                    },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                // The primary's word is enough for a count that is worth
                // nothing after a minute: waiting for a majority (the
                // replica-set default) would put a replication round trip
                // on every request, and a failover that loses the last
                // counts lets a client a few more requests.
                .write_concern(WriteConcern::nodes(1))
        };
        let counted = match count().await.map_err(StoreError::from) {
            // Two first requests of a window both inserted; the loser's
            // second try finds the document and increments it.
            Err(StoreError::Conflict) => count().await?,
            other => other?,
        };
        let hits = counted
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("upsert returned no document")))?
            .hits;
        Ok(u64::try_from(hits).unwrap_or(0))
    }
}
