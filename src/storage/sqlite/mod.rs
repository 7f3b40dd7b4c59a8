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
use sqlx::FromRow;

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

mod connections;
mod email_queue;
mod rate_limits;
mod rotation;

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
        let result = MIGRATOR.run(conn.conn()?).await;
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
        self.readers.get().await.map_err(map_err)
    }

    /// The writer, for one call or one transaction.
    async fn write(&self) -> StoreResult<Lease<'_>> {
        self.writer.get().await.map_err(map_err)
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

fn map_err(err: sqlx::Error) -> StoreError {
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

/// Ends the transaction a multi-statement command began, after it stopped
/// somewhere between BEGIN and COMMIT (or before BEGIN, when ROLLBACK
/// answers that no transaction is active). A connection that cannot even
/// roll back is not reused half inside a transaction.
async fn roll_back(conn: &mut Lease<'_>) {
    if let Err(err) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
        if !err.to_string().contains("no transaction is active") {
            conn.discard();
        }
    }
}

#[derive(FromRow, Clone)]
struct UserRow {
    id: String,
    email: String,
    password_hash: String,
    name: String,
    role: String,
    verified: bool,
    created_at: i64,
    updated_at: i64,
    tokens_valid_after: Option<i64>,
    token_version: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(row: UserRow) -> StoreResult<Self> {
        let role = Role::parse(&row.role)
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("unknown role in users table")))?;
        Ok(User {
            id: UserId::new(row.id),
            email: EmailAddress::from_stored(row.email),
            name: PersonName::from_stored(row.name),
            role,
            verified: row.verified,
            password_hash: PasswordHash::new(row.password_hash),
            created_at: from_millis(row.created_at)?,
            updated_at: from_millis(row.updated_at)?,
            tokens_valid_after: row.tokens_valid_after.map(from_millis).transpose()?,
            token_version: u64::try_from(row.token_version).map_err(|_| {
                StoreError::Other(anyhow::anyhow!("negative token_version in users table"))
            })?,
        })
    }
}

const USER_COLUMNS: &str = "id, email, password_hash, name, role, verified, created_at, \
     updated_at, tokens_valid_after, token_version";

#[derive(FromRow)]
struct RefreshRow {
    user_id: String,
    jti: String,
    token_hash: String,
    family_id: String,
    user_agent: Option<String>,
    ip_address: Option<String>,
    revoked: bool,
    replaced_by: Option<String>,
    revoked_at: Option<i64>,
    sibling_issued: bool,
    expires_at: i64,
    created_at: i64,
}

impl TryFrom<RefreshRow> for RefreshTokenRecord {
    type Error = StoreError;

    fn try_from(row: RefreshRow) -> StoreResult<Self> {
        Ok(RefreshTokenRecord {
            user_id: UserId::new(row.user_id),
            jti: row.jti,
            token_hash: TokenHash::from_stored(row.token_hash),
            family_id: row.family_id,
            user_agent: row.user_agent,
            ip_address: row.ip_address,
            revoked: row.revoked,
            replaced_by: row.replaced_by,
            revoked_at: row.revoked_at.map(from_millis).transpose()?,
            sibling_issued: row.sibling_issued,
            expires_at: from_millis(row.expires_at)?,
            created_at: from_millis(row.created_at)?,
        })
    }
}

const REFRESH_COLUMNS: &str = "user_id, jti, token_hash, family_id, user_agent, ip_address, \
     revoked, replaced_by, revoked_at, sibling_issued, expires_at, created_at";

/// The parameters of one `refresh_tokens` row, in the column order of
/// `insert_refresh` (user_id, jti, token_hash, family_id, user_agent,
/// ip_address, expires_at, created_at; `revoked` is always 0).
fn bind_new_refresh<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    token: &'q NewRefreshToken,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    query
        .bind(token.user_id.as_str())
        .bind(&token.jti)
        .bind(token.token_hash.as_str())
        .bind(&token.family_id)
        .bind(&token.user_agent)
        .bind(&token.ip_address)
        .bind(millis(token.expires_at))
        .bind(millis(token.created_at))
}

