//! `signing_keys` on SQLite: the [`SigningKeyStore`]. Each call is one
//! statement, atomic on its own.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{millis, SqliteStore};
use crate::storage::signing_keys::StoredSigningKey;
use crate::storage::{SigningKeyRecord, SigningKeyStore, StoreResult};

type SigningKeyRow = StoredSigningKey<i64>;

const COLUMNS: &str = "kid, alg, public_jwk, private_sealed, created_at, retired_at";

#[async_trait]
impl SigningKeyStore for SqliteStore {
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        let row = SigningKeyRow::new(key);
        sqlx::query(&format!(
            "INSERT INTO signing_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        ))
        .bind(&row.kid)
        .bind(&row.alg)
        .bind(&row.public_jwk)
        .bind(&row.private_sealed)
        .bind(row.created_at)
        .bind(row.retired_at)
        .execute(&mut self.write().await?)
        .await?;
        Ok(())
    }

    async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows: Vec<SigningKeyRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM signing_keys ORDER BY created_at, kid"
        ))
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.into_iter().map(SigningKeyRecord::try_from).collect()
    }

    async fn retire_signing_keys_except(
        &self,
        current: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL AND kid <> ?",
        )
        .bind(millis(at))
        .bind(current)
        .execute(&mut self.write().await?)
        .await?;
        Ok(done.rows_affected())
    }

    async fn delete_signing_keys_retired_before(
        &self,
        before: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        let kids = sqlx::query_scalar(
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ? \
             RETURNING kid",
        )
        .bind(millis(before))
        .fetch_all(&mut self.write().await?)
        .await?;
        Ok(kids)
    }
}
