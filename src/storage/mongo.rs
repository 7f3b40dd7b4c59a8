//! The MongoDB store, compatible with the original Python service's database.
//!
//! Collections and field names are exactly the ones the Python service wrote
//! (`users`, `refresh_tokens`, `reset_tokens`), so an existing deployment is
//! opened as it is; the only additions are our rotation fields on refresh
//! tokens (`family_id`, `replaced_by`, `revoked_at`), which older documents
//! simply lack.
//!
//! Design points, each forced by how MongoDB is deployed:
//! - No multi-document transactions: a standalone `mongod` has none. Every
//!   "consume" is a single `find_one_and_update` / `find_one_and_delete`,
//!   which the server applies atomically to one document.
//! - Expiry is checked in every filter (`expires_at > now`); the TTL indexes
//!   only keep the collections small, their monitor runs about once a minute.
//! - `audit_events` is one linear hash chain even with several instances:
//!   an append reads the head (highest `seq`) and inserts `seq + 1`; the
//!   unique index on `seq` refuses the loser of a race, which re-reads the
//!   head and tries again.
//! - The process must start while MongoDB is down. The driver connects lazily,
//!   and index creation runs in a background task that retries until the
//!   server answers (see `IndexState`).

use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bson::oid::ObjectId;
use bson::{doc, Document};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::ChainLink;
use super::{
    AuditQuery, AuditStore, LoginThrottle, LoginThrottleStore, NewOneTimeToken, NewRefreshToken,
    NewUser, OneTimeTokenStore, RefreshTokenRecord, RefreshTokenStore, ReplayVerdict, Rotated,
    Rotation, Store, StoreError, StoreResult, TokenPurpose, UserStore, WebSessionRecord,
    WebSessionStore,
};
use crate::domain::audit::GENESIS_HASH;
use crate::domain::{
    AuditEvent, AuditOutcome, AuditRecord, EmailAddress, NewAuditEvent, PasswordHash, PersonName,
    Role, TokenHash, User, UserId,
};
use crate::domain::{AuditKey, HashVersion};

mod email_queue;
mod rate_limits;

/// Used when the URI names no database, as the Python service did.
const DEFAULT_DATABASE: &str = "clinic_auth";

/// How long an operation waits for a usable server before failing. The
/// driver's default of 30 s would hold every request (and /health) for half a
/// minute during an outage; a few seconds lets callers answer 503 promptly.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Retry pacing for index creation while the server is unreachable.
const INDEX_RETRY_FIRST: Duration = Duration::from_secs(1);
const INDEX_RETRY_MAX: Duration = Duration::from_secs(30);

/// Duplicate key: a unique index refused the write.
const DUPLICATE_KEY: i32 = 11000;
/// An index with these keys already exists under another name or options.
const INDEX_OPTIONS_CONFLICT: i32 = 85;
/// An index with this name already exists with other keys.
const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
/// Server codes that mean "this server cannot serve you right now" (network
/// trouble, shutdown, primary stepping down, a full disk, a lock or write
/// concern that timed out): the caller should answer 503 and try again
/// later rather than report a bug.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    24,    // LockTimeout
    46,    // LockBusy
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    10058, // LegacyNotPrimary
    14031, // OutOfDiskSpace
];

/// A store over one MongoDB database. Make one per process and share it (the
/// app holds it as `Arc<dyn Store>`): the driver's `Client` inside is the
/// connection pool.
pub struct MongoStore {
    db: Database,
    users: Collection<UserDoc>,
    refresh_tokens: Collection<RefreshDoc>,
    reset_tokens: Collection<OneTimeDoc>,
    verification_tokens: Collection<OneTimeDoc>,
    login_throttles: Collection<ThrottleDoc>,
    sessions: Collection<SessionDoc>,
    audit_events: Collection<AuditDoc>,
    indexes: Arc<IndexState>,
}

impl MongoStore {
    /// Builds the client for `uri` (`mongodb://host:27017/clinic_auth`) and
    /// starts creating the indexes in the background.
    ///
    /// Succeeds while the server is unreachable: the driver only connects when
    /// an operation needs it. It fails only for an invalid URI or when a
    /// `mongodb+srv://` name cannot be resolved (the SRV lookup happens here).
    pub async fn connect(uri: &str) -> anyhow::Result<MongoStore> {
        // The URI is deliberately kept out of the error: it may carry a
        // password.
        let mut options = ClientOptions::parse(uri)
            .await
            .context("MongoDB URI is not a valid connection string")?;
        // Explicit settings in the URI win over our defaults.
        options
            .server_selection_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        options
            .app_name
            .get_or_insert_with(|| "clinic-auth".to_owned());
        let client = Client::with_options(options).context("cannot build the MongoDB client")?;
        let db = client
            .default_database()
            .unwrap_or_else(|| client.database(DEFAULT_DATABASE));

        let indexes = Arc::new(IndexState {
            db: db.clone(),
            done: OnceCell::new(),
        });
        tokio::spawn(create_indexes_until_done(Arc::downgrade(&indexes)));

        Ok(MongoStore {
            users: db.collection("users"),
            refresh_tokens: db.collection("refresh_tokens"),
            reset_tokens: db.collection("reset_tokens"),
            verification_tokens: db.collection("verification_tokens"),
            login_throttles: db.collection("login_throttles"),
            sessions: db.collection("sessions"),
            audit_events: db.collection("audit_events"),
            db,
            indexes,
        })
    }

    fn one_time(&self, purpose: TokenPurpose) -> &Collection<OneTimeDoc> {
        match purpose {
            TokenPurpose::PasswordReset => &self.reset_tokens,
            TokenPurpose::EmailVerification => &self.verification_tokens,
        }
    }

    /// Applies `$set: set` to one user; false when no user has that id.
    async fn update_user(&self, id: &UserId, set: Document) -> StoreResult<bool> {
        let Some(oid) = parse_user_id(id) else {
            return Ok(false);
        };
        let done = self
            .users
            .update_one(doc! { "_id": oid }, doc! { "$set": set })
            .await
            .map_err(map_err)?;
        // matched, not modified: setting the same value again still means
        // the user exists.
        Ok(done.matched_count == 1)
    }

