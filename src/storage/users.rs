//! Accounts: [`UserStore`] and the user to be created.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{NewLink, StoreError, StoreResult, StoredInstant};
use crate::domain::{EmailAddress, PasswordHash, PersonName, Role, User, UserId};

/// A user to be created; the store assigns the id.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: EmailAddress,
    pub name: PersonName,
    pub password_hash: PasswordHash,
    pub role: Role,
    pub verified: bool,
    pub created_at: DateTime<Utc>,
    /// The first email-verification link (a registration's), stored with
    /// the user.
    pub verification_link: Option<NewLink>,
}

/// A user as both backends store it: a `users` row (SQLite: `K` the
/// UUIDv7 as text, `T = i64`) or a document in the Python service's shape
/// (MongoDB: `K` the `_id` ObjectId, `T = bson::DateTime`). No `Debug`: it
/// holds the hash.
#[derive(sqlx::FromRow, Serialize, Deserialize, Clone)]
pub(crate) struct StoredUser<K, T> {
    #[serde(rename = "_id")]
    pub(crate) id: K,
    pub(crate) email: String,
    pub(crate) password_hash: String,
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) verified: bool,
    pub(crate) created_at: T,
    pub(crate) updated_at: T,
    /// Added by this service; absent on the Python service's documents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tokens_valid_after: Option<T>,
    /// Added by this service; absent (0) on the Python service's documents.
    #[serde(default)]
    pub(crate) token_version: i64,
    /// Added by this service (issue 19); absent while the user is active
    /// (a missing Option reads as None).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) disabled_at: Option<T>,
    /// Added by this service (issue 19); absent (false) on the Python
    /// service's documents, and left out while false so theirs keep their
    /// shape.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) emergency_access: bool,
}

/// The key of a stored user as a backend keeps it.
pub(crate) trait StoredUserKey {
    /// Where users are read from ("users table"), for errors about what
    /// was read.
    const HOME: &'static str;

    fn into_user_id(self) -> UserId;
}

impl<K: StoredUserKey, T: StoredInstant> StoredUser<K, T> {
    /// `user` as created now, under the key the store chose.
    pub(crate) fn new(id: K, user: &NewUser) -> Self {
        Self {
            id,
            email: user.email.as_str().to_owned(),
            password_hash: user.password_hash.expose().to_owned(),
            name: user.name.as_str().to_owned(),
            role: user.role.as_str().to_owned(),
            verified: user.verified,
            created_at: T::from_utc(user.created_at),
            updated_at: T::from_utc(user.created_at),
            tokens_valid_after: None,
            token_version: 0,
            disabled_at: None,
            emergency_access: false,
        }
    }
}

impl<K: StoredUserKey, T: StoredInstant> TryFrom<StoredUser<K, T>> for User {
    type Error = StoreError;

    fn try_from(stored: StoredUser<K, T>) -> StoreResult<Self> {
        Ok(User {
            id: stored.id.into_user_id(),
            email: EmailAddress::from_stored(stored.email),
            name: PersonName::from_stored(stored.name),
            // Read as stored, even a role ROLES no longer lists: that must
            // not make the user unreadable (start-up reports such roles).
            role: Role::from_stored(&stored.role),
            verified: stored.verified,
            password_hash: PasswordHash::new(stored.password_hash),
            created_at: stored.created_at.to_utc()?,
            updated_at: stored.updated_at.to_utc()?,
            tokens_valid_after: stored.tokens_valid_after.map(T::to_utc).transpose()?,
            token_version: stored_token_version(stored.token_version, K::HOME)?,
            disabled_at: stored.disabled_at.map(T::to_utc).transpose()?,
            emergency_access: stored.emergency_access,
        })
    }
}

/// Largest page [`UserStore::list_users`] is asked for.
pub const USER_PAGE_MAX: u32 = 200;

