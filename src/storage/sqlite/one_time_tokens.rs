//! `reset_tokens` and `verification_tokens` on SQLite: the
//! [`OneTimeTokenStore`], one table per [`TokenPurpose`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{millis, SqliteStore};
use crate::domain::{TokenHash, UserId};
use crate::storage::{NewOneTimeToken, OneTimeTokenStore, StoreResult, TokenPurpose};

fn one_time_table(purpose: TokenPurpose) -> &'static str {
    match purpose {
        TokenPurpose::PasswordReset => "reset_tokens",
        TokenPurpose::EmailVerification => "verification_tokens",
    }
}

/// Stores a user's single-use link, replacing the one before (parameters:
/// [`bind_link`]).
pub(super) fn upsert_link_sql(purpose: TokenPurpose) -> String {
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
            .await?;
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
        .await?;
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
        .await?;
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
        .await?;
        Ok(())
    }
}
