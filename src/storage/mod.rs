//! Storage traits: what the services need from a database, and nothing more.
//!
//! Each aggregate has its own trait; [`Store`] bundles them so the app can
//! hand one `Arc<dyn Store>` to the services. Backends (SQLite, MongoDB) live
//! beside this file and only `app.rs` picks one. Every backend must pass the
//! same conformance suite in `tests/storage.rs`.
//!
//! Rules every implementation follows:
//! - Times are UTC; expiry is always checked here in code, never left to a
//!   TTL monitor (MongoDB's runs about once a minute).
//! - Consuming a token is atomic: of two concurrent callers at most one wins.
//! - A lookup by an id the backend cannot even parse returns `Ok(None)`.

pub mod mongo;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    AuditEvent, AuditRecord, EmailAddress, NewAuditEvent, PasswordHash, PersonName, Role,
    TokenHash, User, UserId,
};

/// Why a store call failed, in the terms the services branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (duplicate email, jti, hash).
    #[error("unique constraint violated")]
    Conflict,
    /// The database cannot be reached right now; callers answer 503 and the
    /// backend is expected to recover by itself once it is back.
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a bug or corrupted data. Answered with a 500.
    #[error("storage error")]
    Other(#[source] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A user to be created; the store assigns the id.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: EmailAddress,
    pub name: PersonName,
    pub password_hash: PasswordHash,
    pub role: Role,
    pub verified: bool,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a user. `Err(Conflict)` when the email is already registered.
    async fn create_user(&self, user: &NewUser) -> StoreResult<User>;

    /// `Ok(None)` when no user has that (already normalised) email.
    async fn find_user_by_email(&self, email: &EmailAddress) -> StoreResult<Option<User>>;

    /// `Ok(None)` when the id is unknown or not even well-formed.
    async fn find_user_by_id(&self, id: &UserId) -> StoreResult<Option<User>>;

    /// Replaces the password hash and bumps `updated_at`. Returns false when
    /// the user no longer exists.
    async fn set_password_hash(
        &self,
        id: &UserId,
        hash: &PasswordHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Sets the instant before which the user's access tokens are refused.
    /// Returns false when the user no longer exists.
    async fn set_tokens_valid_after(&self, id: &UserId, at: DateTime<Utc>) -> StoreResult<bool>;

    /// Sets the role and, in the same write, `tokens_valid_after = cut`, so
    /// no access token carrying the old role outlives the change. Returns
    /// false when the user no longer exists.
    async fn set_user_role(
        &self,
        id: &UserId,
        role: Role,
        cut: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
}

/// A refresh token to be stored (its hash only, never the token itself).
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub user_id: UserId,
    pub jti: String,
    pub token_hash: TokenHash,
    /// All tokens descended from one login share a family.
    pub family_id: String,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A stored refresh token.
#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    pub user_id: UserId,
    pub jti: String,
    pub token_hash: TokenHash,
    pub family_id: String,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub revoked: bool,
    /// The jti of the token that replaced this one at rotation, if any.
    pub replaced_by: Option<String>,
    /// When it was revoked or rotated away.
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait RefreshTokenStore: Send + Sync {
    /// Stores a token issued at login. `Err(Conflict)` on a duplicate jti.
    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> StoreResult<()>;

    /// Atomically retires the active token with `old_hash` (not revoked and
    /// not expired at `now`), records `replacement.jti` as its successor and
    /// stores `replacement`. Returns the retired record, or `Ok(None)` (and
    /// stores nothing) when no active token has that hash. Of several
    /// concurrent calls with the same hash at most one gets `Some`.
    async fn rotate_refresh_token(
        &self,
        old_hash: &TokenHash,
        now: DateTime<Utc>,
        replacement: &NewRefreshToken,
    ) -> StoreResult<Option<RefreshTokenRecord>>;

    /// The record with that hash, whatever its state.
    async fn find_refresh_token(&self, hash: &TokenHash)
        -> StoreResult<Option<RefreshTokenRecord>>;

    /// Revokes one token. Returns true when it was active until now.
    async fn revoke_refresh_token(&self, hash: &TokenHash, now: DateTime<Utc>)
        -> StoreResult<bool>;

    /// Revokes every active token of a user, except those of the family
    /// `keep_family`; returns how many.
    async fn revoke_user_refresh_tokens(
        &self,
        user_id: &UserId,
        keep_family: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// The user's active tokens (not revoked, not expired at `now`), newest
    /// first: one per live family.
    async fn list_user_refresh_tokens(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<RefreshTokenRecord>>;

    /// Revokes every active token of one family of this user; returns how
    /// many (0 when the family is unknown or belongs to someone else).
    async fn revoke_refresh_family(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
}

/// A password-reset token to be stored (hash only).
#[derive(Debug, Clone)]
pub struct NewResetToken {
    pub user_id: UserId,
    pub token_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait ResetTokenStore: Send + Sync {
    /// Stores a reset token, replacing any earlier one of the same user so
    /// only the newest emailed link works.
    async fn replace_reset_token(&self, token: &NewResetToken) -> StoreResult<()>;

    /// The user a still-valid (unexpired at `now`) reset token belongs to,
    /// without consuming it: lets a page or a form check the link before the
    /// person types a new password.
    async fn find_reset_token(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserId>>;

    /// Atomically consumes the token with that hash if it has not expired at
    /// `now`, returning its user. Single use: of concurrent callers at most
    /// one gets `Some`. An expired token is consumed too, and yields `None`.
    async fn consume_reset_token(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserId>>;

    /// Deletes every outstanding reset token of a user.
    async fn delete_user_reset_tokens(&self, user_id: &UserId) -> StoreResult<()>;
}

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

    /// Inserts or updates a session; an update keeps the original
    /// `created_at`.
    async fn save_web_session(&self, session: &WebSessionRecord) -> StoreResult<()>;

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
}

/// Largest page [`AuditStore::query_audit_events`] is asked for.
pub const AUDIT_PAGE_MAX: u32 = 200;

/// Which audit records to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub user_id: Option<String>,
    pub event: Option<AuditEvent>,
    /// Inclusive lower bound on `time`.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `time`.
    pub until: Option<DateTime<Utc>>,
    /// The cursor: only records with a smaller `seq` (the last `seq` of the
    /// previous page). A cursor on `seq` rather than an offset keeps pages
    /// stable while new records arrive at the head.
    pub before_seq: Option<u64>,
    /// 1..=[`AUDIT_PAGE_MAX`]; the caller validates it.
    pub limit: u32,
}

/// The append-only, hash-chained audit trail (`audit_events`).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `events` in order: each gets the next `seq` (1 for the first
    /// record ever) and `prev_hash` = the hash of the record before it.
    /// Concurrent appenders, in this process or in other instances on the
    /// same database, still form one linear chain.
    ///
    /// Idempotent per event id: after an error, calling again with the same
    /// events appends only those not yet stored (a backend without
    /// transactions may have stored a prefix).
    async fn append_audit_events(&self, events: &[NewAuditEvent]) -> StoreResult<()>;

    /// Records matching `query`, highest `seq` first, at most `query.limit`.
    async fn query_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>>;

    /// Up to `limit` records with `seq > after`, lowest first: the whole
    /// chain, page by page, for verification. Returns what is stored, even
    /// when it is damaged (duplicate or missing seqs).
    async fn audit_events_after(&self, after: u64, limit: u32) -> StoreResult<Vec<AuditRecord>>;
}

/// Everything the services need, behind one object.
#[async_trait]
pub trait Store:
    UserStore + RefreshTokenStore + ResetTokenStore + WebSessionStore + AuditStore
{
    /// Cheap round trip to prove the database answers (for /health).
    async fn ping(&self) -> StoreResult<()>;

    /// Deletes tokens that expired before `now`; returns how many. Backends
    /// with their own expiry (MongoDB TTL indexes) may do less, but expired
    /// tokens must never be accepted either way.
    async fn purge_expired(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// A short name for logs and /health ("sqlite", "mongodb").
    fn backend(&self) -> &'static str;
}
