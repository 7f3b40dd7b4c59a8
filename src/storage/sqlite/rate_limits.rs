//! RATE_LIMIT_BACKEND=store on SQLite: one row per limit and client holding
//! its current window (`rate_limits`, migration 20261206000300), so the
//! table holds the clients seen lately rather than a row per minute each.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{map_err, millis, SqliteStore};
use crate::storage::{RateLimitStore, StoreResult};

/// One statement, so concurrent requests (from this process or another on
/// the file) are each counted. A request of a later window restarts the
/// count; one stamped with an earlier window than the row's (an instance
/// whose clock is behind) counts into the row's window rather than
/// restarting it.
const COUNT_SQL: &str =
    "INSERT INTO rate_limits (limiter, client, window_start, hits, expires_at) \
     VALUES (?, ?, ?, 1, ?) \
     ON CONFLICT (limiter, client) DO UPDATE SET \
       hits = CASE WHEN excluded.window_start > window_start THEN 1 ELSE hits + 1 END, \
       window_start = max(window_start, excluded.window_start), \
       expires_at = max(expires_at, excluded.expires_at) \
     RETURNING hits";

#[async_trait]
impl RateLimitStore for SqliteStore {
    async fn count_request(
        &self,
        limiter: &str,
        client: &str,
        window_start: DateTime<Utc>,
        window_end: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let (hits,): (i64,) = sqlx::query_as(COUNT_SQL)
            .bind(limiter)
            .bind(client)
            .bind(millis(window_start))
            .bind(millis(window_end))
            .fetch_one(&mut self.write().await?)
            .await
            .map_err(map_err)?;
        Ok(u64::try_from(hits).unwrap_or(0))
    }
}
