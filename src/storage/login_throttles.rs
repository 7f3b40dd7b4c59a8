//! Failed sign-ins counted per submitted email: [`LoginThrottleStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{stored_count, StoreError, StoreResult, StoredInstant};
use crate::domain::TokenHash;

/// Failed sign-ins counted against one submitted email (ASVS 6.3.1). The
/// key is a hash of the normalised string, whether or not an account has
/// it, so the table reveals neither addresses nor which ones exist. The
/// same counter, under keys of another namespace, counts the emails sent to
/// one account (MAIL_PER_ACCOUNT_PER_HOUR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failures since `window_started_at`.
    pub failures: u32,
    pub window_started_at: DateTime<Utc>,
    /// Attempts are refused until then.
    pub locked_until: Option<DateTime<Utc>>,
    /// Locks so far; each one lasts twice as long as the one before.
    pub lock_count: u32,
}

/// A throttle as both backends store it: a `login_throttles` row (SQLite,
/// `T = i64`) or document (MongoDB, `T = bson::DateTime`), keyed by the
/// hash of the submitted email.
#[derive(sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct StoredThrottle<T> {
    #[serde(rename = "_id")]
    pub(crate) key_hash: String,
    pub(crate) failures: i64,
    pub(crate) window_started_at: T,
    pub(crate) locked_until: Option<T>,
    #[serde(default)]
    pub(crate) lock_count: i64,
}

impl<T: StoredInstant> TryFrom<StoredThrottle<T>> for LoginThrottle {
    type Error = StoreError;

    fn try_from(stored: StoredThrottle<T>) -> StoreResult<Self> {
        Ok(LoginThrottle {
            failures: stored_count(stored.failures),
            window_started_at: stored.window_started_at.to_utc()?,
            locked_until: stored.locked_until.map(T::to_utc).transpose()?,
            lock_count: stored_count(stored.lock_count),
        })
    }
}

#[async_trait]
pub trait LoginThrottleStore: Send + Sync {
    /// The throttle state of `key`, if any failure was ever recorded.
    async fn login_throttle(&self, key: &TokenHash) -> StoreResult<Option<LoginThrottle>>;

    /// Atomically counts one failure: a window that started at or before
    /// `window_start` is over, so the count restarts at 1 from `now`.
    /// Returns the state after the increment.
    async fn add_login_failure(
        &self,
        key: &TokenHash,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> StoreResult<LoginThrottle>;

    /// Locks `key` until `until`, bumping its lock count and restarting the
    /// failure count. Returns false when another request locked it first (so
    /// exactly one of them sends the owner a notice).
    async fn lock_login(
        &self,
        key: &TokenHash,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Forgets `key` entirely: after a successful sign-in or a reset.
    async fn clear_login_throttle(&self, key: &TokenHash) -> StoreResult<()>;
}
