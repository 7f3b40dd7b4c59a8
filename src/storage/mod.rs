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

pub mod email_queue;
pub mod mongo;
mod rate_limits;
pub mod sqlite;

pub use email_queue::{EmailQueueStore, NewQueuedEmail, QueueStats, QueuedEmail, QueuedLink};
pub use rate_limits::RateLimitStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    AuditEvent, AuditKey, AuditRecord, EmailAddress, NewAuditEvent, PasswordHash, PersonName, Role,
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
    /// The first email-verification link (a registration's), stored with
    /// the user.
    pub verification_link: Option<NewLink>,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a user, and its `verification_link` when there is one.
    /// `Err(Conflict)` when the email is already registered, and then
    /// nothing is stored. A store with transactions writes both at once; one
    /// without (MongoDB without a replica set) writes the user first, so a
    /// failure between the two leaves the user without the link (they can
    /// ask for a new one).
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

    /// Cuts off every access token (and portal session) issued so far: in
    /// one atomic write, records `at` as `tokens_valid_after` and raises
    /// `token_version` by one. Returns the new version, `None` when the user
    /// no longer exists.
    async fn cut_access_tokens(&self, id: &UserId, at: DateTime<Utc>) -> StoreResult<Option<u64>>;

    /// Marks the user's email address as verified and bumps `updated_at`.
    /// Returns false when the user no longer exists.
    async fn set_verified(&self, id: &UserId, now: DateTime<Utc>) -> StoreResult<bool>;

    /// Sets the role and, in the same write, cuts off the user's access
    /// tokens as [`UserStore::cut_access_tokens`] does (`tokens_valid_after
    /// = cut`, `token_version` + 1), so no access token or portal session
    /// from before the change outlives it. Returns false when the user no
    /// longer exists.
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
    /// A replay within the grace period already got a sibling for it: a
    /// retired token gets at most one.
    pub sibling_issued: bool,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A rotation that stored the replacement.
#[derive(Debug)]
pub struct Rotated {
    /// The presented token, as it was retired.
    pub retired: RefreshTokenRecord,
    /// Its owner as stored now (`None` when the account is gone), read in
    /// the same round trip so the caller can issue the access token.
    pub owner: Option<User>,
}

/// What presenting a refresh token for rotation did.
#[derive(Debug)]
pub enum Rotation {
    /// The token was active: it is retired and the replacement stored.
    Rotated(Rotated),
    /// The token had been rotated away less than the grace period ago (two
    /// tabs refreshing at once), had no sibling yet, and its family is still
    /// alive: the replacement is stored as a sibling of the token that
    /// replaced it, and the retired token is marked as having one.
    GraceSibling(Rotated),
    /// The token had been rotated away longer ago than the grace period, or
    /// already got its one sibling: someone replayed it. Every active token
    /// of its family is revoked and nothing is stored. Carries the replayed
    /// record and how many tokens the family lost.
    ReuseDetected {
        token: RefreshTokenRecord,
        revoked: u64,
    },
    /// Unknown, expired, or revoked other than by rotation: nothing changed.
    Rejected,
}

/// What a backend does with a presented token that was not active.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Unknown state, expired, or revoked other than by rotation.
    Reject,
    /// Rotated away within the grace period and no sibling yet: one
    /// sibling, if the family lives. The backend marks the retired token as
    /// it stores the sibling, so of concurrent replays only one gets it and
    /// the others revoke the family.
    SiblingIfFamilyAlive,
    /// Rotated away before the grace period, or its sibling already issued:
    /// revoke the family.
    RevokeFamily,
}

impl RefreshTokenRecord {
    /// The one rule both backends apply to a replayed token (see
    /// [`Rotation`]); they differ only in how they act on it.
    pub fn replay_verdict(&self, now: DateTime<Utc>, grace: chrono::Duration) -> ReplayVerdict {
        let (Some(_), Some(rotated_at)) = (&self.replaced_by, self.revoked_at) else {
            return ReplayVerdict::Reject;
        };
        if self.expires_at <= now {
            ReplayVerdict::Reject
        } else if grace > chrono::Duration::zero()
            && now - rotated_at <= grace
            && !self.sibling_issued
        {
            ReplayVerdict::SiblingIfFamilyAlive
        } else {
            ReplayVerdict::RevokeFamily
        }
    }
}

#[async_trait]
pub trait RefreshTokenStore: Send + Sync {
    /// Stores a token issued at login. `Err(Conflict)` when that token (its
    /// hash) is already stored.
    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> StoreResult<()>;

    /// Rotates the token with `old_hash` (see [`Rotation`] for the cases).
    ///
    /// An active token (not revoked, not expired at `now`) is retired with
    /// `replacement.jti` as its successor and `replacement` is stored; of
    /// several concurrent calls with the same hash at most one gets
    /// `Rotated`. A token rotated away at most `grace` ago whose family still
    /// has an active token gets `replacement` as a sibling, once: of several
    /// such replays (concurrent or not) exactly one gets it and the others
    /// revoke the family. A zero `grace` never gives one, so every replay
    /// revokes the family.
    async fn rotate_refresh_token(
        &self,
        old_hash: &TokenHash,
        now: DateTime<Utc>,
        grace: chrono::Duration,
        replacement: &NewRefreshToken,
    ) -> StoreResult<Rotation>;

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

