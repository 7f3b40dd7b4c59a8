//! `users` on MongoDB: the [`UserStore`], in the Python service's
//! document shape.

use async_trait::async_trait;
use bson::oid::ObjectId;
use bson::{doc, Document};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::options::ReturnDocument;

use super::{bson_date, parse_user_id, MongoStore};
use crate::domain::{EmailAddress, PasswordHash, PersonName, Role, User, UserId};
use crate::storage::users::{StoredUser, StoredUserKey};
use crate::storage::{NewUser, OneTimeTokenStore, StoreResult, TokenPurpose, UserQuery, UserStore};

/// A `users` document, as the Python service wrote it.
pub(super) type UserDoc = StoredUser<ObjectId, bson::DateTime>;

/// Users are keyed by the ObjectId the Python service gave them.
impl StoredUserKey for ObjectId {
    const HOME: &'static str = "users collection";

    fn into_user_id(self) -> UserId {
        UserId::new(self.to_hex())
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

    /// Up to `limit` users matching `filter`, by email ascending.
    async fn find_users(&self, filter: Document, limit: u32) -> StoreResult<Vec<UserDoc>> {
        Ok(self
            .users
            .find(filter)
            .sort(doc! { "email": 1 })
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?)
    }
}

/// `$regex` conditions of an anchored pattern matching `prefix` literally.
fn prefix_regex(prefix: &str, options: &str) -> Document {
    let mut pattern = String::from("^");
    for c in prefix.chars() {
        if "\\^$.|?*+()[]{}-/#".contains(c) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    doc! { "$regex": pattern, "$options": options }
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create_user(&self, user: &NewUser) -> StoreResult<User> {
        // The unique email index is what turns a double registration into
        // Conflict; never insert before it exists.
        self.indexes.ensure().await?;
        let doc = UserDoc::new(ObjectId::new(), user);
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
        role: &Role,
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

    async fn set_user_disabled(
        &self,
        id: &UserId,
        at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let Some(oid) = parse_user_id(id) else {
            return Ok(false);
        };
        // Enabling removes the field: an active user's document stays in
        // the Python service's shape.
        let update = match at {
            Some(at) => {
                doc! { "$set": { "disabled_at": bson_date(at), "updated_at": bson_date(now) } }
            }
            None => {
                doc! { "$set": { "updated_at": bson_date(now) }, "$unset": { "disabled_at": "" } }
            }
        };
        let done = self.users.update_one(doc! { "_id": oid }, update).await?;
        Ok(done.matched_count == 1)
    }

    async fn count_active_admins(&self) -> StoreResult<u64> {
        Ok(self
            .users
            .count_documents(doc! { "role": "admin", "disabled_at": { "$exists": false } })
            .await?)
    }

    async fn set_emergency_access(
        &self,
        id: &UserId,
        allowed: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let Some(oid) = parse_user_id(id) else {
            return Ok(false);
        };
        // Withdrawing removes the field, as enabling removes `disabled_at`.
        let update = if allowed {
            doc! { "$set": { "emergency_access": true, "updated_at": bson_date(now) } }
        } else {
            doc! { "$set": { "updated_at": bson_date(now) }, "$unset": { "emergency_access": "" } }
        };
        let done = self.users.update_one(doc! { "_id": oid }, update).await?;
        Ok(done.matched_count == 1)
    }

    async fn find_active_admins(&self) -> StoreResult<Vec<User>> {
        use futures_util::TryStreamExt;
        let docs: Vec<UserDoc> = self
            .users
            .find(doc! { "role": "admin", "disabled_at": { "$exists": false } })
            .sort(doc! { "email": 1 })
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(User::try_from).collect()
    }

    /// A prefix is looked for in two queries, email (lower case already,
    /// an anchored regex the email index serves) and name (an anchored
    /// case-insensitive regex, Unicode-aware), each sorted by email and
    /// limited, then merged: the first `limit` of the union are exactly the
    /// first `limit` matches. Two queries rather than one `$or`, which not
    /// every server we run against evaluates together with other
    /// conditions.
    async fn list_users(&self, query: &UserQuery) -> StoreResult<Vec<User>> {
        let mut base = Document::new();
        if let Some(role) = &query.role {
            base.insert("role", role.as_str());
        }
        if let Some(disabled) = query.disabled {
            base.insert("disabled_at", doc! { "$exists": disabled });
        }
        if let Some(verified) = query.verified {
            base.insert("verified", verified);
        }
        let email_after = |mut condition: Document| {
            if let Some(after) = &query.after_email {
                condition.insert("$gt", after.as_str());
            }
            condition
        };
        let mut docs = match &query.prefix {
            None => {
                let mut filter = base;
                let condition = email_after(Document::new());
                if !condition.is_empty() {
                    filter.insert("email", condition);
                }
                self.find_users(filter, query.limit).await?
            }
            Some(prefix) => {
                let mut by_email = base.clone();
                by_email.insert("email", email_after(prefix_regex(prefix, "")));
                let mut by_name = base;
                by_name.insert("name", prefix_regex(prefix, "i"));
                let condition = email_after(Document::new());
                if !condition.is_empty() {
                    by_name.insert("email", condition);
                }
                let mut docs = self.find_users(by_email, query.limit).await?;
                docs.extend(self.find_users(by_name, query.limit).await?);
                docs.sort_by(|a, b| a.email.cmp(&b.email));
                docs.dedup_by(|a, b| a.id == b.id);
                docs
            }
        };
        docs.truncate(query.limit as usize);
        docs.into_iter().map(User::try_from).collect()
    }

    async fn anonymise_user(
        &self,
        id: &UserId,
        email: &EmailAddress,
        name: &PersonName,
        hash: &PasswordHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.update_user(
            id,
            doc! {
                "email": email.as_str(),
                "name": name.as_str(),
                "password_hash": hash.expose(),
                "updated_at": bson_date(now),
            },
        )
        .await
    }

    async fn count_users_outside_roles(&self, known: &[Role]) -> StoreResult<u64> {
        let known: Vec<&str> = known.iter().map(Role::as_str).collect();
        Ok(self
            .users
            .count_documents(doc! { "role": { "$nin": known } })
            .await?)
    }
}
