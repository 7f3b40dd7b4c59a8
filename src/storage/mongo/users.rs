//! `users` on MongoDB: the [`UserStore`], in the Python service's
//! document shape.

use async_trait::async_trait;
use bson::oid::ObjectId;
use bson::{doc, Document};
use chrono::{DateTime, Utc};
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};

use super::{bson_date, parse_user_id, MongoStore};
use crate::domain::{EmailAddress, PasswordHash, PersonName, Role, User, UserId};
use crate::storage::users::{stored_role, stored_token_version};
use crate::storage::{
    NewUser, OneTimeTokenStore, StoreError, StoreResult, TokenPurpose, UserStore,
};

/// `users` as the Python service wrote it. No `Debug`: it holds the hash.
#[derive(Serialize, Deserialize)]
pub(super) struct UserDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    email: String,
    password_hash: String,
    name: String,
    role: String,
    verified: bool,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
    /// Added by this service; absent on the Python service's documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokens_valid_after: Option<bson::DateTime>,
    /// Added by this service; absent (0) on the Python service's documents.
    #[serde(default)]
    token_version: i64,
}

/// Where a user is read from, for errors about what was read.
const HOME: &str = "users collection";

impl TryFrom<UserDoc> for User {
    type Error = StoreError;

    fn try_from(doc: UserDoc) -> StoreResult<Self> {
        Ok(User {
            id: UserId::new(doc.id.to_hex()),
            email: EmailAddress::from_stored(doc.email),
            name: PersonName::from_stored(doc.name),
            role: stored_role(&doc.role, HOME)?,
            verified: doc.verified,
            password_hash: PasswordHash::new(doc.password_hash),
            created_at: doc.created_at.to_chrono(),
            updated_at: doc.updated_at.to_chrono(),
            tokens_valid_after: doc.tokens_valid_after.map(|t| t.to_chrono()),
            token_version: stored_token_version(doc.token_version, HOME)?,
        })
    }
}

impl MongoStore {
    /// Applies `$set: set` to one user; false when no user has that id.
    async fn update_user(&self, id: &UserId, set: Document) -> StoreResult<bool> {
        let Some(oid) = parse_user_id(id) else {
            return Ok(false);
        };
        let done = self
            .users
            .update_one(doc! { "_id": oid }, doc! { "$set": set })
            .await?;
        // matched, not modified: setting the same value again still means
        // the user exists.
        Ok(done.matched_count == 1)
    }
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create_user(&self, user: &NewUser) -> StoreResult<User> {
        // The unique email index is what turns a double registration into
        // Conflict; never insert before it exists.
        self.indexes.ensure().await?;
        let now = bson_date(user.created_at);
        let doc = UserDoc {
            id: ObjectId::new(),
            email: user.email.as_str().to_owned(),
            password_hash: user.password_hash.expose().to_owned(),
            name: user.name.as_str().to_owned(),
            role: user.role.as_str().to_owned(),
            verified: user.verified,
            created_at: now,
            updated_at: now,
            tokens_valid_after: None,
            token_version: 0,
        };
        self.users.insert_one(&doc).await?;
        let created: User = doc.try_into()?;
        // A second write: multi-document transactions need a replica set,
        // which a single-server install does not have.
        if let Some(link) = &user.verification_link {
            let token = link.for_user(&created.id);
            self.replace_one_time_token(TokenPurpose::EmailVerification, &token)
                .await?;
        }
        Ok(created)
    }

    async fn find_user_by_email(&self, email: &EmailAddress) -> StoreResult<Option<User>> {
        self.users
            .find_one(doc! { "email": email.as_str() })
            .await?
            .map(User::try_from)
            .transpose()
    }

    async fn find_user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        let Some(oid) = parse_user_id(id) else {
            return Ok(None);
        };
        self.users
            .find_one(doc! { "_id": oid })
            .await?
            .map(User::try_from)
            .transpose()
    }

    async fn set_password_hash(
        &self,
        id: &UserId,
        hash: &PasswordHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.update_user(
            id,
            doc! { "password_hash": hash.expose(), "updated_at": bson_date(now) },
        )
        .await
    }

    async fn cut_access_tokens(&self, id: &UserId, at: DateTime<Utc>) -> StoreResult<Option<u64>> {
        let Some(oid) = parse_user_id(id) else {
            return Ok(None);
        };
        // One atomic update that answers the version it set, so the caller
        // issues its fresh token under exactly this cut-off.
        let updated = self
            .users
            .find_one_and_update(
                doc! { "_id": oid },
                doc! {
                    "$set": { "tokens_valid_after": bson_date(at) },
                    "$inc": { "token_version": 1_i64 },
                },
            )
            .return_document(ReturnDocument::After)
            .await?;
        updated
            .map(User::try_from)
            .transpose()
            .map(|user| user.map(|u| u.token_version))
    }

    async fn set_verified(&self, id: &UserId, now: DateTime<Utc>) -> StoreResult<bool> {
        self.update_user(id, doc! { "verified": true, "updated_at": bson_date(now) })
            .await
    }

    async fn set_user_role(
        &self,
        id: &UserId,
        role: Role,
        cut: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let Some(oid) = parse_user_id(id) else {
            return Ok(false);
        };
        let done = self
            .users
            .update_one(
                doc! { "_id": oid },
                doc! {
                    "$set": {
                        "role": role.as_str(),
                        "tokens_valid_after": bson_date(cut),
                        "updated_at": bson_date(now),
                    },
                    "$inc": { "token_version": 1_i64 },
                },
            )
            .await?;
        Ok(done.matched_count == 1)
    }
}