async fn insert_refresh<'e, E>(executor: E, token: &NewRefreshToken) -> StoreResult<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let insert = sqlx::query(
        "INSERT INTO refresh_tokens (user_id, jti, token_hash, family_id, user_agent, \
         ip_address, revoked, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
    );
    bind_new_refresh(insert, token)
        .execute(executor)
        .await
        .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl UserStore for SqliteStore {
    /// With a verification link, one transaction sent to the writer's
    /// thread as one command: a registration is one commit instead of two,
    /// and a user never exists without its link.
    async fn create_user(&self, user: &NewUser) -> StoreResult<User> {
        self.create_user_with(user, None).await
    }

    async fn find_user_by_email(&self, email: &EmailAddress) -> StoreResult<Option<User>> {
        let row: Option<UserRow> =
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?"))
                .bind(email.as_str())
                .fetch_optional(&mut self.read().await?)
                .await
                .map_err(map_err)?;
        row.map(User::try_from).transpose()
    }

    async fn find_user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        let row: Option<UserRow> =
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?"))
                .bind(id.as_str())
                .fetch_optional(&mut self.read().await?)
                .await
                .map_err(map_err)?;
        row.map(User::try_from).transpose()
    }

    async fn set_password_hash(
        &self,
        id: &UserId,
        hash: &PasswordHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let update = sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
            .bind(hash.expose())
            .bind(millis(now));
        self.update_user(update, id).await
    }

    async fn cut_access_tokens(&self, id: &UserId, at: DateTime<Utc>) -> StoreResult<Option<u64>> {
        let version: Option<(i64,)> = sqlx::query_as(
            "UPDATE users SET tokens_valid_after = ?, token_version = token_version + 1 \
             WHERE id = ? RETURNING token_version",
        )
        .bind(millis(at))
        .bind(id.as_str())
        .fetch_optional(&mut self.write().await?)
        .await
        .map_err(map_err)?;
        Ok(version.map(|(v,)| v.max(0) as u64))
    }

    async fn set_verified(&self, id: &UserId, now: DateTime<Utc>) -> StoreResult<bool> {
        let update = sqlx::query("UPDATE users SET verified = 1, updated_at = ? WHERE id = ?")
            .bind(millis(now));
        self.update_user(update, id).await
    }

    async fn set_user_role(
        &self,
        id: &UserId,
        role: Role,
        cut: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let update = sqlx::query(
            "UPDATE users SET role = ?, tokens_valid_after = ?, token_version = token_version + 1, \
             updated_at = ? WHERE id = ?",
        )
        .bind(role.as_str())
        .bind(millis(cut))
        .bind(millis(now));
        self.update_user(update, id).await
    }
}

