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
        TokenPurpose::MfaChallenge => "mfa_challenges",
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

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;

    use super::super::MIGRATOR;
    use super::*;

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
