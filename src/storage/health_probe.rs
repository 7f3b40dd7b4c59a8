//! The two probes behind `/health`, apart from the aggregates, so the
//! health check holds these and not the whole store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// Whether the database answers, and whether it takes writes.
#[async_trait]
pub trait HealthProbe: Send + Sync {
    /// Cheap round trip to prove the database answers (for /health).
    async fn ping(&self) -> StoreResult<()>;

    /// One small real write, an upsert of the single row (document) of
    /// `health_probe`, for the write probe behind /health: succeeds only
    /// while the store takes writes. A disk that is full, a database that
    /// is read-only or a lock held past the busy timeout make it fail where
    /// `ping` still succeeds.
    async fn probe_write(&self, now: DateTime<Utc>) -> StoreResult<()>;
}