impl SqliteStore {
    /// Creates a user, with its verification link and, when given, the
    /// queued email carrying that link (see `email_queue`).
    async fn create_user_with(
        &self,
        user: &NewUser,
        email: Option<&super::NewQueuedEmail>,
    ) -> StoreResult<User> {
        let id = new_user_id();
        let Some(link) = &user.verification_link else {
            let row: UserRow = bind_user(sqlx::query_as(&insert_user_sql()), &id, user)
                .fetch_one(&mut self.write().await?)
                .await
                .map_err(map_err)?;
            return row.try_into();
        };
        let sql = format!(
            "BEGIN IMMEDIATE; {}; {}; {}COMMIT",
            insert_user_sql(),
            upsert_link_sql(TokenPurpose::EmailVerification),
            if email.is_some() {
                email_queue::INSERT_SQL
            } else {
                ""
            }
        );
        let mut conn = self.write().await?;
        // Only the INSERT's RETURNING gives a row.
        let mut query = bind_user(sqlx::query_as(&sql), &id, user)
            .bind(&id)
            .bind(link.token_hash.as_str())
            .bind(millis(link.expires_at))
            .bind(millis(link.created_at));
        if let Some(email) = email {
            query = email_queue::bind_email(query, email, Some(&id));
        }
        let rows: Result<Vec<UserRow>, _> = query.fetch_all(&mut conn).await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(err) => {
                roll_back(&mut conn).await;
                return Err(map_err(err));
            }
        };
        rows.into_iter()
            .next()
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("the new user's row is missing")))?
            .try_into()
    }

    /// Runs an `UPDATE users … WHERE id = ?` given every parameter but the
    /// last; false when no user has that id.
    async fn update_user<'q>(
        &self,
        update: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        id: &'q UserId,
    ) -> StoreResult<bool> {
        let done = update
            .bind(id.as_str())
            .execute(&mut self.write().await?)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl RefreshTokenStore for SqliteStore {
    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> StoreResult<()> {
        insert_refresh(&mut self.write().await?, token).await
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &TokenHash,
        now: DateTime<Utc>,
        grace: chrono::Duration,
        replacement: &NewRefreshToken,
    ) -> StoreResult<Rotation> {
        // The common case goes through the batcher (see `rotation`).
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = rotation::Job {
            old_hash: old_hash.clone(),
            now,
            replacement: replacement.clone(),
            reply,
        };
        let stopped = || StoreError::Unavailable(anyhow::anyhow!("rotation batcher stopped"));
        self.rotations.send(job).await.map_err(|_| stopped())?;
        if let Some(rotated) = answer.await.map_err(|_| stopped())?? {
            return Ok(Rotation::Rotated(rotated));
        }
        // Not active: decide what the replay means inside one transaction,
        // so the decision and its effect cannot interleave with another
        // rotation of the family, in this process or another one on the
        // same file. IMMEDIATE takes the write lock before the first read:
        // a deferred transaction would read first and then ask for the lock,
        // and SQLite fails that upgrade at once with SQLITE_BUSY (or
        // BUSY_SNAPSHOT when another process committed in between) instead
        // of waiting in the busy handler, which answered 500 and skipped
        // reuse detection. Plain statements rather than sqlx's `begin_with`,
        // like every other transaction here: a failed ROLLBACK then discards
        // the connection instead of leaving sqlx's transaction depth behind.
        let mut conn = self.write().await?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .map_err(map_err)?;
        let committed = match decide_replay(&mut conn, old_hash, now, grace, replacement).await {
            Ok(rotation) => sqlx::query("COMMIT")
                .execute(&mut conn)
                .await
                .map(|_| rotation)
                .map_err(map_err),
            Err(err) => Err(err),
        };
        let mut rotation = match committed {
            Ok(rotation) => rotation,
            Err(err) => {
                roll_back(&mut conn).await;
                return Err(err);
            }
        };
        drop(conn);
        if let Rotation::GraceSibling(sibling) = &mut rotation {
            sibling.owner = self.find_user_by_id(&sibling.retired.user_id).await?;
        }
        Ok(rotation)
    }

    async fn find_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        let row: Option<RefreshRow> = sqlx::query_as(&format!(
            "SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = ?"
        ))
        .bind(hash.as_str())
        .fetch_optional(&mut self.read().await?)
        .await
        .map_err(map_err)?;
        row.map(RefreshTokenRecord::try_from).transpose()
    }

    async fn revoke_refresh_token(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked = 1, revoked_at = ? \
             WHERE token_hash = ? AND revoked = 0",
        )
        .bind(millis(now))
        .bind(hash.as_str())
        .execute(&mut self.write().await?)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_user_refresh_tokens(
        &self,
        user_id: &UserId,
        keep_family: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked = 1, revoked_at = ? \
             WHERE user_id = ? AND revoked = 0 AND (? IS NULL OR family_id <> ?)",
        )
        .bind(millis(now))
        .bind(user_id.as_str())
        .bind(keep_family)
        .bind(keep_family)
        .execute(&mut self.write().await?)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn list_user_refresh_tokens(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<RefreshTokenRecord>> {
        let rows: Vec<RefreshRow> = sqlx::query_as(&format!(
            "SELECT {REFRESH_COLUMNS} FROM refresh_tokens \
             WHERE user_id = ? AND revoked = 0 AND expires_at > ? ORDER BY created_at DESC"
        ))
        .bind(user_id.as_str())
        .bind(millis(now))
        .fetch_all(&mut self.read().await?)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(RefreshTokenRecord::try_from).collect()
    }

    async fn refresh_family_alive(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (alive,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM refresh_tokens \
             WHERE user_id = ? AND family_id = ? AND revoked = 0 AND expires_at > ?)",
        )
        .bind(user_id.as_str())
        .bind(family_id)
        .bind(millis(now))
        .fetch_one(&mut self.read().await?)
        .await
        .map_err(map_err)?;
        Ok(alive)
    }

    async fn revoke_refresh_family(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked = 1, revoked_at = ? \
             WHERE user_id = ? AND family_id = ? AND revoked = 0",
        )
        .bind(millis(now))
        .bind(user_id.as_str())
        .bind(family_id)
        .execute(&mut self.write().await?)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

/// What presenting the inactive token `old_hash` means (see [`Rotation`]),
/// and its effect, on a connection inside `BEGIN IMMEDIATE`; the caller
/// commits. A grace sibling comes back without its owner (read after the
/// commit).
async fn decide_replay(
    conn: &mut Lease<'_>,
    old_hash: &TokenHash,
    now: DateTime<Utc>,
    grace: chrono::Duration,
    replacement: &NewRefreshToken,
) -> StoreResult<Rotation> {
    let old: Option<RefreshRow> = sqlx::query_as(&format!(
        "SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = ?"
    ))
    .bind(old_hash.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_err)?;
    let Some(old) = old.map(RefreshTokenRecord::try_from).transpose()? else {
        return Ok(Rotation::Rejected);
    };
    match old.replay_verdict(now, grace) {
        ReplayVerdict::Reject => return Ok(Rotation::Rejected),
        ReplayVerdict::RevokeFamily => {}
        ReplayVerdict::SiblingIfFamilyAlive => {
            let (alive,): (bool,) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM refresh_tokens \
                 WHERE user_id = ? AND family_id = ? AND revoked = 0 AND expires_at > ?)",
            )
            .bind(old.user_id.as_str())
            .bind(&old.family_id)
            .bind(millis(now))
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?;
            if !alive {
                return Ok(Rotation::Rejected);
            }
            // One sibling per retired token: the mark and the sibling
            // commit together, and the write lock admits one such
            // transaction at a time, so the next replay finds the mark and
            // revokes.
            let marked = sqlx::query(
                "UPDATE refresh_tokens SET sibling_issued = 1 \
                 WHERE token_hash = ? AND sibling_issued = 0",
            )
            .bind(old_hash.as_str())
            .execute(&mut *conn)
            .await
            .map_err(map_err)?
            .rows_affected();
            if marked == 1 {
                insert_refresh(&mut *conn, replacement).await?;
                return Ok(Rotation::GraceSibling(Rotated {
                    retired: old,
                    owner: None,
                }));
            }
        }
    }
    let revoked = sqlx::query(
        "UPDATE refresh_tokens SET revoked = 1, revoked_at = ? \
         WHERE user_id = ? AND family_id = ? AND revoked = 0",
    )
    .bind(millis(now))
    .bind(old.user_id.as_str())
    .bind(&old.family_id)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?
    .rows_affected();
    Ok(Rotation::ReuseDetected {
        token: old,
        revoked,
    })
}