/// Which users to list, a page at a time, by email ascending (the email is
/// unique, so it is also the cursor).
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Lower-case text the email or the name starts with (the name compared
    /// case-insensitively). Matched literally: `%`, `_` and regex
    /// characters in it mean themselves.
    pub prefix: Option<String>,
    pub role: Option<Role>,
    /// `Some(true)`: only disabled accounts; `Some(false)`: only active ones.
    pub disabled: Option<bool>,
    pub verified: Option<bool>,
    /// The cursor: only users whose email sorts after this one.
    pub after_email: Option<String>,
    /// 1..=[`USER_PAGE_MAX`]; the caller validates it.
    pub limit: u32,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a user, and its `verification_link` when there is one.
    /// `Err(Conflict)` when the email is already registered, and then
    /// nothing is stored. A store with transactions writes both at once; one
    /// without (MongoDB without a replica set) writes the user first, so a
    /// failure between the two leaves the user without the link (they can
    /// ask for a new one).
    async fn create_user(&self, user: &NewUser) -> StoreResult<User>;

    /// `Ok(None)` when no user has that (already normalised) email.
    async fn find_user_by_email(&self, email: &EmailAddress) -> StoreResult<Option<User>>;

    /// `Ok(None)` when the id is unknown or not even well-formed.
    async fn find_user_by_id(&self, id: &UserId) -> StoreResult<Option<User>>;

    /// Replaces the password hash and bumps `updated_at`. Returns false when
    /// the user no longer exists.
    async fn set_password_hash(
        &self,
        id: &UserId,
        hash: &PasswordHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Cuts off every access token (and portal session) issued so far: in
    /// one atomic write, records `at` as `tokens_valid_after` and raises
    /// `token_version` by one. Returns the new version, `None` when the user
    /// no longer exists.
    async fn cut_access_tokens(&self, id: &UserId, at: DateTime<Utc>) -> StoreResult<Option<u64>>;

    /// Marks the user's email address as verified and bumps `updated_at`.
    /// Returns false when the user no longer exists.
    async fn set_verified(&self, id: &UserId, now: DateTime<Utc>) -> StoreResult<bool>;

    /// Sets the role and, in the same write, cuts off the user's access
    /// tokens as [`UserStore::cut_access_tokens`] does (`tokens_valid_after
    /// = cut`, `token_version` + 1), so no access token or portal session
    /// from before the change outlives it. Returns false when the user no
    /// longer exists.
    async fn set_user_role(
        &self,
        id: &UserId,
        role: &Role,
        cut: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Disables the user as of `at` (`None`: enables them again) and bumps
    /// `updated_at`. Ending their sessions is the caller's next step.
    /// Returns false when the user no longer exists.
    async fn set_user_disabled(
        &self,
        id: &UserId,
        at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// How many administrators are not disabled: the last one may not be
    /// disabled or demoted.
    async fn count_active_admins(&self) -> StoreResult<u64>;

    /// Grants (`true`) or withdraws the emergency access permission and
    /// bumps `updated_at`. Returns false when the user no longer exists.
    async fn set_emergency_access(
        &self,
        id: &UserId,
        allowed: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Every administrator who is not disabled: whom the service tells when
    /// something needs an administrator's eyes (emergency access).
    async fn find_active_admins(&self) -> StoreResult<Vec<User>>;

    /// Users matching `query`, by email ascending, at most `query.limit`.
    async fn list_users(&self, query: &UserQuery) -> StoreResult<Vec<User>>;

    /// Replaces the user's email, name and password hash (erasure of a
    /// disabled account: the id stays, for the audit trail) and bumps
    /// `updated_at`. Returns false when the user no longer exists;
    /// `Err(Conflict)` when another user has `email`.
    async fn anonymise_user(
        &self,
        id: &UserId,
        email: &EmailAddress,
        name: &PersonName,
        hash: &PasswordHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// How many users have a role not in `known`: ROLES changed after they
    /// got it. Reported at start-up (they keep signing in with it).
    async fn count_users_outside_roles(&self, known: &[Role]) -> StoreResult<u64>;
}

/// The token version of a stored user, which is never negative.
fn stored_token_version(version: i64, home: &str) -> StoreResult<u64> {
    u64::try_from(version)
        .map_err(|_| StoreError::Other(anyhow::anyhow!("negative token_version in {home}")))
}
