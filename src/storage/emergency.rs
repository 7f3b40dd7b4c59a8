//! Emergency access (issue 19): [`EmergencyStore`] keeps every use, from
//! its start to an administrator's review. Whether a user may start one
//! is on the user ([`UserStore::set_emergency_access`]).
//!
//! [`UserStore::set_emergency_access`]: super::UserStore::set_emergency_access

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult, StoredInstant};
use crate::domain::{EmergencyEnd, EmergencyReason, EmergencyReview, EmergencyUse, UserId};

/// The most uses one listing returns.
pub const EMERGENCY_PAGE_MAX: u32 = 500;

/// Which uses a listing wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmergencyFilter {
    /// Every use, newest first.
    All,
    /// The review queue, oldest first: what has waited longest comes first.
    Unreviewed,
    /// Reviewed uses, newest first.
    Reviewed,
}

/// A use as both backends store it: an `emergency_uses` row (`T = i64`)
/// or document (`T = bson::DateTime`). A document leaves out what has not
/// happened yet (ended, reviewed) rather than storing null, so the queries
/// say `$exists`, which every server evaluates the same way in `find` and
/// in the aggregation behind a count.
#[derive(sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct StoredEmergencyUse<T> {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) reason: String,
    pub(crate) started_at: T,
    pub(crate) expires_at: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ended_at: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ended_how: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reviewed_at: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reviewed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) review_note: Option<String>,
    /// MongoDB only: the user's id while the use is open, absent once it
    /// ended. A unique index on it (sparse) allows one open use per user,
    /// what SQLite's partial unique index does.
    #[sqlx(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) open_user_id: Option<String>,
}

impl<T: StoredInstant> StoredEmergencyUse<T> {
    pub(crate) fn new(used: &EmergencyUse) -> Self {
        Self {
            id: used.id.clone(),
            user_id: used.user_id.as_str().to_owned(),
            reason: used.reason.as_str().to_owned(),
            started_at: T::from_utc(used.started_at),
            expires_at: T::from_utc(used.expires_at),
            ended_at: used.ended_at.map(T::from_utc),
            ended_how: used.ended_how.map(|how| how.as_str().to_owned()),
            reviewed_at: used.review.as_ref().map(|r| T::from_utc(r.at)),
            reviewed_by: used.review.as_ref().map(|r| r.by.as_str().to_owned()),
            review_note: used.review.as_ref().map(|r| r.note.clone()),
            open_user_id: used
                .ended_at
                .is_none()
                .then(|| used.user_id.as_str().to_owned()),
        }
    }
}

impl<T: StoredInstant> TryFrom<StoredEmergencyUse<T>> for EmergencyUse {
    type Error = StoreError;

    fn try_from(stored: StoredEmergencyUse<T>) -> StoreResult<Self> {
        let damaged =
            |what: &str| StoreError::Other(anyhow::anyhow!("emergency use {}: {what}", stored.id));
        let ended_how = stored
            .ended_how
            .as_deref()
            .map(|how| EmergencyEnd::parse(how).ok_or_else(|| damaged("unknown end")))
            .transpose()?;
        let review = match (stored.reviewed_at, stored.reviewed_by, stored.review_note) {
            (Some(at), Some(by), Some(note)) => Some(EmergencyReview {
                by: UserId::new(by),
                at: at.to_utc()?,
                note,
            }),
            (None, None, None) => None,
            _ => return Err(damaged("partial review")),
        };
        Ok(EmergencyUse {
            // Stored only after the domain checked it; read as written.
            reason: EmergencyReason::from_stored(stored.reason),
            user_id: UserId::new(stored.user_id),
            started_at: stored.started_at.to_utc()?,
            expires_at: stored.expires_at.to_utc()?,
            ended_at: stored.ended_at.map(T::to_utc).transpose()?,
            ended_how,
            review,
            id: stored.id,
        })
    }
}

#[async_trait]
pub trait EmergencyStore: Send + Sync {
    /// Stores a new (open, unreviewed) use unless its user already has an
    /// open one, even an expired one not yet closed: then returns false and
    /// stores nothing. Of concurrent starts for one user at most one
    /// succeeds.
    async fn start_emergency_use(&self, started: &EmergencyUse) -> StoreResult<bool>;

    /// The user's open use (not ended; its window may have passed).
    async fn open_emergency_use(&self, user: &UserId) -> StoreResult<Option<EmergencyUse>>;

    /// Ends an open use at `at`. False when it had already ended (or is
    /// unknown): of concurrent enders exactly one gets true.
    async fn end_emergency_use(
        &self,
        id: &str,
        at: DateTime<Utc>,
        how: EmergencyEnd,
    ) -> StoreResult<bool>;

    /// Open uses whose window ended at or before `now`, oldest first, at
    /// most `limit`: what the sweep closes.
    async fn expired_open_emergency_uses(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<EmergencyUse>>;

    /// `Ok(None)` for an unknown id.
    async fn find_emergency_use(&self, id: &str) -> StoreResult<Option<EmergencyUse>>;

    /// Uses in the order [`EmergencyFilter`] says, at most `limit`.
    async fn list_emergency_uses(
        &self,
        filter: EmergencyFilter,
        limit: u32,
    ) -> StoreResult<Vec<EmergencyUse>>;

    /// Records the review of a use not reviewed yet. False when it already
    /// was (or is unknown): of concurrent reviewers exactly one gets true.
    async fn review_emergency_use(&self, id: &str, review: &EmergencyReview) -> StoreResult<bool>;

    /// How many uses started before `started_before` still wait for a
    /// review.
    async fn count_unreviewed_emergency_uses(
        &self,
        started_before: DateTime<Utc>,
    ) -> StoreResult<u64>;
}
