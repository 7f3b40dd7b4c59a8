//! `users` on SQLite: the [`UserStore`] of accounts, keyed by a UUIDv7.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::one_time_tokens::upsert_link_sql;
use super::{email_queue, millis, roll_back, SqliteStore};
use crate::domain::{EmailAddress, PasswordHash, PersonName, Role, User, UserId};
use crate::storage::users::{StoredUser, StoredUserKey};
use crate::storage::{
    NewQueuedEmail, NewUser, StoreError, StoreResult, TokenPurpose, UserQuery, UserStore,
};

/// A `users` row.
pub(super) type UserRow = StoredUser<String, i64>;

/// Users are keyed by a UUIDv7, stored as text.
impl StoredUserKey for String {
    const HOME: &'static str = "users table";

    fn into_user_id(self) -> UserId {
        UserId::new(self)
    }
}

pub(super) const USER_COLUMNS: &str =
    "id, email, password_hash, name, role, verified, created_at, \
     updated_at, tokens_valid_after, token_version, disabled_at, emergency_access";

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
                .await?;
        row.map(User::try_from).transpose()
    }

    async fn find_user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        let row: Option<UserRow> =
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?"))
                .bind(id.as_str())
                .fetch_optional(&mut self.read().await?)
                .await?;
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
        .await?;
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
        role: &Role,
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

    async fn set_user_disabled(
        &self,
        id: &UserId,
        at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let update = sqlx::query("UPDATE users SET disabled_at = ?, updated_at = ? WHERE id = ?")
            .bind(at.map(millis))
            .bind(millis(now));
        self.update_user(update, id).await
    }

    async fn count_active_admins(&self) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL",
        )
        .fetch_one(&mut self.read().await?)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn set_emergency_access(
        &self,
        id: &UserId,
        allowed: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let update =
            sqlx::query("UPDATE users SET emergency_access = ?, updated_at = ? WHERE id = ?")
                .bind(allowed)
                .bind(millis(now));
        self.update_user(update, id).await
    }

    async fn find_active_admins(&self) -> StoreResult<Vec<User>> {
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE role = 'admin' AND disabled_at IS NULL \
             ORDER BY email"
        ))
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.into_iter().map(User::try_from).collect()
    }

    /// One statement; it walks the unique email index in order and stops
    /// at the limit. LIKE folds only ASCII letters, so a name prefix with
    /// other letters must match their case (documented in the README).
    async fn list_users(&self, query: &UserQuery) -> StoreResult<Vec<User>> {
        let pattern = query
            .prefix
            .as_deref()
            .map(|p| format!("{}%", escape_like(p)));
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users \
             WHERE (?1 IS NULL OR email LIKE ?1 ESCAPE '\\' OR name LIKE ?1 ESCAPE '\\') \
             AND (?2 IS NULL OR role = ?2) \
             AND (?3 IS NULL OR (disabled_at IS NOT NULL) = ?3) \
             AND (?4 IS NULL OR verified = ?4) \
             AND (?5 IS NULL OR email > ?5) \
             ORDER BY email LIMIT ?6"
        ))
        .bind(pattern)
        .bind(query.role.as_ref().map(Role::as_str))
        .bind(query.disabled)
        .bind(query.verified)
        .bind(query.after_email.as_deref())
        .bind(i64::from(query.limit))
        .fetch_all(&mut self.read().await?)
        .await?;
        rows.into_iter().map(User::try_from).collect()
    }

    async fn anonymise_user(
        &self,
        id: &UserId,
        email: &EmailAddress,
        name: &PersonName,
        hash: &PasswordHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let update = sqlx::query(
            "UPDATE users SET email = ?, name = ?, password_hash = ?, updated_at = ? WHERE id = ?",
        )
        .bind(email.as_str())
        .bind(name.as_str())
        .bind(hash.expose())
        .bind(millis(now));
        self.update_user(update, id).await
    }

    async fn count_users_outside_roles(&self, known: &[Role]) -> StoreResult<u64> {
        // One statement whatever the number of roles: the list goes in as
        // a JSON array.
        let known: Vec<&str> = known.iter().map(Role::as_str).collect();
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM users WHERE role NOT IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::to_string(&known).map_err(|e| StoreError::Other(e.into()))?)
        .fetch_one(&mut self.read().await?)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

impl SqliteStore {
    /// Creates a user, with its verification link and, when given, the
    /// queued email carrying that link (see `email_queue`).
    pub(super) async fn create_user_with(
        &self,
        user: &NewUser,
        email: Option<&NewQueuedEmail>,
    ) -> StoreResult<User> {
        let id = new_user_id();
        let Some(link) = &user.verification_link else {
            let row: UserRow = bind_user(sqlx::query_as(&insert_user_sql()), &id, user)
                .fetch_one(&mut self.write().await?)
                .await?;
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
                return Err(err.into());
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
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// `text` for a LIKE pattern with a backslash as the escape: its `%` and `_`
/// match only themselves.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
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