    /// The name of the database in use (from the URI, or `clinic_auth`).
    pub fn database_name(&self) -> &str {
        self.db.name()
    }

    /// Creates the indexes now unless this store already has; after the first
    /// success it returns immediately. Safe to call concurrently with the
    /// background task (only one attempt runs at a time). For tests and
    /// tooling that want the indexes before going on.
    pub async fn ensure_indexes(&self) -> StoreResult<()> {
        self.indexes.ensure().await
    }
}

/// Index creation, done once per store.
///
/// Why a background task *and* a check before unique-keyed writes: the task
/// makes a fresh database get its indexes within seconds of MongoDB becoming
/// reachable, without waiting for traffic; the check (an atomic load once
/// done) guarantees that no user is ever created before the unique email
/// index exists. Without it, a double registration landing between MongoDB
/// coming up and the task's next attempt could store a duplicate email, and
/// the unique index could then never be built.
struct IndexState {
    db: Database,
    done: OnceCell<()>,
}

impl IndexState {
    async fn ensure(&self) -> StoreResult<()> {
        self.done
            .get_or_try_init(|| create_indexes(&self.db))
            .await
            .map(|_| ())
    }
}

/// Retries index creation until it succeeds or the store is dropped (the
/// task holds only a weak reference, so a dropped store does not keep a
/// retry loop alive against a server that never comes back).
async fn create_indexes_until_done(state: Weak<IndexState>) {
    let mut delay = INDEX_RETRY_FIRST;
    loop {
        let Some(indexes) = state.upgrade() else {
            return;
        };
        match indexes.ensure().await {
            Ok(()) => {
                tracing::info!(database = indexes.db.name(), "MongoDB indexes are in place");
                return;
            }
            Err(StoreError::Unavailable(err)) => {
                tracing::warn!(
                    error = %format_args!("{err:#}"),
                    retry_in_secs = delay.as_secs(),
                    "MongoDB unreachable; index creation will be retried"
                );
            }
            Err(err) => {
                // Not something waiting fixes by itself (e.g. duplicate emails
                // already stored), but retrying is harmless and picks up an
                // operator's fix without a restart.
                tracing::error!(
                    error = %format_args!("{:#}", anyhow::Error::from(err)),
                    retry_in_secs = delay.as_secs(),
                    "cannot create MongoDB indexes"
                );
            }
        }
        drop(indexes);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(INDEX_RETRY_MAX);
    }
}

/// The indexes the Python service documented, plus ours on `family_id`.
fn index_plan() -> Vec<(&'static str, IndexModel)> {
    let plain = |key: &str| IndexModel::builder().keys(doc! { key: 1 }).build();
    let unique = |key: &str| {
        IndexModel::builder()
            .keys(doc! { key: 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build()
    };
    let by_seq = |key: &str| {
        IndexModel::builder()
            .keys(doc! { key: 1, "seq": -1 })
            .build()
    };
    let ttl = || {
        IndexModel::builder()
            .keys(doc! { "expires_at": 1 })
            .options(IndexOptions::builder().expire_after(Duration::ZERO).build())
            .build()
    };
    vec![
        ("users", unique("email")),
        ("refresh_tokens", unique("jti")),
        ("refresh_tokens", unique("token_hash")),
        ("refresh_tokens", plain("user_id")),
        ("refresh_tokens", plain("family_id")),
        ("refresh_tokens", ttl()),
        ("reset_tokens", unique("token_hash")),
        ("reset_tokens", plain("user_id")),
        ("reset_tokens", ttl()),
        ("verification_tokens", unique("token_hash")),
        ("verification_tokens", plain("user_id")),
        ("verification_tokens", ttl()),
        ("sessions", plain("user_id")),
        ("sessions", ttl()),
        // The chain's order; unique so two instances can never both append
        // the same seq (the loser retries on the new head).
        ("audit_events", unique("seq")),
        // The admin queries filter on user or event and page by seq; keyed
        // on seq rather than time because the cursor and sort are on seq.
        ("audit_events", by_seq("user_id")),
        ("audit_events", by_seq("event")),
        ("audit_events", plain("time")),
        // The outbox's senders claim by due time (also the lease's end).
        (email_queue::COLLECTION, plain("due_at")),
        (rate_limits::COLLECTION, ttl()),
    ]
}

async fn create_indexes(db: &Database) -> StoreResult<()> {
    // One createIndexes per index rather than one per collection: the server
    // fails a multi-index command as a whole, and an existing deployment may
    // hold an equivalent index under another name, which we keep.
    for (collection, model) in index_plan() {
        let keys = model.keys.clone();
        match db
            .collection::<Document>(collection)
            .create_index(model)
            .await
        {
            Ok(_) => {}
            Err(err) if is_index_conflict(&err) => {
                tracing::warn!(
                    collection,
                    keys = %keys,
                    "an index on these keys already exists with other options; keeping it"
                );
            }
            // Not map_err: a duplicate key here means duplicate data already
            // stored, which is no write conflict of the caller's.
            Err(err) if is_transient(&err) => return Err(StoreError::Unavailable(err.into())),
            Err(err) => {
                return Err(StoreError::Other(
                    anyhow::Error::from(err)
                        .context(format!("cannot create index {keys} on {collection}")),
                ))
            }
        }
    }
    Ok(())
}

fn is_index_conflict(err: &mongodb::error::Error) -> bool {
    matches!(
        err.kind.as_ref(),
        ErrorKind::Command(c) if c.code == INDEX_OPTIONS_CONFLICT || c.code == INDEX_KEY_SPECS_CONFLICT
    )
}

/// Sorts a driver error into what the services branch on.
fn map_err(err: mongodb::error::Error) -> StoreError {
    if is_duplicate_key(&err) {
        return StoreError::Conflict;
    }
    if is_transient(&err) {
        return StoreError::Unavailable(err.into());
    }
    StoreError::Other(err.into())
}

fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .iter()
            .flatten()
            .any(|e| e.code == DUPLICATE_KEY),
        ErrorKind::BulkWrite(e) => e.write_errors.values().any(|e| e.code == DUPLICATE_KEY),
        _ => false,
    }
}