fn one_time_table(purpose: TokenPurpose) -> &'static str {
    match purpose {
        TokenPurpose::PasswordReset => "reset_tokens",
        TokenPurpose::EmailVerification => "verification_tokens",
    }
}

/// UUIDv7 ids are time-ordered, which keeps the primary-key index
/// append-mostly.
fn new_user_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Inserts a user (parameters: [`bind_user`]) and returns its row.
fn insert_user_sql() -> String {
    format!(
        "INSERT INTO users (id, email, password_hash, name, role, verified, created_at, \
         updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {USER_COLUMNS}"
    )
}

fn bind_user<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'q>>,
    id: &'q str,
    user: &'q NewUser,
) -> sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'q>> {
    let created = millis(user.created_at);
    query
        .bind(id)
        .bind(user.email.as_str())
        .bind(user.password_hash.expose())
        .bind(user.name.as_str())
        .bind(user.role.as_str())
        .bind(user.verified)
        .bind(created)
        .bind(created)
}

/// Stores a user's single-use link, replacing the one before (parameters:
/// [`bind_link`]).
fn upsert_link_sql(purpose: TokenPurpose) -> String {
    format!(
        "INSERT INTO {} (user_id, token_hash, expires_at, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (user_id) DO UPDATE SET token_hash = excluded.token_hash, \
         expires_at = excluded.expires_at, created_at = excluded.created_at",
        one_time_table(purpose)
    )
}

#[async_trait]
impl OneTimeTokenStore for SqliteStore {
    async fn replace_one_time_token(
        &self,
        purpose: TokenPurpose,
        token: &NewOneTimeToken,
    ) -> StoreResult<()> {
        // One statement, atomic on its own: user_id is unique (migration
        // 12), so the user's previous link, if any, is overwritten in place.
        sqlx::query(&upsert_link_sql(purpose))
            .bind(token.user_id.as_str())
            .bind(token.token_hash.as_str())
            .bind(millis(token.expires_at))
            .bind(millis(token.created_at))
            .execute(&mut self.write().await?)
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
        let row: Option<(String,)> = sqlx::query_as(&format!(
            "SELECT user_id FROM {} WHERE token_hash = ? AND expires_at > ?",
            one_time_table(purpose)
        ))
        .bind(hash.as_str())
        .bind(millis(now))
        .fetch_optional(&mut self.read().await?)
        .await
        .map_err(map_err)?;
        Ok(row.map(|(user_id,)| UserId::new(user_id)))
    }

