//! The embedded default store: one SQLite file, WAL mode.
//!
//! Chosen so `cargo run --release` works on a fresh machine with nothing else
//! installed. WAL lets readers run while one writer commits; writes are short
//! so a single writer is not the bottleneck (argon2 is).

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use sqlx::sqlite::SqliteSynchronous;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

use super::{HealthProbe, Store, StoreError, StoreResult, StoredInstant};

mod audit;
mod connections;
mod email_queue;
mod emergency;
mod invitations;
mod login_throttles;
mod mfa;
mod one_time_tokens;
mod rate_limits;
mod refresh_tokens;
mod rotation;
mod schema;
mod signing_keys;
mod users;
mod web_sessions;

pub use audit::AUDIT_COLUMNS;
use connections::{Connections, Lease};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub struct SqliteStore {
    /// Readers: WAL lets them run beside the writer.
    readers: Arc<Connections>,
    /// The one connection that writes. SQLite has a single write lock; with
    /// several writing connections, the losers of a race sleep in SQLite's
    /// busy handler (1 to 100 ms steps). Queueing writes here instead keeps
    /// them back to back.
    writer: Arc<Connections>,
    /// Queue of the batched refresh-token rotations (on `writer`).
    rotations: tokio::sync::mpsc::Sender<rotation::Job>,
    /// SQLITE_SYNCHRONOUS, which the rate-limit counters set aside.
    synchronous: SqliteSynchronous,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and applies pending
    /// migrations. `url` is `sqlite://path/to/file.db`, relative to the
    /// working directory. Every commit is fsynced (see [`Self::connect_with`]).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, SqliteSynchronous::Full).await
    }

    /// [`Self::connect`] with the given `synchronous` (SQLITE_SYNCHRONOUS).
    /// In WAL mode FULL fsyncs the WAL at every commit, so a commit that was
    /// answered survives a power loss or an OS crash; NORMAL fsyncs only at
    /// checkpoints, which survives a crash of the process but can lose the
    /// last commits to a power loss (a rotated or revoked refresh token
    /// active again, a lockout lifted), though it never corrupts the file.
    pub async fn connect_with(url: &str, synchronous: SqliteSynchronous) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("DATABASE_URL is not a valid SQLite URL: {url}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // A multi-row write inside a transaction keeps a statement
            // journal; past 64 KiB (an audit batch) SQLite spilled it to a
            // temporary file, created and deleted on every such commit.
            .pragma("temp_store", "memory");
        let file = options.get_filename().to_path_buf();
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("cannot create database directory {}", dir.display())
                })?;
                // The directory holds password hashes and secrets: owner only.
                restrict(dir, 0o700);
            }
        }
        let open = |options: SqliteConnectOptions, size| async move {
            Connections::open(options, size, Duration::from_secs(5))
                .await
                .map(Arc::new)
                .with_context(|| format!("cannot open SQLite database {url}"))
        };
        let readers = open(options.clone(), 8).await?;
        let writer = open(
            options
                // Room for every batch size of the rotation statements.
                .statement_cache_capacity(256)
                // Checkpoints run beside it (see `spawn_checkpoints`).
                .pragma("wal_autocheckpoint", "0"),
            1,
        )
        .await?;
        migrate(&writer).await?;
        restrict(&file, 0o600);
        let rotations = rotation::spawn(Arc::clone(&writer))
            .context("cannot start the refresh-token rotation thread")?;
        spawn_checkpoints(Arc::downgrade(&readers));
        Ok(Self {
            readers,
            writer,
            rotations,
            synchronous,
        })
    }
}

/// Passes at applying migrations before giving up (see [`migrate`]).
const MIGRATION_ATTEMPTS: u32 = 3;

