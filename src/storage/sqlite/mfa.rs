//! Second factors on SQLite (migration 20261206000500): `mfa_totp`,
//! `mfa_recovery_codes` and `passkeys` (and, from migration
//! 20261206000700, `passkey_ceremonies`). Every "use" is one conditional
//! statement on the single writer, so concurrent uses of one code are
//! serialised and only the first matches.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{from_millis, millis, roll_back, SqliteStore};
use crate::domain::mfa::{RecoveryCodeHash, SealedTotpSecret, TimeStep};
use crate::domain::TokenHash;
use crate::domain::UserId;
use crate::storage::{
    step_param, stored_count, CeremonyKind, MfaStore, Passkey, PasskeyCeremony, StoreResult,
    StoredCeremony, StoredPasskey, StoredTotp, TotpFactor,
};

const PASSKEY_COLUMNS: &str =
    "id, user_id, credential_id, name, credential, counter, created_at, last_used_at";

#[async_trait]
impl MfaStore for SqliteStore {
    async fn put_pending_totp(
        &self,
        user: &UserId,
        secret: &SealedTotpSecret,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // The upsert's WHERE leaves a confirmed row as it is (0 rows).
        let done = sqlx::query(
            "INSERT INTO mfa_totp (user_id, secret, confirmed, created_at) VALUES (?, ?, 0, ?) \
             ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
               created_at = excluded.created_at, confirmed_at = NULL, last_step = NULL \
             WHERE confirmed = 0",
        )
        .bind(user.as_str())
        .bind(secret.as_str())
        .bind(millis(now))
        .execute(&mut self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn totp_factor(&self, user: &UserId) -> StoreResult<Option<TotpFactor>> {
        let row: Option<StoredTotp<i64>> = sqlx::query_as(
            "SELECT secret, confirmed, created_at, confirmed_at, last_step \
             FROM mfa_totp WHERE user_id = ?",
        )
        .bind(user.as_str())
        .fetch_optional(&mut self.read().await?)
        .await?;
        row.map(|row| row.into_factor(from_millis)).transpose()
    }

    async fn confirm_totp(
        &self,
        user: &UserId,
        secret: &SealedTotpSecret,
        step: TimeStep,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE mfa_totp SET confirmed = 1, confirmed_at = ?, last_step = ? \
             WHERE user_id = ? AND confirmed = 0 AND secret = ?",
        )
        .bind(millis(now))
        .bind(step_param(step))
        .bind(user.as_str())
        .bind(secret.as_str())
        .execute(&mut self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn accept_totp_step(&self, user: &UserId, step: TimeStep) -> StoreResult<bool> {
        // A confirmed factor always has a last step (its confirming code's).
        let done = sqlx::query(
            "UPDATE mfa_totp SET last_step = ?1 WHERE user_id = ?2 AND confirmed = 1 \
             AND last_step < ?1",
        )
        .bind(step_param(step))
        .bind(user.as_str())
        .execute(&mut self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_totp(&self, user: &UserId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM mfa_totp WHERE user_id = ?")
            .bind(user.as_str())
            .execute(&mut self.write().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One transaction sent as one command: the old set is gone exactly
    /// when the new one is there.
    async fn replace_recovery_codes(
        &self,
        user: &UserId,
        codes: &[RecoveryCodeHash],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let inserts = if codes.is_empty() {
            String::new()
        } else {
            let rows = vec!["(?, ?, ?)"; codes.len()].join(", ");
            format!(
                "INSERT INTO mfa_recovery_codes (user_id, code_hash, created_at) VALUES {rows}; "
            )
        };
        let sql = format!(
            "BEGIN IMMEDIATE; DELETE FROM mfa_recovery_codes WHERE user_id = ?; {inserts}COMMIT"
        );
        let mut query = sqlx::query(&sql).bind(user.as_str());
        for code in codes {
            query = query
                .bind(user.as_str())
                .bind(code.as_str())
                .bind(millis(now));
        }
        let mut conn = self.write().await?;
        if let Err(err) = query.execute(&mut conn).await {
            roll_back(&mut conn).await;
            return Err(err.into());
        }
        Ok(())
    }

    async fn use_recovery_code(&self, user: &UserId, code: &RecoveryCodeHash) -> StoreResult<bool> {
        let done =
            sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = ? AND code_hash = ?")
                .bind(user.as_str())
                .bind(code.as_str())
                .execute(&mut self.write().await?)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn recovery_codes_left(&self, user: &UserId) -> StoreResult<u32> {
        let (left,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM mfa_recovery_codes WHERE user_id = ?")
                .bind(user.as_str())
                .fetch_one(&mut self.read().await?)
                .await?;
        Ok(stored_count(left))
    }

    async fn add_passkey(&self, passkey: &Passkey) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO passkeys ({PASSKEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&passkey.id)
        .bind(passkey.user_id.as_str())
        .bind(&passkey.credential_id)
        .bind(&passkey.name)
        .bind(&passkey.credential)
        .bind(i64::from(passkey.counter))
        .bind(millis(passkey.created_at))
        .bind(passkey.last_used_at.map(millis))
        .execute(&mut self.write().await?)
        .await?;
        Ok(())
    }

    async fn passkeys(&self, user: &UserId) -> StoreResult<Vec<Passkey>> {
        let rows: Vec<StoredPasskey<i64>> = sqlx::query_as(&format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = ? ORDER BY created_at, id"
        ))
        .bind(user.as_str())
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.into_iter()
            .map(|row| row.into_passkey(from_millis))
            .collect()
    }

    async fn find_passkey(&self, credential_id: &str) -> StoreResult<Option<Passkey>> {
        let row: Option<StoredPasskey<i64>> = sqlx::query_as(&format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = ?"
        ))
        .bind(credential_id)
        .fetch_optional(&mut self.read().await?)
        .await?;
        row.map(|row| row.into_passkey(from_millis)).transpose()
    }

    async fn rename_passkey(&self, user: &UserId, id: &str, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE passkeys SET name = ? WHERE id = ? AND user_id = ?")
            .bind(name)
            .bind(id)
            .bind(user.as_str())
            .execute(&mut self.write().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_passkey(&self, user: &UserId, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM passkeys WHERE id = ? AND user_id = ?")
            .bind(id)
            .bind(user.as_str())
            .execute(&mut self.write().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_passkey_use(
        &self,
        id: &str,
        credential: &str,
        counter: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE passkeys SET credential = ?, counter = ?, last_used_at = ? WHERE id = ?",
        )
        .bind(credential)
        .bind(i64::from(counter))
        .bind(millis(now))
        .bind(id)
        .execute(&mut self.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn put_passkey_ceremony(&self, ceremony: &PasskeyCeremony) -> StoreResult<()> {
        let row = StoredCeremony::new(ceremony, millis);
        sqlx::query(
            "INSERT INTO passkey_ceremonies (handle, kind, user_id, state, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&row.handle)
        .bind(&row.kind)
        .bind(&row.user_id)
        .bind(&row.state)
        .bind(row.created_at)
        .bind(row.expires_at)
        .execute(&mut self.write().await?)
        .await?;
        Ok(())
    }

    async fn take_passkey_ceremony(
        &self,
        handle: &TokenHash,
        kind: CeremonyKind,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<PasskeyCeremony>> {
        // One DELETE … RETURNING on the single writer: a second answer
        // finds nothing. The expiry is judged after, so an expired
        // ceremony is gone too.
        let row: Option<StoredCeremony<i64>> = sqlx::query_as(
            "DELETE FROM passkey_ceremonies WHERE handle = ? AND kind = ? \
             RETURNING handle, kind, user_id, state, created_at, expires_at",
        )
        .bind(handle.as_str())
        .bind(kind.as_str())
        .fetch_optional(&mut self.write().await?)
        .await?;
        let Some(ceremony) = row.map(|row| row.into_ceremony(from_millis)).transpose()? else {
            return Ok(None);
        };
        Ok((ceremony.expires_at > now).then_some(ceremony))
    }
}
