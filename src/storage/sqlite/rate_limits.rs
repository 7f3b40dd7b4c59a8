//! RATE_LIMIT_BACKEND=store on SQLite: one row per limit and client holding
//! its current window (`rate_limits`, migration 20261206000400), so the
//! table holds the clients seen lately rather than a row per minute each.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteSynchronous;

use super::{millis, SqliteStore};
use crate::storage::{RateLimitStore, StoreError, StoreResult};

/// One statement, so concurrent requests (from this process or another on
/// the file) are each counted. A request of a later window restarts the
/// count; one stamped with an earlier window than the row's (an instance
/// whose clock is behind) counts into the row's window rather than
/// restarting it.
macro_rules! count_sql {
    () => {
        "INSERT INTO rate_limits (limiter, client, window_start, hits, expires_at) \
         VALUES (?, ?, ?, 1, ?) \
         ON CONFLICT (limiter, client) DO UPDATE SET \
           hits = CASE WHEN excluded.window_start > window_start THEN 1 ELSE hits + 1 END, \
           window_start = max(window_start, excluded.window_start), \
           expires_at = max(expires_at, excluded.expires_at) \
         RETURNING hits"
    };
}

/// The count committed with `synchronous = NORMAL` although
/// SQLITE_SYNCHRONOUS is `full`: a count is worth nothing after a minute,
/// and a power cut that loses the last ones lets a client a few more
/// requests, while an fsync per count made every request wait for the disk
/// in turn (the global limit counts every request): `health` fell from
/// about 8,600 to 310 requests/s. The setting is per connection and is read
/// at each commit, so the writer's other commits keep FULL.
const COUNT_WITHOUT_FSYNC: &str = concat!(
    "PRAGMA synchronous = NORMAL; ",
    count_sql!(),
    "; PRAGMA synchronous = FULL"
);

#[async_trait]
impl RateLimitStore for SqliteStore {
    async fn count_request(
        &self,
        limiter: &str,
        client: &str,
        window_start: DateTime<Utc>,
        window_end: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let full = matches!(self.synchronous, SqliteSynchronous::Full);
        let sql = if full {
            COUNT_WITHOUT_FSYNC
        } else {
            count_sql!()
        };
        let writer = Arc::clone(&self.writer);
        let (limiter, client) = (limiter.to_owned(), client.to_owned());
        let (start, end) = (millis(window_start), millis(window_end));
        // A task of its own, so the count runs to its end even when the
        // caller stops waiting (the limiter gives up after a second): cut
        // off between its two PRAGMAs, it would leave the writer at NORMAL
        // for the commits that need FULL.
        let counted = tokio::spawn(async move {
            let mut conn = writer.get().await?;
            let rows: Result<Vec<(i64,)>, _> = sqlx::query_as(sql)
                .bind(&limiter)
                .bind(&client)
                .bind(start)
                .bind(end)
                .fetch_all(&mut conn)
                .await;
            if rows.is_err() && full {
                // Stopped before its last PRAGMA: never hand the writer on
                // at NORMAL.
                let restored = sqlx::query("PRAGMA synchronous = FULL")
                    .execute(&mut conn)
                    .await;
                if restored.is_err() {
                    conn.discard();
                }
            }
            rows.map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("rate-limit count stopped: {e}")))??;
        let hits = counted.first().map_or(0, |(hits,)| *hits);
        Ok(u64::try_from(hits).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's level after each count, succeeded or failed: counts
    /// skip the fsync, nothing else may.
    #[tokio::test]
    async fn counts_leave_the_writer_fsyncing_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/counts.db", dir.path().display());
        let store = SqliteStore::connect(&url).await.unwrap();
        let level = || async {
            let (level,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                .fetch_one(&mut store.write().await.unwrap())
                .await
                .unwrap();
            level
        };
        let start = Utc::now();
        let end = start + chrono::Duration::minutes(1);
        assert_eq!(store.count_request("l", "c", start, end).await.unwrap(), 1);
        assert_eq!(level().await, 2, "FULL after a count");
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE UPDATE ON rate_limits \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(&mut store.write().await.unwrap())
        .await
        .unwrap();
        assert!(store.count_request("l", "c", start, end).await.is_err());
        assert_eq!(level().await, 2, "FULL after a failed count");
    }
}