    /// Whether the family (one sign-in) of this user still has an active
    /// token at `now`: the access tokens it issued die with it.
    async fn refresh_family_alive(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Revokes every active token of one family of this user; returns how
    /// many (0 when the family is unknown or belongs to someone else).
    async fn revoke_refresh_family(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
}

/// What a single-use emailed token is for. Each purpose has its own table
/// (collection), so a reset link can never verify an email or vice versa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// `reset_tokens`: the original service's password-reset links.
    PasswordReset,
    /// `verification_tokens`: links that confirm an email address.
    EmailVerification,
}

/// A single-use token to be stored (hash only).
#[derive(Debug, Clone)]
pub struct NewOneTimeToken {
    pub user_id: UserId,
    pub token_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A single-use token for a user who does not exist yet (see
/// [`NewUser::verification_link`]).
#[derive(Debug, Clone)]
pub struct NewLink {
    pub token_hash: TokenHash,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl NewLink {
    pub fn for_user(&self, user_id: &UserId) -> NewOneTimeToken {
        NewOneTimeToken {
            user_id: user_id.clone(),
            token_hash: self.token_hash.clone(),
            expires_at: self.expires_at,
            created_at: self.created_at,
        }
    }
}

#[async_trait]
pub trait OneTimeTokenStore: Send + Sync {
    /// Stores a token, replacing any earlier one of the same user and
    /// purpose so only the newest emailed link works.
    async fn replace_one_time_token(
        &self,
        purpose: TokenPurpose,
        token: &NewOneTimeToken,
    ) -> StoreResult<()>;

    /// The user a still-valid (unexpired at `now`) token belongs to, without
    /// consuming it: lets a page or a form check the link before the person
    /// types a new password.
    async fn find_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserId>>;

    /// Atomically consumes the token with that hash if it has not expired at
    /// `now`, returning its user. Single use: of concurrent callers at most
    /// one gets `Some`. An expired token is consumed too, and yields `None`.
    async fn consume_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserId>>;

    /// Deletes every outstanding token of a user for that purpose.
    async fn delete_user_one_time_tokens(
        &self,
        purpose: TokenPurpose,
        user_id: &UserId,
    ) -> StoreResult<()>;
}

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

/// Where an appended event landed in the chain. The log copy of each event
/// carries it, so a log system off the host holds a second copy of the
/// chain's links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub seq: u64,
    pub hash: String,
}

/// The append-only, hash-chained audit trail (`audit_events`).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `events` in order: each gets the next `seq` (1 for the first
    /// record ever) and `prev_hash` = the hash of the record before it, and
    /// is stored as a v2 record keyed with `key` ([`AuditRecord::chain`]).
    /// The key is passed in rather than held by the store so that the one
    /// secret of the chain stays with the recorder and never sits in the
    /// storage layer's state. Concurrent appenders, in this process or in
    /// other instances on the same database, still form one linear chain.
    ///
    /// Returns each event's [`ChainLink`], in the order given.
    ///
    /// Idempotent per event id: after an error, calling again with the same
    /// events appends only those not yet stored (a backend without
    /// transactions may have stored a prefix), and returns the links of all
    /// of them, those stored by the earlier attempt included.
    async fn append_audit_events(
        &self,
        events: &[NewAuditEvent],
        key: &AuditKey,
    ) -> StoreResult<Vec<ChainLink>>;

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
    UserStore
    + RefreshTokenStore
    + OneTimeTokenStore
    + LoginThrottleStore
    + WebSessionStore
    + AuditStore
    + EmailQueueStore
    + RateLimitStore
{
    /// Cheap round trip to prove the database answers (for /health).
    async fn ping(&self) -> StoreResult<()>;

    /// One small real write, an upsert of the single row (document) of
    /// `health_probe`, for the write probe behind /health: succeeds only
    /// while the store takes writes. A disk that is full, a database that
    /// is read-only or a lock held past the busy timeout make it fail where
    /// `ping` still succeeds.
    async fn probe_write(&self, now: DateTime<Utc>) -> StoreResult<()>;

    /// Deletes tokens that expired before `now`, and login throttles idle
    /// since `throttle_idle_before` (not locked and no failure since then);
    /// returns how many. Backends with their own expiry (MongoDB TTL
    /// indexes) may do less, but expired tokens must never be accepted
    /// either way.
    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        throttle_idle_before: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// A short name for logs and /health ("sqlite", "mongodb").
    fn backend(&self) -> &'static str;

    /// True when every write goes through one connection (SQLite): a
    /// background writer then runs on a thread of its own, so the writer is
    /// not held while its next step waits behind the request handlers.
    fn serialized_writes(&self) -> bool {
        false
    }
}