/// Applies pending migrations.
///
/// Instances started together on one file (a deployment bringing them up
/// at once, or an upgrade to a release with a new migration) race to apply
/// the same migration: sqlx reads which are applied, then applies the rest,
/// and the loser's statements fail after the winner committed ("table
/// already exists", or the `_sqlx_migrations` row taken). The next pass
/// finds the migration applied; a migration that really fails fails every
/// pass.
async fn migrate(writer: &Connections) -> anyhow::Result<()> {
    let mut attempt = 1;
    loop {
        let mut conn = writer.get().await?;
        let result = match MIGRATOR.run(conn.conn()?).await {
            Ok(()) => schema::lift_role_check(conn.conn()?).await,
            Err(e) => Err(e.into()),
        };
        let Err(err) = result else {
            return Ok(());
        };
        // Its transaction may still be open: the next pass gets a fresh one.
        conn.discard();
        if attempt == MIGRATION_ATTEMPTS {
            return Err(err).context("cannot apply database migrations");
        }
        tracing::info!(error = %err, "a migration failed, perhaps applied by another instance just now: trying again");
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl SqliteStore {
    /// A reader connection for one call.
    async fn read(&self) -> StoreResult<Lease<'_>> {
        Ok(self.readers.get().await?)
    }

    /// The writer, for one call or one transaction.
    async fn write(&self) -> StoreResult<Lease<'_>> {
        Ok(self.writer.get().await?)
    }
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Checkpoints the WAL from a reader connection, so the writer never does.
///
/// SQLite's automatic checkpoint runs inside whichever commit crosses 1000
/// pages of WAL, and copies and fsyncs while that commit, and so every
/// queued write, waits: under a refresh flood that was the 20 ms p99. A
/// PASSIVE checkpoint here copies what no reader still needs without taking
/// the write lock; the WAL restarts from the top once all of it is copied.
fn spawn_checkpoints(readers: Weak<Connections>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Ends with the store.
            let Some(readers) = readers.upgrade() else {
                return;
            };
            let checkpoint = async {
                sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&mut readers.get().await?)
                    .await
            };
            if let Err(e) = checkpoint.await {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    });
}

/// Best effort: a file system without Unix permissions keeps its defaults.
fn restrict(path: &std::path::Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot restrict permissions");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Other(anyhow::anyhow!("timestamp out of range: {ms}")))
}

/// Every time column holds Unix milliseconds.
impl StoredInstant for i64 {
    fn from_utc(at: DateTime<Utc>) -> Self {
        millis(at)
    }

    fn to_utc(self) -> StoreResult<DateTime<Utc>> {
        from_millis(self)
    }
}

/// SQLite primary result codes that say the database cannot take the call
/// right now, not that the request or the code is wrong: busy or locked
/// past the busy timeout, read-only, an I/O error, full, cannot be opened.
/// They clear by themselves or by an operator's hand (space freed, a lock
/// released, permissions fixed), so the caller answers 503 with Retry-After
/// rather than 500.
const SQLITE_UNAVAILABLE: [i32; 6] = [
    5,  // SQLITE_BUSY
    6,  // SQLITE_LOCKED
    8,  // SQLITE_READONLY
    10, // SQLITE_IOERR
    13, // SQLITE_FULL
    14, // SQLITE_CANTOPEN
];

/// By the typed result code, never the message: sqlx reports SQLite's
/// extended code, whose low byte is the primary one (SQLITE_IOERR_WRITE,
/// 778, is an SQLITE_IOERR).
fn is_unavailable(err: &dyn sqlx::error::DatabaseError) -> bool {
    err.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| SQLITE_UNAVAILABLE.contains(&(code & 0xff)))
}

/// The one place SQLite's errors become the services' terms, so every store
/// call can use `?`.
impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::Database(ref db) if is_unavailable(db.as_ref()) => {
                StoreError::Unavailable(err.into())
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Io(_) => StoreError::Unavailable(err.into()),
            other => StoreError::Other(other.into()),
        }
    }
}

/// Ends the transaction a multi-statement command began, after it stopped
/// somewhere between BEGIN and COMMIT (or before BEGIN, when ROLLBACK
/// answers that no transaction is active). A connection that cannot even
/// roll back is not reused half inside a transaction.
async fn roll_back(conn: &mut Lease<'_>) {
    if let Err(err) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
        if !no_transaction_active(&err) {
            conn.discard();
        }
    }
}

/// Whether a ROLLBACK failed only because no transaction was open (SQLite
/// ended it itself, or it never began). SQLite says so with its generic
/// result code, SQLITE_ERROR (1, "cannot rollback - no transaction is
/// active"), which has no code of its own; matched by that code rather than
/// by the message, as [`is_unavailable`] is. A bare ROLLBACK names no table
/// and binds nothing, so that is the one SQLITE_ERROR it can meet; a
/// connection that cannot roll back fails with another code (BUSY, IOERR,
/// ...) or outside SQLite (its thread gone), and is discarded.
fn no_transaction_active(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("1"))
}