fn is_transient(err: &mongodb::error::Error) -> bool {
    // Network failures and failovers carry this label on writes; checking it
    // covers codes the list below does not know about.
    if err.contains_label("RetryableWriteError") {
        return true;
    }
    let mut current = Some(err);
    while let Some(e) = current {
        let transient = match e.kind.as_ref() {
            ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::DnsResolve { .. } => true,
            ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
            ErrorKind::Write(WriteFailure::WriteConcernError(c)) => {
                TRANSIENT_CODES.contains(&c.code)
            }
            // A write refused by the server for its own state (out of disk
            // space, not primary any more) comes back as a write error.
            ErrorKind::Write(WriteFailure::WriteError(e)) => TRANSIENT_CODES.contains(&e.code),
            ErrorKind::InsertMany(e) => {
                e.write_errors
                    .iter()
                    .flatten()
                    .any(|e| TRANSIENT_CODES.contains(&e.code))
                    || e.write_concern_error
                        .as_ref()
                        .is_some_and(|c| TRANSIENT_CODES.contains(&c.code))
            }
            _ => false,
        };
        if transient {
            return true;
        }
        current = std::error::Error::source(e).and_then(|s| s.downcast_ref());
    }
    false
}

/// A stored user id is an ObjectId; anything else cannot name a user.
fn parse_user_id(id: &UserId) -> Option<ObjectId> {
    ObjectId::parse_str(id.as_str()).ok()
}

fn bson_date(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_chrono(t)
}

/// `users` as the Python service wrote it. No `Debug`: it holds the hash.
#[derive(Serialize, Deserialize)]
struct UserDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    email: String,
    password_hash: String,
    name: String,
    role: String,
    verified: bool,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
    /// Added by this service; absent on the Python service's documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokens_valid_after: Option<bson::DateTime>,
    /// Added by this service; absent (0) on the Python service's documents.
    #[serde(default)]
    token_version: i64,
}

impl TryFrom<UserDoc> for User {
    type Error = StoreError;

    fn try_from(doc: UserDoc) -> StoreResult<Self> {
        let role = Role::parse(&doc.role).ok_or_else(|| {
            StoreError::Other(anyhow::anyhow!("unknown role in users collection"))
        })?;
        Ok(User {
            id: UserId::new(doc.id.to_hex()),
            email: EmailAddress::from_stored(doc.email),
            name: PersonName::from_stored(doc.name),
            role,
            verified: doc.verified,
            password_hash: PasswordHash::new(doc.password_hash),
            created_at: doc.created_at.to_chrono(),
            updated_at: doc.updated_at.to_chrono(),
            tokens_valid_after: doc.tokens_valid_after.map(|t| t.to_chrono()),
            token_version: u64::try_from(doc.token_version).map_err(|_| {
                StoreError::Other(anyhow::anyhow!(
                    "negative token_version in users collection"
                ))
            })?,
        })
    }
}

/// `refresh_tokens`. The rotation fields are optional because documents
/// written by the Python service do not have them.
#[derive(Serialize, Deserialize)]
struct RefreshDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    user_id: String,
    jti: String,
    token_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    family_id: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    ip_address: Option<String>,
    revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replaced_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<bson::DateTime>,
    /// Set on a retired token once its one grace sibling exists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sibling_issued: bool,
    expires_at: bson::DateTime,
    created_at: bson::DateTime,
}

impl RefreshDoc {
    fn new(token: &NewRefreshToken) -> Self {
        Self {
            id: ObjectId::new(),
            user_id: token.user_id.as_str().to_owned(),
            jti: token.jti.clone(),
            token_hash: token.token_hash.as_str().to_owned(),
            family_id: Some(token.family_id.clone()),
            user_agent: token.user_agent.clone(),
            ip_address: token.ip_address.clone(),
            revoked: false,
            replaced_by: None,
            revoked_at: None,
            sibling_issued: false,
            expires_at: bson_date(token.expires_at),
            created_at: bson_date(token.created_at),
        }
    }
}

impl From<RefreshDoc> for RefreshTokenRecord {
    fn from(doc: RefreshDoc) -> Self {
        RefreshTokenRecord {
            user_id: UserId::new(doc.user_id),
            // A token from before rotation existed is the only member of its
            // own family; its jti is unique, so it names that family.
            family_id: doc.family_id.unwrap_or_else(|| doc.jti.clone()),
            jti: doc.jti,
            token_hash: TokenHash::from_stored(doc.token_hash),
            user_agent: doc.user_agent,
            ip_address: doc.ip_address,
            revoked: doc.revoked,
            replaced_by: doc.replaced_by,
            revoked_at: doc.revoked_at.map(bson::DateTime::to_chrono),
            sibling_issued: doc.sibling_issued,
            expires_at: doc.expires_at.to_chrono(),
            created_at: doc.created_at.to_chrono(),
        }
    }
}

