//! `email_queue` on SQLite: the durable outbox (see `storage::email_queue`).
//!
//! Every write is one statement or one transaction sent as one command to
//! the writer, so a link and its message commit together, and a claim is a
//! single `UPDATE … RETURNING`, which SQLite's one write lock makes
//! exclusive across connections and processes alike.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::one_time_tokens::upsert_link_sql;
use super::{from_millis, millis, roll_back, SqliteStore};
use crate::domain::{User, UserId};
use crate::storage::email_queue::{require_verification_link, StoredEmail};
use crate::storage::{
    EmailQueueStore, NewOneTimeToken, NewQueuedEmail, NewUser, QueueStats, QueuedEmail, QueuedLink,
    StoreResult, TokenPurpose,
};

/// Inserts one message (parameters: [`bind_email`]), ending with `;` so it
/// can sit inside a multi-statement transaction.
pub(super) const INSERT_SQL: &str = "INSERT INTO email_queue \
     (id, kind, user_id, link_purpose, link_hash, payload, created_at, due_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?); ";

/// Binds [`INSERT_SQL`]'s parameters; `user_id` overrides the message's own
/// (a new user's id, which the message could not know).
pub(super) fn bind_email<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'q>>,
    email: &'q NewQueuedEmail,
    user_id: Option<&'q str>,
) -> sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'q>> {
    let (link_purpose, link_hash) = QueuedLink::to_stored(email.link.as_ref());
    query
        .bind(&email.id)
        .bind(&email.kind)
        .bind(user_id.or(email.user_id.as_ref().map(UserId::as_str)))
        .bind(link_purpose)
        .bind(link_hash)
        .bind(&email.payload)
        .bind(millis(email.created_at))
        .bind(millis(email.due_at))
}

/// An `email_queue` row.
type QueueRow = StoredEmail<i64>;

impl SqliteStore {
    /// Runs a write ending in `WHERE id = ? AND claimed_by = ?` given every
    /// parameter before those two; false when `claim` no longer holds it.
    async fn if_claimed<'q>(
        &self,
        write: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        id: &'q str,
        claim: &'q str,
    ) -> StoreResult<bool> {
        let done = write
            .bind(id)
            .bind(claim)
            .execute(&mut self.write().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl EmailQueueStore for SqliteStore {
    async fn queue_email(&self, email: &NewQueuedEmail) -> StoreResult<()> {
        // `query_as` only to share `bind_email`; the INSERT returns no row.
        bind_email(sqlx::query_as::<_, (i64,)>(INSERT_SQL), email, None)
            .fetch_optional(&mut self.write().await?)
            .await?;
        Ok(())
    }

    async fn replace_link_and_queue(
        &self,
        purpose: TokenPurpose,
        token: &NewOneTimeToken,
        email: &NewQueuedEmail,
    ) -> StoreResult<()> {
        let sql = format!(
            "BEGIN IMMEDIATE; {}; {INSERT_SQL}COMMIT",
            upsert_link_sql(purpose)
        );
        let query = sqlx::query_as::<_, (i64,)>(&sql)
            .bind(token.user_id.as_str())
            .bind(token.token_hash.as_str())
            .bind(millis(token.expires_at))
            .bind(millis(token.created_at));
        let mut conn = self.write().await?;
        if let Err(err) = bind_email(query, email, None).fetch_all(&mut conn).await {
            roll_back(&mut conn).await;
            return Err(err.into());
        }
        Ok(())
    }

    async fn create_user_and_queue(
        &self,
        user: &NewUser,
        email: &NewQueuedEmail,
    ) -> StoreResult<User> {
        require_verification_link(user)?;
        self.create_user_with(user, Some(email)).await
    }

    async fn claim_due_emails(
        &self,
        claim: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueuedEmail>> {
        let rows: Vec<QueueRow> = sqlx::query_as(
            "UPDATE email_queue SET due_at = ?, claimed_by = ?, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM email_queue WHERE due_at <= ? \
                          ORDER BY due_at LIMIT ?) \
             RETURNING id, kind, user_id, link_purpose, link_hash, payload, created_at, \
                       due_at, attempts, claimed_by",
        )
        .bind(millis(lease_until))
        .bind(claim)
        .bind(millis(now))
        .bind(i64::from(limit))
        .fetch_all(&mut self.write().await?)
        .await?;
        rows.into_iter().map(QueuedEmail::try_from).collect()
    }

    async fn finish_email(&self, id: &str, claim: &str) -> StoreResult<bool> {
        let delete = sqlx::query("DELETE FROM email_queue WHERE id = ? AND claimed_by = ?");
        self.if_claimed(delete, id, claim).await
    }

    async fn retry_email_at(
        &self,
        id: &str,
        claim: &str,
        due_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let release = sqlx::query(
            "UPDATE email_queue SET due_at = ?, claimed_by = NULL \
             WHERE id = ? AND claimed_by = ?",
        )
        .bind(millis(due_at));
        self.if_claimed(release, id, claim).await
    }

    async fn email_queue_stats(&self) -> StoreResult<QueueStats> {
        let (depth, oldest, next): (i64, Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(created_at), MIN(due_at) FROM email_queue")
                .fetch_one(&mut self.read().await?)
                .await?;
        Ok(QueueStats {
            depth: u64::try_from(depth).unwrap_or(0),
            oldest_created_at: oldest.map(from_millis).transpose()?,
            next_due_at: next.map(from_millis).transpose()?,
        })
    }
}
