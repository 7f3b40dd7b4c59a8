//! Portal (browser) sessions: [`WebSessionStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult, StoredInstant};
use crate::domain::{TokenHash, UserId};

/// A browser session as stored. The session id (the cookie's secret) is
/// kept only as a hash; `data` is opaque JSON owned by the session layer.
#[derive(Clone)]
pub struct WebSessionRecord {
    pub id_hash: TokenHash,
    /// Set once someone signed in with this session.
    pub user_id: Option<UserId>,
    pub data: String,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    /// The API refresh-token family issued at the same sign-in, so ending
    /// the browser session can end that family too.
    pub refresh_family: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for WebSessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `data` may hold a CSRF token: leave it out.
        f.debug_struct("WebSessionRecord")
            .field("id_hash", &self.id_hash)
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A browser session as both backends store it: a `web_sessions` row
/// (SQLite, `T = i64`) or a document of the `sessions` collection (MongoDB,
/// `T = bson::DateTime`), keyed by the hash of the session id. No `Debug`:
/// `data` may hold a CSRF token.
#[derive(sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct StoredWebSession<T> {
    #[serde(rename = "_id")]
    pub(crate) id_hash: String,
    #[serde(default)]
    pub(crate) user_id: Option<String>,
    pub(crate) data: String,
    #[serde(default)]
    pub(crate) user_agent: Option<String>,
    #[serde(default)]
    pub(crate) ip_address: Option<String>,
    #[serde(default)]
    pub(crate) refresh_family: Option<String>,
    pub(crate) created_at: T,
    pub(crate) last_used_at: T,
    pub(crate) expires_at: T,
}

impl<T: StoredInstant> StoredWebSession<T> {
    pub(crate) fn new(s: &WebSessionRecord) -> Self {
        Self {
            id_hash: s.id_hash.as_str().to_owned(),
            user_id: s.user_id.as_ref().map(|u| u.as_str().to_owned()),
            data: s.data.clone(),
            user_agent: s.user_agent.clone(),
            ip_address: s.ip_address.clone(),
            refresh_family: s.refresh_family.clone(),
            created_at: T::from_utc(s.created_at),
            last_used_at: T::from_utc(s.last_used_at),
            expires_at: T::from_utc(s.expires_at),
        }
    }
}

impl<T: StoredInstant> TryFrom<StoredWebSession<T>> for WebSessionRecord {
    type Error = StoreError;

    fn try_from(stored: StoredWebSession<T>) -> StoreResult<Self> {
        Ok(WebSessionRecord {
            id_hash: TokenHash::from_stored(stored.id_hash),
            user_id: stored.user_id.map(UserId::new),
            data: stored.data,
            user_agent: stored.user_agent,
            ip_address: stored.ip_address,
            refresh_family: stored.refresh_family,
            created_at: stored.created_at.to_utc()?,
            last_used_at: stored.last_used_at.to_utc()?,
            expires_at: stored.expires_at.to_utc()?,
        })
    }
}

#[async_trait]
pub trait WebSessionStore: Send + Sync {
    /// Stores a new session. `Err(Conflict)` when the id is taken.
    async fn insert_web_session(&self, session: &WebSessionRecord) -> StoreResult<()>;

    /// Updates a session that is stored and unexpired at `now` (keeping its
    /// `created_at`); never creates one. Returns false when there was none:
    /// a session that was deleted or ran out stays ended, however late a
    /// request that loaded it before saves it.
    async fn update_web_session(
        &self,
        session: &WebSessionRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// `Ok(None)` when unknown or expired at `now`.
    async fn load_web_session(
        &self,
        id_hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebSessionRecord>>;

    /// Returns true when a session was deleted.
    async fn delete_web_session(&self, id_hash: &TokenHash) -> StoreResult<bool>;

    /// The user's sessions still alive at `now`, newest use first.
    async fn list_user_web_sessions(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<WebSessionRecord>>;

    /// Deletes every session of the user except `keep`; returns how many.
    async fn delete_user_web_sessions(
        &self,
        user_id: &UserId,
        keep: Option<&TokenHash>,
    ) -> StoreResult<u64>;

    /// Deletes the user's sessions whose sign-in issued the refresh family
    /// `family_id` (signing out through the API ends the portal session of
    /// the same sign-in); returns how many.
    async fn delete_family_web_sessions(
        &self,
        user_id: &UserId,
        family_id: &str,
    ) -> StoreResult<u64>;
}
