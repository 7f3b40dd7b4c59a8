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
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use tokio::sync::OnceCell;

use super::{HealthProbe, Store, StoreError, StoreResult, StoredInstant};
use crate::domain::UserId;

mod audit;
mod email_queue;
mod emergency;
mod invitations;
mod login_throttles;
mod mfa;
mod one_time_tokens;
mod rate_limits;
mod refresh_tokens;
mod signing_keys;
mod users;
mod web_sessions;

use audit::AuditDoc;
use login_throttles::ThrottleDoc;
use one_time_tokens::OneTimeDoc;
use refresh_tokens::RefreshDoc;
use users::UserDoc;
use web_sessions::SessionDoc;

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
    mfa_challenges: Collection<OneTimeDoc>,
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
            mfa_challenges: db.collection("mfa_challenges"),
            login_throttles: db.collection("login_throttles"),
            sessions: db.collection("sessions"),
            audit_events: db.collection("audit_events"),
            db,
            indexes,
        })
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
        ("mfa_challenges", unique("token_hash")),
        ("mfa_challenges", plain("user_id")),
        ("mfa_challenges", ttl()),
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
        // A passkey sign-in finds its credential by the authenticator's
        // id, unique across users; the account page lists a user's.
        (mfa::PASSKEYS, unique("credential_id")),
        (mfa::PASSKEYS, plain("user_id")),
        (mfa::CEREMONIES, ttl()),
        // One open emergency use per user (the field exists only while
        // open); the queue and the sweep read by time. Never a TTL here:
        // the record is what the review is about.
        (
            emergency::COLLECTION,
            IndexModel::builder()
                .keys(doc! { emergency::OPEN_USER: 1 })
                .options(IndexOptions::builder().unique(true).sparse(true).build())
                .build(),
        ),
        (emergency::COLLECTION, plain("started_at")),
        (emergency::COLLECTION, plain("expires_at")),
        // One open invitation per address; the link finds its invitation.
        (invitations::COLLECTION, unique("email")),
        (invitations::COLLECTION, unique("token_hash")),
        // Signing keys are listed oldest first (the newest unretired one is
        // current); the kid is the `_id`.
        (signing_keys::COLLECTION, plain("created_at")),
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
            // Not `StoreError::from`: a duplicate key here means duplicate data already
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

/// Sorts a driver error into what the services branch on: the one place
/// MongoDB's errors become the services' terms, so every store call can use
/// `?`.
impl From<mongodb::error::Error> for StoreError {
    fn from(err: mongodb::error::Error) -> Self {
        if is_duplicate_key(&err) {
            return StoreError::Conflict;
        }
        if is_transient(&err) {
            return StoreError::Unavailable(err.into());
        }
        StoreError::Other(err.into())
    }
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

/// Every time field is a BSON date (milliseconds, like SQLite's columns).
impl StoredInstant for bson::DateTime {
    fn from_utc(at: DateTime<Utc>) -> Self {
        bson_date(at)
    }

    fn to_utc(self) -> StoreResult<DateTime<Utc>> {
        Ok(self.to_chrono())
    }
}

#[async_trait]
impl HealthProbe for MongoStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            // Not the usual conversion: whatever the error, a ping that
            // fails means the database does not answer (503), not a bug.
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
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for MongoStore {
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
            self.mfa_challenges.name(),
            mfa::CEREMONIES,
            self.sessions.name(),
            rate_limits::COLLECTION,
        ] {
            purged += self
                .db
                .collection::<Document>(collection)
                .delete_many(expired.clone())
                .await?
                .deleted_count;
        }
        let idle = bson_date(throttle_idle_before);
        purged += self
            .login_throttles
            .delete_many(doc! {
                "window_started_at": { "$lte": idle },
                "$or": [ { "locked_until": null }, { "locked_until": { "$lte": idle } } ],
            })
            .await?
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
        match StoreError::from(err) {
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