    async fn consume_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserId>> {
        let row: Option<(String, i64)> = sqlx::query_as(&format!(
            "DELETE FROM {} WHERE token_hash = ? RETURNING user_id, expires_at",
            one_time_table(purpose)
        ))
        .bind(hash.as_str())
        .fetch_optional(&mut self.write().await?)
        .await
        .map_err(map_err)?;
        Ok(row
            .filter(|(_, expires_at)| *expires_at > millis(now))
            .map(|(user_id, _)| UserId::new(user_id)))
    }

    async fn delete_user_one_time_tokens(
        &self,
        purpose: TokenPurpose,
        user_id: &UserId,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE user_id = ?",
            one_time_table(purpose)
        ))
        .bind(user_id.as_str())
        .execute(&mut self.write().await?)
        .await
        .map_err(map_err)?;
        Ok(())
    }
}

#[derive(FromRow)]
struct ThrottleRow {
    failures: i64,
    window_started_at: i64,
    locked_until: Option<i64>,
    lock_count: i64,
}

impl TryFrom<ThrottleRow> for LoginThrottle {
    type Error = StoreError;

    fn try_from(row: ThrottleRow) -> StoreResult<Self> {
        Ok(LoginThrottle {
            failures: u32::try_from(row.failures).unwrap_or(u32::MAX),
            window_started_at: from_millis(row.window_started_at)?,
            locked_until: row.locked_until.map(from_millis).transpose()?,
            lock_count: u32::try_from(row.lock_count).unwrap_or(u32::MAX),
        })
    }
}

const THROTTLE_COLUMNS: &str = "failures, window_started_at, locked_until, lock_count";

#[async_trait]
impl LoginThrottleStore for SqliteStore {
    async fn login_throttle(&self, key: &TokenHash) -> StoreResult<Option<LoginThrottle>> {
        let row: Option<ThrottleRow> = sqlx::query_as(&format!(
            "SELECT {THROTTLE_COLUMNS} FROM login_throttles WHERE key_hash = ?"
        ))
        .bind(key.as_str())
        .fetch_optional(&mut self.read().await?)
        .await
        .map_err(map_err)?;
        row.map(LoginThrottle::try_from).transpose()
    }

    async fn add_login_failure(
        &self,
        key: &TokenHash,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
    ) -> StoreResult<LoginThrottle> {
        // One statement, so concurrent failures are all counted.
        let row: ThrottleRow = sqlx::query_as(&format!(
            "INSERT INTO login_throttles (key_hash, failures, window_started_at) VALUES (?, 1, ?) \
             ON CONFLICT (key_hash) DO UPDATE SET \
               failures = CASE WHEN window_started_at <= ? THEN 1 ELSE failures + 1 END, \
               window_started_at = CASE WHEN window_started_at <= ? \
                 THEN excluded.window_started_at ELSE window_started_at END \
             RETURNING {THROTTLE_COLUMNS}"
        ))
        .bind(key.as_str())
        .bind(millis(now))
        .bind(millis(window_start))
        .bind(millis(window_start))
        .fetch_one(&mut self.write().await?)
        .await
        .map_err(map_err)?;
        row.try_into()
    }

    async fn lock_login(
        &self,
        key: &TokenHash,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE login_throttles SET locked_until = ?, lock_count = lock_count + 1, \
             failures = 0, window_started_at = ? \
             WHERE key_hash = ? AND (locked_until IS NULL OR locked_until <= ?)",
        )
        .bind(millis(until))
        .bind(millis(now))
        .bind(key.as_str())
        .bind(millis(now))
        .execute(&mut self.write().await?)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn clear_login_throttle(&self, key: &TokenHash) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_throttles WHERE key_hash = ?")
            .bind(key.as_str())
            .execute(&mut self.write().await?)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[derive(FromRow)]
struct WebSessionRow {
    id_hash: String,
    user_id: Option<String>,
    data: String,
    user_agent: Option<String>,
    ip_address: Option<String>,
    refresh_family: Option<String>,
    created_at: i64,
    last_used_at: i64,
    expires_at: i64,
}

impl TryFrom<WebSessionRow> for WebSessionRecord {
    type Error = StoreError;

