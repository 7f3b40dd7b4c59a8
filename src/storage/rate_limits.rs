//! Per-client request counters in the database (RATE_LIMIT_BACKEND=store),
//! so that several instances on one store enforce one per-IP limit rather
//! than one each.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Counts one request of `client` against the limit named `limiter` in
    /// the fixed window from `window_start` to `window_end`, and returns how
    /// many requests that window holds with this one. Atomic: of concurrent
    /// calls, from this instance or another on the same store, each is
    /// counted exactly once and each gets a different count. A later window
    /// starts again from 1; a window's count is forgotten some time after it
    /// ended (`purge_expired`, or a TTL index).
    async fn count_request(
        &self,
        limiter: &str,
        client: &str,
        window_start: DateTime<Utc>,
        window_end: DateTime<Utc>,
    ) -> StoreResult<u64>;
}
