//! `login_throttles` on SQLite: the [`LoginThrottleStore`], one row per
//! hashed key, each change a single statement.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{millis, SqliteStore};
use crate::domain::TokenHash;
use crate::storage::login_throttles::StoredThrottle;
use crate::storage::{LoginThrottle, LoginThrottleStore, StoreResult};

/// A `login_throttles` row.
type ThrottleRow = StoredThrottle<i64>;

const THROTTLE_COLUMNS: &str = "key_hash, failures, window_started_at, locked_until, lock_count";

#[async_trait]
impl LoginThrottleStore for SqliteStore {
    async fn login_throttle(&self, key: &TokenHash) -> StoreResult<Option<LoginThrottle>> {
        let row: Option<ThrottleRow> = sqlx::query_as(&format!(
            "SELECT {THROTTLE_COLUMNS} FROM login_throttles WHERE key_hash = ?"
        ))
        .bind(key.as_str())
        .fetch_optional(&mut self.read().await?)
        .await?;
        row.map(LoginThrottle::try_from).transpose()
    }

    async fn add_login_failure(
        &self,
        key: &TokenHash,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> StoreResult<LoginThrottle> {
        // One statement, so concurrent failures are all counted.
        let row: ThrottleRow = sqlx::query_as(&format!(
            "INSERT INTO login_throttles (key_hash, failures, window_started_at) VALUES (?, 1, ?) \
             ON CONFLICT (key_hash) DO UPDATE SET \
               failures = CASE WHEN window_started_at <= ? THEN 1 ELSE failures + 1 END, \
               window_started_at = CASE WHEN window_started_at <= ? \
                 THEN excluded.window_started_at ELSE window_started_at END \
             RETURNING {THROTTLE_COLUMNS}"
        ))
        .bind(key.as_str())
        .bind(millis(now))
        .bind(millis(window_start))
        .bind(millis(window_start))
        .fetch_one(&mut self.write().await?)
        .await?;
        row.try_into()
    }

    async fn lock_login(
        &self,
        key: &TokenHash,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE login_throttles SET locked_until = ?, lock_count = lock_count + 1, \
             failures = 0, window_started_at = ? \
             WHERE key_hash = ? AND (locked_until IS NULL OR locked_until <= ?)",
        )
        .bind(millis(until))
        .bind(millis(now))
        .bind(key.as_str())
        .bind(millis(now))
        .execute(&mut self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn clear_login_throttle(&self, key: &TokenHash) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_throttles WHERE key_hash = ?")
            .bind(key.as_str())
            .execute(&mut self.write().await?)
            .await?;
        Ok(())
    }
}