    fn try_from(row: WebSessionRow) -> StoreResult<Self> {
        Ok(WebSessionRecord {
            id_hash: TokenHash::from_stored(row.id_hash),
            user_id: row.user_id.map(UserId::new),
            data: row.data,
            user_agent: row.user_agent,
            ip_address: row.ip_address,
            refresh_family: row.refresh_family,
            created_at: from_millis(row.created_at)?,
            last_used_at: from_millis(row.last_used_at)?,
            expires_at: from_millis(row.expires_at)?,
        })
    }
}

const WEB_SESSION_COLUMNS: &str = "id_hash, user_id, data, user_agent, ip_address, \
     refresh_family, created_at, last_used_at, expires_at";

#[async_trait]
impl WebSessionStore for SqliteStore {
    async fn insert_web_session(&self, s: &WebSessionRecord) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO web_sessions ({WEB_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(s.id_hash.as_str())
        .bind(s.user_id.as_ref().map(UserId::as_str))
        .bind(&s.data)
        .bind(&s.user_agent)
        .bind(&s.ip_address)
        .bind(&s.refresh_family)
        .bind(millis(s.created_at))
        .bind(millis(s.last_used_at))
        .bind(millis(s.expires_at))
        .execute(&mut self.write().await?)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn update_web_session(
        &self,
        s: &WebSessionRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE web_sessions SET user_id = ?, data = ?, user_agent = ?, ip_address = ?, \
             refresh_family = ?, last_used_at = ?, expires_at = ? \
             WHERE id_hash = ? AND expires_at > ?",
        )
        .bind(s.user_id.as_ref().map(UserId::as_str))
        .bind(&s.data)
        .bind(&s.user_agent)
        .bind(&s.ip_address)
        .bind(&s.refresh_family)
        .bind(millis(s.last_used_at))
        .bind(millis(s.expires_at))
        .bind(s.id_hash.as_str())
        .bind(millis(now))
        .execute(&mut self.write().await?)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn load_web_session(
        &self,
        id_hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebSessionRecord>> {
        let row: Option<WebSessionRow> = sqlx::query_as(&format!(
            "SELECT {WEB_SESSION_COLUMNS} FROM web_sessions WHERE id_hash = ? AND expires_at > ?"
        ))
        .bind(id_hash.as_str())
        .bind(millis(now))
        .fetch_optional(&mut self.read().await?)
        .await
        .map_err(map_err)?;
        row.map(WebSessionRecord::try_from).transpose()
    }

    async fn delete_web_session(&self, id_hash: &TokenHash) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE id_hash = ?")
            .bind(id_hash.as_str())
            .execute(&mut self.write().await?)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_user_web_sessions(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<WebSessionRecord>> {
        let rows: Vec<WebSessionRow> = sqlx::query_as(&format!(
            "SELECT {WEB_SESSION_COLUMNS} FROM web_sessions WHERE user_id = ? AND expires_at > ? \
             ORDER BY last_used_at DESC"
        ))
        .bind(user_id.as_str())
        .bind(millis(now))
        .fetch_all(&mut self.read().await?)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(WebSessionRecord::try_from).collect()
    }

    async fn delete_user_web_sessions(
        &self,
        user_id: &UserId,
        keep: Option<&TokenHash>,
    ) -> StoreResult<u64> {
        let keep = keep.map(TokenHash::as_str);
        let done = sqlx::query(
            "DELETE FROM web_sessions WHERE user_id = ? AND (? IS NULL OR id_hash <> ?)",
        )
        .bind(user_id.as_str())
        .bind(keep)
        .bind(keep)
        .execute(&mut self.write().await?)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn delete_family_web_sessions(
        &self,
        user_id: &UserId,
        family_id: &str,
    ) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE user_id = ? AND refresh_family = ?")
            .bind(user_id.as_str())
            .bind(family_id)
            .execute(&mut self.write().await?)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

/// Rows per INSERT statement: 14 parameters each stays far below SQLite's
/// limit of 32,766.
const AUDIT_ROWS_PER_INSERT: usize = 500;

#[derive(FromRow)]
struct AuditRow {
    seq: i64,
    time: i64,
    event: String,
    outcome: String,
    user_id: Option<String>,
    email: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    detail: Option<String>,
    version: i64,
    prev_hash: String,
    hash: String,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> StoreResult<Self> {
        let damaged = |what: &str| StoreError::Other(anyhow::anyhow!("audit_events: {what}"));
        Ok(AuditRecord {
            seq: u64::try_from(row.seq).map_err(|_| damaged("negative seq"))?,
            time: from_millis(row.time)?,
            event: AuditEvent::parse(&row.event).ok_or_else(|| damaged("unknown event"))?,
            outcome: AuditOutcome::parse(&row.outcome).ok_or_else(|| damaged("unknown outcome"))?,
            user_id: row.user_id,
            email: row.email,
            ip: row.ip,
            user_agent: row.user_agent,
            request_id: row.request_id,
            detail: row.detail,
            version: HashVersion::from_number(row.version)
                .ok_or_else(|| damaged("unknown record version"))?,
            prev_hash: row.prev_hash,
            hash: row.hash,
        })
    }
}

const AUDIT_COLUMNS: &str = "seq, time, event, outcome, user_id, email, ip, user_agent, \
     request_id, detail, version, prev_hash, hash";

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit_events(
        &self,
        events: &[NewAuditEvent],
        key: &AuditKey,
    ) -> StoreResult<Vec<ChainLink>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut writer = self.write().await?;
        let appended = append_audit(&mut writer, events, key).await;
        if appended.is_err() {
            // Whatever state the failure left (SQLite may already have
            // rolled the transaction back itself, e.g. on a full disk), the
            // connection goes back outside a transaction, or is replaced.
            roll_back(&mut writer).await;
        }
        appended
    }

    async fn query_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events \
             WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR event = ?2) \
             AND (?3 IS NULL OR time >= ?3) AND (?4 IS NULL OR time < ?4) \
             AND (?5 IS NULL OR seq < ?5) ORDER BY seq DESC LIMIT ?6"
        ))
        .bind(&query.user_id)
        .bind(query.event.map(AuditEvent::as_str))
        .bind(query.since.map(millis))
        .bind(query.until.map(millis))
        .bind(query.before_seq.map(seq_param))
        .bind(i64::from(query.limit))
        .fetch_all(&mut self.read().await?)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(AuditRecord::try_from).collect()
    }

