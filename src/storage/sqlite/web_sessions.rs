//! `web_sessions` on SQLite: the [`WebSessionStore`] of portal sessions,
//! keyed by the hash of the session id.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{millis, SqliteStore};
use crate::domain::{TokenHash, UserId};
use crate::storage::web_sessions::StoredWebSession;
use crate::storage::{StoreResult, WebSessionRecord, WebSessionStore};

/// A `web_sessions` row.
type WebSessionRow = StoredWebSession<i64>;

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
        .await?;
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
        .await?;
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
        .await?;
        row.map(WebSessionRecord::try_from).transpose()
    }

    async fn delete_web_session(&self, id_hash: &TokenHash) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE id_hash = ?")
            .bind(id_hash.as_str())
            .execute(&mut self.write().await?)
            .await?;
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
        .await?;
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
        .await?;
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
            .await?;
        Ok(done.rows_affected())
    }
}