#[async_trait]
impl HealthProbe for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&mut self.read().await?)
            .await
            // Not the usual conversion: whatever the error, a ping that
            // fails means the database does not answer (503), not a bug.
            .map_err(|e| StoreError::Unavailable(e.into()))?;
        Ok(())
    }

    /// Through the writer, like every write: it waits its turn there, and
    /// fails as the next real write would.
    async fn probe_write(&self, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO health_probe (id, probed_at) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .bind(millis(now))
        .execute(&mut self.write().await?)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        throttle_idle_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let now = millis(now);
        let mut purged = 0;
        for table in [
            "refresh_tokens",
            "reset_tokens",
            "verification_tokens",
            "mfa_challenges",
            "passkey_ceremonies",
            "web_sessions",
            "rate_limits",
        ] {
            purged += sqlx::query(&format!("DELETE FROM {table} WHERE expires_at <= ?"))
                .bind(now)
                .execute(&mut self.write().await?)
                .await?
                .rows_affected();
        }
        let idle = millis(throttle_idle_before);
        purged += sqlx::query(
            "DELETE FROM login_throttles WHERE window_started_at <= ? \
             AND (locked_until IS NULL OR locked_until <= ?)",
        )
        .bind(idle)
        .bind(idle)
        .execute(&mut self.write().await?)
        .await?
        .rows_affected();
        Ok(purged)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn serialized_writes(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write faults are 503s, not 500s: SQLite's own errors for a
    /// read-only database, a lock held past the busy timeout, a full
    /// database and a file that cannot be opened map to `Unavailable`; a
    /// duplicate stays a conflict and a bad statement a 500.
    #[tokio::test]
    async fn write_faults_map_to_unavailable() {
        use sqlx::ConnectOptions;
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("faults.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let mut conn = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (x UNIQUE)")
            .execute(&mut conn)
            .await
            .unwrap();
        let kind = |err: sqlx::Error| match StoreError::from(err) {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Conflict => "conflict",
            StoreError::Other(_) => "other",
        };

        let mut read_only = options.clone().read_only(true).connect().await.unwrap();
        let err = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut read_only)
            .await
            .unwrap_err();
        assert_eq!(kind(err), "unavailable", "SQLITE_READONLY");

        let mut holder = options.connect().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .unwrap();
        let mut waiter = options
            .clone()
            .busy_timeout(Duration::ZERO)
            .connect()
            .await
            .unwrap();
        let err = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut waiter)
            .await
            .unwrap_err();
        assert_eq!(kind(err), "unavailable", "SQLITE_BUSY");
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

        // The same error as a full disk, from SQLite itself: the file may
        // not grow past the pages it has.
        let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let err = sqlx::query("INSERT INTO t VALUES (randomblob(100000))")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(kind(err), "unavailable", "SQLITE_FULL");

        let missing = SqliteConnectOptions::new()
            .filename(dir.path().join("no-such-dir/x.db"))
            .connect()
            .await
            .unwrap_err();
        assert_eq!(kind(missing), "unavailable", "SQLITE_CANTOPEN");

        sqlx::query("PRAGMA max_page_count = 1000000")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (3)")
            .execute(&mut conn)
            .await
            .unwrap();
        let duplicate = sqlx::query("INSERT INTO t VALUES (3)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(kind(duplicate), "conflict");
        let bad = sqlx::query("INSERT INTO nowhere VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(kind(bad), "other");
    }

    /// Every connection, the writer above all, fsyncs at each commit unless
    /// SQLITE_SYNCHRONOUS=normal says otherwise (PRAGMA synchronous: 2 is
    /// FULL, 1 NORMAL).
    #[tokio::test]
    async fn commits_are_fsynced_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sync.db", dir.path().display());
        let level = |store: SqliteStore| async move {
            let mut levels = Vec::new();
            for conn in [store.write().await.unwrap(), store.read().await.unwrap()] {
                let mut conn = conn;
                let (level,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                levels.push(level);
            }
            levels
        };
        assert_eq!(
            level(SqliteStore::connect(&url).await.unwrap()).await,
            [2, 2]
        );
        let normal = SqliteStore::connect_with(&url, SqliteSynchronous::Normal)
            .await
            .unwrap();
        assert_eq!(level(normal).await, [1, 1]);
    }

    /// A ROLLBACK with no transaction open (SQLite ended it, or it never
    /// began) is recognised by its result code and keeps the connection:
    /// the writer's session state, here a TEMP table, is still there after.
    #[tokio::test]
    async fn rollback_outside_a_transaction_keeps_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/rollback.db", dir.path().display());
        let store = SqliteStore::connect(&url).await.unwrap();
        let mut writer = store.write().await.unwrap();
        sqlx::query("CREATE TEMP TABLE marker (x)")
            .execute(&mut writer)
            .await
            .unwrap();
        let err = sqlx::query("ROLLBACK")
            .execute(&mut writer)
            .await
            .unwrap_err();
        assert!(no_transaction_active(&err), "{err}");
        assert!(!no_transaction_active(&sqlx::Error::WorkerCrashed));
        roll_back(&mut writer).await;
        drop(writer);
        let mut writer = store.write().await.unwrap();
        sqlx::query("SELECT x FROM marker")
            .execute(&mut writer)
            .await
            .expect("the same connection, not a fresh one");
    }
}