/// `reset_tokens` (the original's fields) and `verification_tokens`.
#[derive(Serialize, Deserialize)]
struct OneTimeDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    user_id: String,
    token_hash: String,
    expires_at: bson::DateTime,
    created_at: bson::DateTime,
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create_user(&self, user: &NewUser) -> StoreResult<User> {
        // The unique email index is what turns a double registration into
        // Conflict; never insert before it exists.
        self.indexes.ensure().await?;
        let now = bson_date(user.created_at);
        let doc = UserDoc {
            id: ObjectId::new(),
            email: user.email.as_str().to_owned(),
            password_hash: user.password_hash.expose().to_owned(),
            name: user.name.as_str().to_owned(),
            role: user.role.as_str().to_owned(),
            verified: user.verified,
            created_at: now,
            updated_at: now,
            tokens_valid_after: None,
            token_version: 0,
        };
        self.users.insert_one(&doc).await.map_err(map_err)?;
        let created: User = doc.try_into()?;
        // A second write: multi-document transactions need a replica set,
        // which a single-server install does not have.
        if let Some(link) = &user.verification_link {
            let token = link.for_user(&created.id);
            self.replace_one_time_token(TokenPurpose::EmailVerification, &token)
                .await?;
        }
        Ok(created)
    }

    async fn find_user_by_email(&self, email: &EmailAddress) -> StoreResult<Option<User>> {
        self.users
            .find_one(doc! { "email": email.as_str() })
            .await
            .map_err(map_err)?
            .map(User::try_from)
            .transpose()
    }

    async fn find_user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        let Some(oid) = parse_user_id(id) else {
            return Ok(None);
        };
        self.users
            .find_one(doc! { "_id": oid })
            .await
            .map_err(map_err)?
            .map(User::try_from)
            .transpose()
    }

    async fn set_password_hash(
        &self,
        id: &UserId,
        hash: &PasswordHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.update_user(
            id,
            doc! { "password_hash": hash.expose(), "updated_at": bson_date(now) },
        )
        .await
    }

    async fn cut_access_tokens(&self, id: &UserId, at: DateTime<Utc>) -> StoreResult<Option<u64>> {
        let Some(oid) = parse_user_id(id) else {
            return Ok(None);
        };
        // One atomic update that answers the version it set, so the caller
        // issues its fresh token under exactly this cut-off.
        let updated = self
            .users
            .find_one_and_update(
                doc! { "_id": oid },
                doc! {
                    "$set": { "tokens_valid_after": bson_date(at) },
                    "$inc": { "token_version": 1_i64 },
                },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(map_err)?;
        updated
            .map(User::try_from)
            .transpose()
            .map(|user| user.map(|u| u.token_version))
    }

    async fn set_verified(&self, id: &UserId, now: DateTime<Utc>) -> StoreResult<bool> {
        self.update_user(id, doc! { "verified": true, "updated_at": bson_date(now) })
            .await
    }

    async fn set_user_role(
        &self,
        id: &UserId,
        role: Role,
        cut: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let Some(oid) = parse_user_id(id) else {
            return Ok(false);
        };
        let done = self
            .users
            .update_one(
                doc! { "_id": oid },
                doc! {
                    "$set": {
                        "role": role.as_str(),
                        "tokens_valid_after": bson_date(cut),
                        "updated_at": bson_date(now),
                    },
                    "$inc": { "token_version": 1_i64 },
                },
            )
            .await
            .map_err(map_err)?;
        Ok(done.matched_count == 1)
    }
}

