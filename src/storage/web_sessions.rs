//! Portal (browser) sessions: [`WebSessionStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
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
