//! `invitations` on SQLite: the [`InvitationStore`]. Each call is one
//! statement, atomic on its own; taking an invitation is a `DELETE ...
//! RETURNING`, so of concurrent accepts only one gets the row.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{millis, SqliteStore};
use crate::domain::{EmailAddress, TokenHash};
use crate::storage::{
    Invitation, InvitationStore, NewInvitation, StoreResult, StoredInvitation,
    INVITATIONS_LISTED_MAX,
};

type InvitationRow = StoredInvitation<i64>;

const COLUMNS: &str = "id, email, name, role, token_hash, invited_by, created_at, expires_at, \
                       resend_count, last_sent_at";

fn decode(row: Option<InvitationRow>) -> StoreResult<Option<Invitation>> {
    row.map(Invitation::try_from).transpose()
}

#[async_trait]
impl InvitationStore for SqliteStore {
    async fn create_invitation(&self, invitation: &NewInvitation) -> StoreResult<Invitation> {
        let row = InvitationRow::new(invitation);
        let row: InvitationRow = sqlx::query_as(&format!(
            "INSERT INTO invitations ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             RETURNING {COLUMNS}"
        ))
        .bind(&row.id)
        .bind(&row.email)
        .bind(&row.name)
        .bind(&row.role)
        .bind(&row.token_hash)
        .bind(&row.invited_by)
        .bind(row.created_at)
        .bind(row.expires_at)
        .bind(row.resend_count)
        .bind(row.last_sent_at)
        .fetch_one(&mut self.write().await?)
        .await?;
        Invitation::try_from(row)
    }

    async fn list_invitations(&self) -> StoreResult<Vec<Invitation>> {
        let rows: Vec<InvitationRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM invitations ORDER BY id LIMIT ?"
        ))
        .bind(i64::from(INVITATIONS_LISTED_MAX))
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.into_iter().map(Invitation::try_from).collect()
    }

    async fn find_invitation(&self, id: &str) -> StoreResult<Option<Invitation>> {
        let row = sqlx::query_as(&format!("SELECT {COLUMNS} FROM invitations WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut self.read().await?)
            .await?;
        decode(row)
    }

    async fn find_invitation_by_email(
        &self,
        email: &EmailAddress,
    ) -> StoreResult<Option<Invitation>> {
        let row = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM invitations WHERE email = ?"
        ))
        .bind(email.as_str())
        .fetch_optional(&mut self.read().await?)
        .await?;
        decode(row)
    }

    async fn find_invitation_by_token(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Invitation>> {
        let row = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM invitations WHERE token_hash = ? AND expires_at > ?"
        ))
        .bind(hash.as_str())
        .bind(millis(now))
        .fetch_optional(&mut self.read().await?)
        .await?;
        decode(row)
    }

    async fn renew_invitation(
        &self,
        id: &str,
        hash: &TokenHash,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Invitation>> {
        let row = sqlx::query_as(&format!(
            "UPDATE invitations SET token_hash = ?, expires_at = ?, \
             resend_count = resend_count + 1, last_sent_at = ? WHERE id = ? RETURNING {COLUMNS}"
        ))
        .bind(hash.as_str())
        .bind(millis(expires_at))
        .bind(millis(now))
        .bind(id)
        .fetch_optional(&mut self.write().await?)
        .await?;
        decode(row)
    }

    async fn take_invitation(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Invitation>> {
        let row = sqlx::query_as(&format!(
            "DELETE FROM invitations WHERE token_hash = ? AND expires_at > ? RETURNING {COLUMNS}"
        ))
        .bind(hash.as_str())
        .bind(millis(now))
        .fetch_optional(&mut self.write().await?)
        .await?;
        decode(row)
    }

    async fn delete_invitation(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM invitations WHERE id = ?")
            .bind(id)
            .execute(&mut self.write().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