#[async_trait]
impl RefreshTokenStore for MongoStore {
    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> StoreResult<()> {
        self.indexes.ensure().await?;
        self.refresh_tokens
            .insert_one(RefreshDoc::new(token))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &TokenHash,
        now: DateTime<Utc>,
        grace: chrono::Duration,
        replacement: &NewRefreshToken,
    ) -> StoreResult<Rotation> {
        self.indexes.ensure().await?;
        let now_b = bson_date(now);
        // The child goes in before the parent is retired, so from the moment
        // a token counts as rotated its replacement exists: a second tab
        // racing this one (inside the reuse grace) then finds the family
        // alive, where insert-after-retire showed it a family with no live
        // token and refused it. A loser removes its child again. A crash in
        // between leaves an extra child nobody holds, which expires.
        self.insert_refresh_token(replacement).await?;
        // The single-document update is the whole guard against concurrent
        // use: of several callers, only one matches `revoked: false`.
        let retired = self
            .refresh_tokens
            .find_one_and_update(
                doc! {
                    "token_hash": old_hash.as_str(),
                    "revoked": false,
                    "expires_at": { "$gt": now_b },
                },
                doc! { "$set": {
                    "revoked": true,
                    "replaced_by": &replacement.jti,
                    "revoked_at": now_b,
                } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(map_err)?;
        if let Some(retired) = retired {
            let retired = RefreshTokenRecord::from(retired);
            let owner = self.find_user_by_id(&retired.user_id).await?;
            return Ok(Rotation::Rotated(Rotated { retired, owner }));
        }
        self.refresh_tokens
            .delete_one(doc! { "jti": &replacement.jti })
            .await
            .map_err(map_err)?;
        let Some(old) = self.find_refresh_token(old_hash).await? else {
            return Ok(Rotation::Rejected);
        };
        match old.replay_verdict(now, grace) {
            ReplayVerdict::Reject => return Ok(Rotation::Rejected),
            ReplayVerdict::RevokeFamily => {}
            ReplayVerdict::SiblingIfFamilyAlive => {
                // No transaction: a family revoked between this check and the
                // insert leaves one live sibling behind, which the next replay
                // of any retired member revokes again. The window is one round
                // trip wide and needs a token already inside the grace period.
                let alive = self
                    .refresh_tokens
                    .find_one(doc! {
                        "family_id": &old.family_id,
                        "revoked": false,
                        "expires_at": { "$gt": now_b },
                    })
                    .await
                    .map_err(map_err)?
                    .is_some();
                if !alive {
                    return Ok(Rotation::Rejected);
                }
                // One sibling per retired token. The sibling goes in before
                // the mark (as a child goes in before its parent is retired
                // above): a concurrent replay that loses the mark and
                // revokes the family then revokes this sibling too, where
                // mark-then-insert could store it after that revocation.
                // `$in: [false, null]` (null also matches a document without
                // the field) rather than `$ne: true`: the same on MongoDB, and
                // nx-27017 0.8.1 never matches `$ne` on a missing field in an
                // update.
                self.insert_refresh_token(replacement).await?;
                let marked = self
                    .refresh_tokens
                    .update_one(
                        doc! {
                            "token_hash": old_hash.as_str(),
                            "sibling_issued": { "$in": [false, bson::Bson::Null] },
                        },
                        doc! { "$set": { "sibling_issued": true } },
                    )
                    .await
                    .map_err(map_err)?;
                if marked.modified_count == 1 {
                    let owner = self.find_user_by_id(&old.user_id).await?;
                    return Ok(Rotation::GraceSibling(Rotated {
                        retired: old,
                        owner,
                    }));
                }
                self.refresh_tokens
                    .delete_one(doc! { "jti": &replacement.jti })
                    .await
                    .map_err(map_err)?;
            }
        }
        let revoked = self
            .revoke_refresh_family(&old.user_id, &old.family_id, now)
            .await?;
        Ok(Rotation::ReuseDetected {
            token: old,
            revoked,
        })
    }

    async fn find_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        Ok(self
            .refresh_tokens
            .find_one(doc! { "token_hash": hash.as_str() })
            .await
            .map_err(map_err)?
            .map(RefreshTokenRecord::from))
    }

    async fn revoke_refresh_token(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = self
            .refresh_tokens
            .update_one(
                doc! { "token_hash": hash.as_str(), "revoked": false },
                doc! { "$set": { "revoked": true, "revoked_at": bson_date(now) } },
            )
            .await
            .map_err(map_err)?;
        Ok(done.modified_count == 1)
    }

    async fn revoke_user_refresh_tokens(
        &self,
        user_id: &UserId,
        keep_family: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut filter = doc! { "user_id": user_id.as_str(), "revoked": false };
        if let Some(keep) = keep_family {
            filter.insert("family_id", doc! { "$ne": keep });
        }
        let done = self
            .refresh_tokens
            .update_many(
                filter,
                doc! { "$set": { "revoked": true, "revoked_at": bson_date(now) } },
            )
            .await
            .map_err(map_err)?;
        Ok(done.modified_count)
    }

    async fn list_user_refresh_tokens(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<RefreshTokenRecord>> {
        let docs: Vec<RefreshDoc> = self
            .refresh_tokens
            .find(doc! {
                "user_id": user_id.as_str(),
                "revoked": false,
                "expires_at": { "$gt": bson_date(now) },
            })
            .sort(doc! { "created_at": -1 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        Ok(docs.into_iter().map(RefreshTokenRecord::from).collect())
    }

    async fn refresh_family_alive(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        Ok(self
            .refresh_tokens
            .find_one(doc! {
                "user_id": user_id.as_str(),
                "family_id": family_id,
                "revoked": false,
                "expires_at": { "$gt": bson_date(now) },
            })
            .await
            .map_err(map_err)?
            .is_some())
    }

    async fn revoke_refresh_family(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let done = self
            .refresh_tokens
            .update_many(
                doc! { "user_id": user_id.as_str(), "family_id": family_id, "revoked": false },
                doc! { "$set": { "revoked": true, "revoked_at": bson_date(now) } },
            )
            .await
            .map_err(map_err)?;
        Ok(done.modified_count)
    }
}

/// A browser session in the `sessions` collection, keyed by the hash of its
/// id.
#[derive(Debug, Serialize, Deserialize)]
struct SessionDoc {
    #[serde(rename = "_id")]
    id_hash: String,
    #[serde(default)]
    user_id: Option<String>,
    data: String,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    refresh_family: Option<String>,
    created_at: bson::DateTime,
    last_used_at: bson::DateTime,
    expires_at: bson::DateTime,
}

impl SessionDoc {
    fn new(s: &WebSessionRecord) -> Self {
        Self {
            id_hash: s.id_hash.as_str().to_owned(),
            user_id: s.user_id.as_ref().map(|u| u.as_str().to_owned()),
            data: s.data.clone(),
            user_agent: s.user_agent.clone(),
            ip_address: s.ip_address.clone(),
            refresh_family: s.refresh_family.clone(),
            created_at: bson_date(s.created_at),
            last_used_at: bson_date(s.last_used_at),
            expires_at: bson_date(s.expires_at),
        }
    }
}

impl From<SessionDoc> for WebSessionRecord {
    fn from(doc: SessionDoc) -> Self {
        WebSessionRecord {
            id_hash: TokenHash::from_stored(doc.id_hash),
            user_id: doc.user_id.map(UserId::new),
            data: doc.data,
            user_agent: doc.user_agent,
            ip_address: doc.ip_address,
            refresh_family: doc.refresh_family,
            created_at: doc.created_at.to_chrono(),
            last_used_at: doc.last_used_at.to_chrono(),
            expires_at: doc.expires_at.to_chrono(),
        }
    }
}

#[async_trait]
impl WebSessionStore for MongoStore {
    async fn insert_web_session(&self, session: &WebSessionRecord) -> StoreResult<()> {
        self.sessions
            .insert_one(SessionDoc::new(session))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn update_web_session(
        &self,
        session: &WebSessionRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let doc = SessionDoc::new(session);
        let optional = |v: Option<String>| v.map_or(bson::Bson::Null, Into::into);
        // No upsert: a session deleted or expired meanwhile stays ended.
        let done = self
            .sessions
            .update_one(
                doc! { "_id": &doc.id_hash, "expires_at": { "$gt": bson_date(now) } },
                doc! {
                    "$set": {
                        "user_id": optional(doc.user_id.clone()),
                        "data": &doc.data,
                        "user_agent": optional(doc.user_agent.clone()),
                        "ip_address": optional(doc.ip_address.clone()),
                        "refresh_family": optional(doc.refresh_family.clone()),
                        "last_used_at": doc.last_used_at,
                        "expires_at": doc.expires_at,
                    },
                },
            )
            .await
            .map_err(map_err)?;
        Ok(done.matched_count == 1)
    }

    async fn load_web_session(
        &self,
        id_hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebSessionRecord>> {
        Ok(self
            .sessions
            .find_one(doc! { "_id": id_hash.as_str(), "expires_at": { "$gt": bson_date(now) } })
            .await
            .map_err(map_err)?
            .map(WebSessionRecord::from))
    }

    async fn delete_web_session(&self, id_hash: &TokenHash) -> StoreResult<bool> {
        let done = self
            .sessions
            .delete_one(doc! { "_id": id_hash.as_str() })
            .await
            .map_err(map_err)?;
        Ok(done.deleted_count > 0)
    }

    async fn list_user_web_sessions(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<WebSessionRecord>> {
        let docs: Vec<SessionDoc> = self
            .sessions
            .find(doc! { "user_id": user_id.as_str(), "expires_at": { "$gt": bson_date(now) } })
            .sort(doc! { "last_used_at": -1 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        Ok(docs.into_iter().map(WebSessionRecord::from).collect())
    }

    async fn delete_user_web_sessions(
        &self,
        user_id: &UserId,
        keep: Option<&TokenHash>,
    ) -> StoreResult<u64> {
        let mut filter = doc! { "user_id": user_id.as_str() };
        if let Some(keep) = keep {
            filter.insert("_id", doc! { "$ne": keep.as_str() });
        }
        let done = self.sessions.delete_many(filter).await.map_err(map_err)?;
        Ok(done.deleted_count)
    }

    async fn delete_family_web_sessions(
        &self,
        user_id: &UserId,
        family_id: &str,
    ) -> StoreResult<u64> {
        let done = self
            .sessions
            .delete_many(doc! { "user_id": user_id.as_str(), "refresh_family": family_id })
            .await
            .map_err(map_err)?;
        Ok(done.deleted_count)
    }
}

#[async_trait]
impl OneTimeTokenStore for MongoStore {
    async fn replace_one_time_token(
        &self,
        purpose: TokenPurpose,
        token: &NewOneTimeToken,
    ) -> StoreResult<()> {
        self.indexes.ensure().await?;
        let collection = self.one_time(purpose);
        let doc = OneTimeDoc {
            id: ObjectId::new(),
            user_id: token.user_id.as_str().to_owned(),
            token_hash: token.token_hash.as_str().to_owned(),
            expires_at: bson_date(token.expires_at),
            created_at: bson_date(token.created_at),
        };
        let new_id = doc.id;
        // Insert first, then delete every other token of the user: if the
        // delete fails the new link still works. Two concurrent requests can
        // at worst delete each other's token, which fails closed (ask again).
        collection.insert_one(&doc).await.map_err(map_err)?;
        collection
            .delete_many(doc! { "user_id": &doc.user_id, "_id": { "$ne": new_id } })
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn find_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserId>> {
        Ok(self
            .one_time(purpose)
            .find_one(doc! { "token_hash": hash.as_str(), "expires_at": { "$gt": bson_date(now) } })
            .await
            .map_err(map_err)?
            .map(|doc| UserId::new(doc.user_id)))
    }

    async fn consume_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserId>> {
        // Deleted whether or not it has expired (an expired link is used up
        // too); the expiry check is ours, not the TTL monitor's.
        let consumed = self
            .one_time(purpose)
            .find_one_and_delete(doc! { "token_hash": hash.as_str() })
            .await
            .map_err(map_err)?;
        Ok(consumed
            .filter(|doc| doc.expires_at > bson_date(now))
            .map(|doc| UserId::new(doc.user_id)))
    }

    async fn delete_user_one_time_tokens(
        &self,
        purpose: TokenPurpose,
        user_id: &UserId,
    ) -> StoreResult<()> {
        self.one_time(purpose)
            .delete_many(doc! { "user_id": user_id.as_str() })
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

/// Passes of `add_login_failure` before giving up: each pass that writes
/// nothing lost to another request's write, so more than a few means
/// something is wrong, not contention.
const MAX_COUNT_ATTEMPTS: usize = 5;

/// `login_throttles`, keyed by the hash of the submitted email.
#[derive(Serialize, Deserialize)]
struct ThrottleDoc {
    #[serde(rename = "_id")]
    key_hash: String,
    failures: i64,
    window_started_at: bson::DateTime,
    #[serde(default)]
    locked_until: Option<bson::DateTime>,
    #[serde(default)]
    lock_count: i64,
}

impl From<ThrottleDoc> for LoginThrottle {
    fn from(doc: ThrottleDoc) -> Self {
        LoginThrottle {
            failures: u32::try_from(doc.failures).unwrap_or(u32::MAX),
            window_started_at: doc.window_started_at.to_chrono(),
            locked_until: doc.locked_until.map(bson::DateTime::to_chrono),
            lock_count: u32::try_from(doc.lock_count).unwrap_or(u32::MAX),
        }
    }
}

#[async_trait]
impl LoginThrottleStore for MongoStore {
    async fn login_throttle(&self, key: &TokenHash) -> StoreResult<Option<LoginThrottle>> {
        Ok(self
            .login_throttles
            .find_one(doc! { "_id": key.as_str() })
            .await
            .map_err(map_err)?
            .map(LoginThrottle::from))
    }

    async fn add_login_failure(
        &self,
        key: &TokenHash,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> StoreResult<LoginThrottle> {
        // Without a pipeline update (older servers and the test server lack
        // it) a window restart and an increment are separate writes; each is
        // conditional so concurrent failures are all counted:
        // 1. count in the open window;
        // 2. else restart a window that is over: the filter names the old
        //    window, so of several racers exactly one matches, and the others
        //    find the restarted window open at step 1 when they loop;
        // 3. else no document exists: insert the first failure; a racer that
        //    inserted first makes this a duplicate key, and the loop counts
        //    in its window instead.
        // Each pass that writes nothing saw another request's write, so a
        // few passes always settle.
        let open_window = doc! { "$gt": bson_date(window_start) };
        for _ in 0..MAX_COUNT_ATTEMPTS {
            let counted = self
                .login_throttles
                .find_one_and_update(
                    doc! { "_id": key.as_str(), "window_started_at": open_window.clone() },
                    doc! { "$inc": { "failures": 1_i64 } },
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(map_err)?;
            if let Some(doc) = counted {
                return Ok(doc.into());
            }
            let restarted = self
                .login_throttles
                .find_one_and_update(
                    doc! {
                        "_id": key.as_str(),
                        "window_started_at": { "$lte": bson_date(window_start) },
                    },
                    doc! { "$set": { "failures": 1_i64, "window_started_at": bson_date(now) } },
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(map_err)?;
            if let Some(doc) = restarted {
                return Ok(doc.into());
            }
            let first = ThrottleDoc {
                key_hash: key.as_str().to_owned(),
                failures: 1,
                window_started_at: bson_date(now),
                locked_until: None,
                lock_count: 0,
            };
            match self.login_throttles.insert_one(&first).await {
                Ok(_) => return Ok(first.into()),
                Err(e) if is_duplicate_key(&e) => continue,
                Err(e) => return Err(map_err(e)),
            }
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "login failure not counted after {MAX_COUNT_ATTEMPTS} attempts"
        )))
    }

    async fn lock_login(
        &self,
        key: &TokenHash,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let now = bson_date(now);
        let done = self
            .login_throttles
            .update_one(
                doc! {
                    "_id": key.as_str(),
                    "$or": [ { "locked_until": null }, { "locked_until": { "$lte": now } } ],
                },
                doc! {
                    "$set": { "locked_until": bson_date(until), "failures": 0_i64, "window_started_at": now },
                    "$inc": { "lock_count": 1_i64 },
                },
            )
            .await
            .map_err(map_err)?;
        Ok(done.modified_count == 1)
    }

    async fn clear_login_throttle(&self, key: &TokenHash) -> StoreResult<()> {
        self.login_throttles
            .delete_one(doc! { "_id": key.as_str() })
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

/// `audit_events`. `_id` is the recorder's event id, which is what makes a
/// retried append idempotent without transactions.
#[derive(Debug, Serialize, Deserialize)]
struct AuditDoc {
    #[serde(rename = "_id")]
    id: String,
    seq: i64,
    time: bson::DateTime,
    event: String,
    outcome: String,
    user_id: Option<String>,
    email: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    /// The record's [`HashVersion`] number; documents from the first
    /// release have none, which means v1.
    #[serde(default)]
    version: Option<i64>,
    prev_hash: String,
    hash: String,
}

/// How often one event may lose the race for the next seq before the append
/// gives up (and the recorder retries later): only reached under a storm of
/// appends from many instances at once.
const AUDIT_APPEND_ATTEMPTS: usize = 100;

impl AuditDoc {
    fn new(id: &str, record: &AuditRecord) -> Self {
        Self {
            id: id.to_owned(),
            seq: i64::try_from(record.seq).unwrap_or(i64::MAX),
            time: bson_date(record.time),
            event: record.event.as_str().to_owned(),
            outcome: record.outcome.as_str().to_owned(),
            user_id: record.user_id.clone(),
            email: record.email.clone(),
            ip: record.ip.clone(),
            user_agent: record.user_agent.clone(),
            request_id: record.request_id.clone(),
            detail: record.detail.clone(),
            version: Some(record.version.number()),
            prev_hash: record.prev_hash.clone(),
            hash: record.hash.clone(),
        }
    }
}

/// The `_id` and [`ChainLink`] of a stored audit document (projected to
/// `_id`, `seq` and `hash`).
fn audit_link(doc: &Document) -> Option<(String, ChainLink)> {
    let seq = match doc.get("seq")? {
        bson::Bson::Int64(n) => u64::try_from(*n).ok()?,
        bson::Bson::Int32(n) => u64::try_from(*n).ok()?,
        _ => return None,
    };
    let link = ChainLink {
        seq,
        hash: doc.get_str("hash").ok()?.to_owned(),
    };
    Some((doc.get_str("_id").ok()?.to_owned(), link))
}

impl TryFrom<AuditDoc> for AuditRecord {
    type Error = StoreError;

    fn try_from(doc: AuditDoc) -> StoreResult<Self> {
        let damaged = |what: &str| StoreError::Other(anyhow::anyhow!("audit_events: {what}"));
        Ok(AuditRecord {
            seq: u64::try_from(doc.seq).map_err(|_| damaged("negative seq"))?,
            time: doc.time.to_chrono(),
            event: AuditEvent::parse(&doc.event).ok_or_else(|| damaged("unknown event"))?,
            outcome: AuditOutcome::parse(&doc.outcome).ok_or_else(|| damaged("unknown outcome"))?,
            user_id: doc.user_id,
            email: doc.email,
            ip: doc.ip,
            user_agent: doc.user_agent,
            request_id: doc.request_id,
            detail: doc.detail,
            version: match doc.version {
                None => HashVersion::V1,
                Some(n) => {
                    HashVersion::from_number(n).ok_or_else(|| damaged("unknown record version"))?
                }
            },
            prev_hash: doc.prev_hash,
            hash: doc.hash,
        })
    }
}

impl MongoStore {
    /// (seq, hash) of the last record, or (0, genesis) for an empty chain.
    async fn audit_head(&self) -> StoreResult<(u64, String)> {
        let head = self
            .audit_events
            .find_one(doc! {})
            .sort(doc! { "seq": -1 })
            .await
            .map_err(map_err)?;
        Ok(match head {
            Some(doc) => (u64::try_from(doc.seq).unwrap_or(0), doc.hash),
            None => (0, GENESIS_HASH.to_owned()),
        })
    }

    /// The link of the stored event `id`, if it is stored.
    async fn audit_event_stored(&self, id: &str) -> StoreResult<Option<ChainLink>> {
        Ok(self
            .audit_events
            .clone_with_type::<Document>()
            .find_one(doc! { "_id": id })
            .projection(doc! { "_id": 1, "seq": 1, "hash": 1 })
            .await
            .map_err(map_err)?
            .as_ref()
            .and_then(audit_link)
            .map(|(_, link)| link))
    }

    async fn find_audit(
        &self,
        filter: Document,
        sort: i32,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        let docs: Vec<AuditDoc> = self
            .audit_events
            .find(filter)
            .sort(doc! { "seq": sort })
            .limit(i64::from(limit))
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        docs.into_iter().map(AuditRecord::try_from).collect()
    }
}

#[async_trait]
impl AuditStore for MongoStore {
    async fn append_audit_events(
        &self,
        events: &[NewAuditEvent],
        key: &AuditKey,
    ) -> StoreResult<Vec<ChainLink>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Without the unique seq index two instances could fork the chain.
        self.indexes.ensure().await?;
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let stored: Vec<Document> = self
            .audit_events
            .clone_with_type::<Document>()
            .find(doc! { "_id": { "$in": ids } })
            .projection(doc! { "_id": 1, "seq": 1, "hash": 1 })
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let stored: std::collections::HashMap<String, ChainLink> =
            stored.iter().filter_map(audit_link).collect();
        let mut head = self.audit_head().await?;
        let mut links = Vec::with_capacity(events.len());
        for event in events {
            if let Some(link) = stored.get(&event.id) {
                links.push(link.clone());
                continue;
            }
            let mut attempts = 0;
            loop {
                let record = AuditRecord::chain(head.0 + 1, event, &head.1, key);
                match self
                    .audit_events
                    .insert_one(AuditDoc::new(&event.id, &record))
                    .await
                {
                    Ok(_) => {
                        links.push(ChainLink {
                            seq: record.seq,
                            hash: record.hash.clone(),
                        });
                        head = (record.seq, record.hash);
                        break;
                    }
                    Err(err) if is_duplicate_key(&err) => {
                        if let Some(link) = self.audit_event_stored(&event.id).await? {
                            // Our own event after all (an earlier attempt).
                            links.push(link);
                            head = self.audit_head().await?;
                            break;
                        }
                        // Another instance took this seq first.
                        attempts += 1;
                        if attempts >= AUDIT_APPEND_ATTEMPTS {
                            return Err(StoreError::Other(anyhow::anyhow!(
                                "audit append lost the race for the next seq {attempts} times"
                            )));
                        }
                        head = self.audit_head().await?;
                    }
                    Err(err) => return Err(map_err(err)),
                }
            }
        }
        Ok(links)
    }

    async fn query_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        let mut filter = doc! {};
        if let Some(user_id) = &query.user_id {
            filter.insert("user_id", user_id.as_str());
        }
        if let Some(event) = query.event {
            filter.insert("event", event.as_str());
        }
        let mut time = doc! {};
        if let Some(since) = query.since {
            time.insert("$gte", bson_date(since));
        }
        if let Some(until) = query.until {
            time.insert("$lt", bson_date(until));
        }
        if !time.is_empty() {
            filter.insert("time", time);
        }
        if let Some(before) = query.before_seq {
            filter.insert(
                "seq",
                doc! { "$lt": i64::try_from(before).unwrap_or(i64::MAX) },
            );
        }
        self.find_audit(filter, -1, query.limit).await
    }

    async fn audit_events_after(&self, after: u64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.find_audit(doc! { "seq": { "$gt": after } }, 1, limit)
            .await
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        Ok(())
    }

    /// One document, shared by every instance on the database; each probe
    /// only moves its time.
    async fn probe_write(&self, now: DateTime<Utc>) -> StoreResult<()> {
        self.db
            .collection::<Document>("health_probe")
            .update_one(
                doc! { "_id": "probe" },
                doc! { "$set": { "probed_at": bson_date(now) } },
            )
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        throttle_idle_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        // The TTL indexes do this too; purging here keeps behaviour the same
        // as SQLite's where the TTL monitor lags or is disabled.
        let expired = doc! { "expires_at": { "$lte": bson_date(now) } };
        let mut purged = 0;
        for collection in [
            self.refresh_tokens.name(),
            self.reset_tokens.name(),
            self.verification_tokens.name(),
            self.sessions.name(),
            rate_limits::COLLECTION,
        ] {
            purged += self
                .db
                .collection::<Document>(collection)
                .delete_many(expired.clone())
                .await
                .map_err(map_err)?
                .deleted_count;
        }
        let idle = bson_date(throttle_idle_before);
        purged += self
            .login_throttles
            .delete_many(doc! {
                "window_started_at": { "$lte": idle },
                "$or": [ { "locked_until": null }, { "locked_until": { "$lte": idle } } ],
            })
            .await
            .map_err(map_err)?
            .deleted_count;
        Ok(purged)
    }

    fn backend(&self) -> &'static str {
        "mongodb"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(err: mongodb::error::Error) -> &'static str {
        match map_err(err) {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Conflict => "conflict",
            StoreError::Other(_) => "other",
        }
    }

    fn command(code: i32) -> mongodb::error::Error {
        let error = bson::from_document(doc! { "code": code, "codeName": "x", "errmsg": "x" });
        ErrorKind::Command(error.unwrap()).into()
    }

    fn write(code: i32) -> mongodb::error::Error {
        let error = bson::from_document(doc! { "code": code, "errmsg": "x" });
        ErrorKind::Write(WriteFailure::WriteError(error.unwrap())).into()
    }

    /// Writes the server refuses for its own state (out of disk space, no
    /// longer primary, a lock or time limit exceeded) are 503s, whether they
    /// come back as a command error or a write error; a duplicate stays a
    /// conflict and a refused document a 500. (nx-27017 reports every
    /// storage failure as code 8, UnknownError, which must stay a 500 for a
    /// real server, so these cannot be caused against it.)
    #[test]
    fn server_write_faults_map_to_unavailable() {
        for code in [14031, 10107, 13435, 91, 189, 24, 50] {
            assert_eq!(kind(command(code)), "unavailable", "command error {code}");
            assert_eq!(kind(write(code)), "unavailable", "write error {code}");
        }
        assert_eq!(kind(write(DUPLICATE_KEY)), "conflict");
        assert_eq!(kind(command(2)), "other", "BadValue");
        assert_eq!(kind(write(121)), "other", "DocumentValidationFailure");
        assert_eq!(kind(write(8)), "other", "UnknownError");
    }
}