    async fn audit_events_after(&self, after: u64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(seq_param(after))
        .bind(i64::from(limit))
        .fetch_all(&mut self.read().await?)
        .await
        .map_err(map_err)?;
        rows.into_iter().map(AuditRecord::try_from).collect()
    }
}

/// Appends `events` in one transaction of explicit statements on the
/// writer. Not sqlx's `begin()`: sqlx counts open transactions itself, and
/// when SQLite had already ended one (a full disk rolls the transaction
/// back), sqlx's ROLLBACK failed, its count stayed at one, and every later
/// `begin` on the connection failed: the trail stopped for good after one
/// full disk (issue 16). Here the caller rolls back (or discards the
/// connection) on any error, and SQLite's own state is the only state.
async fn append_audit(
    conn: &mut Lease<'_>,
    events: &[NewAuditEvent],
    key: &AuditKey,
) -> StoreResult<Vec<ChainLink>> {
    // IMMEDIATE takes the write lock before the head is read, so another
    // process on the same file (the CLI beside the server) cannot append
    // between our read and our insert; it waits in the busy handler. The
    // BEGIN and the read are one command to the writer's thread.
    //
    // The head, and whether this very batch is already stored: it is
    // appended in one transaction, so after an error whose commit did
    // happen, its first event is there and so are all the others.
    let heads: Vec<(Option<i64>, Option<String>, bool)> = sqlx::query_as(
        "BEGIN IMMEDIATE; \
         SELECT (SELECT seq FROM audit_events ORDER BY seq DESC LIMIT 1), \
                (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1), \
                EXISTS (SELECT 1 FROM audit_events WHERE event_id = ?)",
    )
    .bind(&events[0].id)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let Some((head_seq, head_hash, stored)) = heads.into_iter().next() else {
        return Err(StoreError::Other(anyhow::anyhow!(
            "audit_events: the head query returned no row"
        )));
    };
    let negative = || StoreError::Other(anyhow::anyhow!("audit_events: negative seq"));
    if stored {
        // Its records are consecutive from the first event's seq on.
        let links: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, hash FROM audit_events \
             WHERE seq >= (SELECT seq FROM audit_events WHERE event_id = ?) \
             ORDER BY seq LIMIT ?",
        )
        .bind(&events[0].id)
        .bind(i64::try_from(events.len()).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        sqlx::query("COMMIT")
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        return links
            .into_iter()
            .map(|(seq, hash)| {
                let seq = u64::try_from(seq).map_err(|_| negative())?;
                Ok(ChainLink { seq, hash })
            })
            .collect();
    }
    let (mut seq, mut prev) = match (head_seq, head_hash) {
        (Some(seq), Some(hash)) => (u64::try_from(seq).map_err(|_| negative())?, hash),
        _ => (0, GENESIS_HASH.to_owned()),
    };
    let records: Vec<(&str, AuditRecord)> = events
        .iter()
        .map(|event| {
            seq += 1;
            let record = AuditRecord::chain(seq, event, &prev, key);
            prev.clone_from(&record.hash);
            (event.id.as_str(), record)
        })
        .collect();
    // Multi-row INSERTs: under load a batch is hundreds of events, and
    // each statement is a round trip to the writer thread. Chunks keep
    // within SQLite's bound on parameters (13 per row); the varying
    // text is not worth a slot in the prepared-statement cache. The last
    // one carries the COMMIT, saving a round trip.
    let chunks = records.chunks(AUDIT_ROWS_PER_INSERT).count();
    for (i, chunk) in records.chunks(AUDIT_ROWS_PER_INSERT).enumerate() {
        let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let commit = if i + 1 == chunks { "; COMMIT" } else { "" };
        let sql =
            format!("INSERT INTO audit_events (event_id, {AUDIT_COLUMNS}) VALUES {values}{commit}");
        let mut insert = sqlx::query(&sql).persistent(false);
        for (id, record) in chunk {
            insert = insert
                .bind(*id)
                .bind(seq_param(record.seq))
                .bind(millis(record.time))
                .bind(record.event.as_str())
                .bind(record.outcome.as_str())
                .bind(&record.user_id)
                .bind(&record.email)
                .bind(&record.ip)
                .bind(&record.user_agent)
                .bind(&record.request_id)
                .bind(&record.detail)
                .bind(record.version.number())
                .bind(&record.prev_hash)
                .bind(&record.hash);
        }
        insert.execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(records
        .into_iter()
        .map(|(_, record)| ChainLink {
            seq: record.seq,
            hash: record.hash,
        })
        .collect())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&mut self.read().await?)
            .await
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
        .await
        .map_err(map_err)?;
        Ok(())
    }

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
            "web_sessions",
            "rate_limits",
        ] {
            purged += sqlx::query(&format!("DELETE FROM {table} WHERE expires_at <= ?"))
                .bind(now)
                .execute(&mut self.write().await?)
                .await
                .map_err(map_err)?
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
        .await
        .map_err(map_err)?
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
        let kind = |err: sqlx::Error| match map_err(err) {
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

    /// Migration 12 makes `user_id` unique in the one-time token tables. A
    /// database from before it must migrate even if it somehow holds two
    /// links of one user, keeping the newer.
    #[tokio::test]
    async fn one_link_per_user_migration_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/old.db", dir.path().display());
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let before: Vec<_> = MIGRATOR
            .iter()
            .filter(|m| m.version < 20261124000012)
            .cloned()
            .collect();
        let mut old = sqlx::migrate::Migrator::new(std::path::Path::new("./migrations"))
            .await
            .unwrap();
        old.migrations = std::borrow::Cow::Owned(before);
        old.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, name, role, verified, created_at, \
             updated_at) VALUES ('u1', 'a@example.com', 'x', 'A', 'doctor', 0, 0, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        for table in ["reset_tokens", "verification_tokens"] {
            for hash in ["older", "newer"] {
                sqlx::query(&format!(
                    "INSERT INTO {table} (user_id, token_hash, expires_at, created_at) \
                     VALUES ('u1', ?, 1, 1)"
                ))
                .bind(hash)
                .execute(&pool)
                .await
                .unwrap();
            }
        }
        pool.close().await;

        let store = SqliteStore::connect(&url).await.unwrap();
        for table in ["reset_tokens", "verification_tokens"] {
            let left: Vec<(String,)> = sqlx::query_as(&format!("SELECT token_hash FROM {table}"))
                .fetch_all(&mut store.read().await.unwrap())
                .await
                .unwrap();
            assert_eq!(left, vec![("newer".to_owned(),)], "{table}");
        }
    }
}
