//! `emergency_uses` on SQLite: the [`EmergencyStore`]. One open use per
//! user is the partial unique index `emergency_uses_open`; each end and
//! review is one conditional UPDATE, so concurrent callers cannot both win.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{millis, SqliteStore};
use crate::domain::{EmergencyEnd, EmergencyReview, EmergencyUse, UserId};
use crate::storage::{
    EmergencyFilter, EmergencyStore, StoreError, StoreResult, StoredEmergencyUse,
};

type Row = StoredEmergencyUse<i64>;

const COLUMNS: &str = "id, user_id, reason, started_at, expires_at, ended_at, ended_how, \
                       reviewed_at, reviewed_by, review_note";

impl SqliteStore {
    async fn emergency_uses_where(
        &self,
        condition: &str,
        bind: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<EmergencyUse>> {
        let sql = format!("SELECT {COLUMNS} FROM emergency_uses WHERE {condition} LIMIT ?");
        let mut query = sqlx::query_as::<_, Row>(&sql);
        if let Some(value) = bind {
            query = query.bind(value);
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&mut self.read().await?)
            .await?;
        rows.into_iter().map(EmergencyUse::try_from).collect()
    }
}

#[async_trait]
impl EmergencyStore for SqliteStore {
    async fn start_emergency_use(&self, started: &EmergencyUse) -> StoreResult<bool> {
        let row = Row::new(started);
        let inserted = sqlx::query(&format!(
            "INSERT INTO emergency_uses ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&row.id)
        .bind(&row.user_id)
        .bind(&row.reason)
        .bind(row.started_at)
        .bind(row.expires_at)
        .bind(row.ended_at)
        .bind(&row.ended_how)
        .bind(row.reviewed_at)
        .bind(&row.reviewed_by)
        .bind(&row.review_note)
        .execute(&mut self.write().await?)
        .await;
        match inserted {
            Ok(_) => Ok(true),
            // emergency_uses_open: the user has an open use.
            Err(e) => match StoreError::from(e) {
                StoreError::Conflict => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn open_emergency_use(&self, user: &UserId) -> StoreResult<Option<EmergencyUse>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM emergency_uses WHERE user_id = ? AND ended_at IS NULL"
        ))
        .bind(user.as_str())
        .fetch_optional(&mut self.read().await?)
        .await?;
        row.map(EmergencyUse::try_from).transpose()
    }

    async fn end_emergency_use(
        &self,
        id: &str,
        at: DateTime<Utc>,
        how: EmergencyEnd,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE emergency_uses SET ended_at = ?, ended_how = ? \
             WHERE id = ? AND ended_at IS NULL",
        )
        .bind(millis(at))
        .bind(how.as_str())
        .bind(id)
        .execute(&mut self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn expired_open_emergency_uses(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<EmergencyUse>> {
        self.emergency_uses_where(
            "ended_at IS NULL AND expires_at <= ? ORDER BY expires_at, id",
            Some(millis(now)),
            limit,
        )
        .await
    }

    async fn find_emergency_use(&self, id: &str) -> StoreResult<Option<EmergencyUse>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM emergency_uses WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&mut self.read().await?)
        .await?;
        row.map(EmergencyUse::try_from).transpose()
    }

    async fn list_emergency_uses(
        &self,
        filter: EmergencyFilter,
        limit: u32,
    ) -> StoreResult<Vec<EmergencyUse>> {
        let condition = match filter {
            EmergencyFilter::All => "1 ORDER BY started_at DESC, id DESC",
            EmergencyFilter::Unreviewed => "reviewed_at IS NULL ORDER BY started_at, id",
            EmergencyFilter::Reviewed => {
                "reviewed_at IS NOT NULL ORDER BY started_at DESC, id DESC"
            }
        };
        self.emergency_uses_where(condition, None, limit).await
    }

    async fn review_emergency_use(&self, id: &str, review: &EmergencyReview) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE emergency_uses SET reviewed_at = ?, reviewed_by = ?, review_note = ? \
             WHERE id = ? AND reviewed_at IS NULL",
        )
        .bind(millis(review.at))
        .bind(review.by.as_str())
        .bind(&review.note)
        .bind(id)
        .execute(&mut self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn count_unreviewed_emergency_uses(
        &self,
        started_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM emergency_uses WHERE reviewed_at IS NULL AND started_at < ?",
        )
        .bind(millis(started_before))
        .fetch_one(&mut self.read().await?)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
