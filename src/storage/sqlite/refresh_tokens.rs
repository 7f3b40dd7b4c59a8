//! `refresh_tokens` on SQLite: the [`RefreshTokenStore`]. Rotating an
//! active token goes through the batcher in `rotation`; a replay is decided
//! here, in a transaction of its own.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::connections::Lease;
use super::{millis, roll_back, rotation, SqliteStore};
use crate::domain::{TokenHash, UserId};
use crate::storage::refresh_tokens::{
    act_on_replay, with_sibling_owner, ReplaySteps, StoredRefreshToken,
};
use crate::storage::{
    NewRefreshToken, RefreshTokenRecord, RefreshTokenStore, Rotation, StoreError, StoreResult,
};

/// A `refresh_tokens` row.
pub(super) type RefreshRow = StoredRefreshToken<i64>;

pub(super) const REFRESH_COLUMNS: &str =
    "user_id, jti, token_hash, family_id, user_agent, ip_address, \
     revoked, replaced_by, revoked_at, sibling_issued, expires_at, created_at";

/// The parameters of one `refresh_tokens` row, in the column order of
/// `insert_refresh` (user_id, jti, token_hash, family_id, user_agent,
/// ip_address, expires_at, created_at; `revoked` is always 0).
pub(super) fn bind_new_refresh<'q>(
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
    bind_new_refresh(insert, token).execute(executor).await?;
    Ok(())
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
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
        let committed = match decide_replay(&mut conn, old_hash, now, grace, replacement).await {
            Ok(rotation) => sqlx::query("COMMIT")
                .execute(&mut conn)
                .await
                .map(|_| rotation)
                .map_err(StoreError::from),
            Err(err) => Err(err),
        };
        let rotation = match committed {
            Ok(rotation) => rotation,
            Err(err) => {
                roll_back(&mut conn).await;
                return Err(err);
            }
        };
        drop(conn);
        with_sibling_owner(self, rotation).await
    }

    async fn find_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        find_refresh(&mut self.read().await?, hash).await
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
        .await?;
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
        .await?;
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
        .await?;
        rows.into_iter().map(RefreshTokenRecord::try_from).collect()
    }

    async fn refresh_family_alive(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        family_alive(&mut self.read().await?, user_id, family_id, now).await
    }

    async fn revoke_refresh_family(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        revoke_family(&mut self.write().await?, user_id, family_id, now).await
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
    let old = find_refresh(&mut *conn, old_hash).await?;
    let mut steps = InTransaction {
        conn,
        now,
        replacement,
    };
    act_on_replay(&mut steps, old, now, grace).await
}

/// The steps of a replay, on the connection of the caller's transaction.
struct InTransaction<'c, 'l> {
    conn: &'c mut Lease<'l>,
    now: DateTime<Utc>,
    replacement: &'c NewRefreshToken,
}

#[async_trait]
impl<'c, 'l> ReplaySteps for InTransaction<'c, 'l> {
    async fn family_alive(&mut self, token: &RefreshTokenRecord) -> StoreResult<bool> {
        family_alive(&mut *self.conn, &token.user_id, &token.family_id, self.now).await
    }

    async fn issue_sibling(&mut self, token: &RefreshTokenRecord) -> StoreResult<bool> {
        // One sibling per retired token: the mark and the sibling commit
        // together, and the write lock admits one such transaction at a
        // time, so the next replay finds the mark and revokes.
        let marked = sqlx::query(
            "UPDATE refresh_tokens SET sibling_issued = 1 \
             WHERE token_hash = ? AND sibling_issued = 0",
        )
        .bind(token.token_hash.as_str())
        .execute(&mut *self.conn)
        .await?
        .rows_affected();
        if marked == 1 {
            insert_refresh(&mut *self.conn, self.replacement).await?;
        }
        Ok(marked == 1)
    }

    async fn revoke_family(&mut self, token: &RefreshTokenRecord) -> StoreResult<u64> {
        revoke_family(&mut *self.conn, &token.user_id, &token.family_id, self.now).await
    }
}

/// The record with that hash, whatever its state.
async fn find_refresh<'e, E>(
    executor: E,
    hash: &TokenHash,
) -> StoreResult<Option<RefreshTokenRecord>>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let row: Option<RefreshRow> = sqlx::query_as(&format!(
        "SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = ?"
    ))
    .bind(hash.as_str())
    .fetch_optional(executor)
    .await?;
    row.map(RefreshTokenRecord::try_from).transpose()
}

/// Whether the family has an active token at `now`.
async fn family_alive<'e, E>(
    executor: E,
    user_id: &UserId,
    family_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let (alive,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM refresh_tokens \
         WHERE user_id = ? AND family_id = ? AND revoked = 0 AND expires_at > ?)",
    )
    .bind(user_id.as_str())
    .bind(family_id)
    .bind(millis(now))
    .fetch_one(executor)
    .await?;
    Ok(alive)
}

/// Revokes every active token of the family; returns how many.
async fn revoke_family<'e, E>(
    executor: E,
    user_id: &UserId,
    family_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<u64>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let done = sqlx::query(
        "UPDATE refresh_tokens SET revoked = 1, revoked_at = ? \
         WHERE user_id = ? AND family_id = ? AND revoked = 0",
    )
    .bind(millis(now))
    .bind(user_id.as_str())
    .bind(family_id)
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}
