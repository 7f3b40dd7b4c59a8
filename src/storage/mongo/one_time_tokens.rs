//! `reset_tokens` and `verification_tokens` on MongoDB: the
//! [`OneTimeTokenStore`], one collection per [`TokenPurpose`].

use async_trait::async_trait;
use bson::doc;
use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use mongodb::Collection;
use serde::{Deserialize, Serialize};

use super::{bson_date, MongoStore};
use crate::domain::{TokenHash, UserId};
use crate::storage::{NewOneTimeToken, OneTimeTokenStore, StoreResult, TokenPurpose};

/// `reset_tokens` (the original's fields) and `verification_tokens`.
#[derive(Serialize, Deserialize)]
pub(super) struct OneTimeDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    user_id: String,
    token_hash: String,
    expires_at: bson::DateTime,
    created_at: bson::DateTime,
}

impl MongoStore {
    fn one_time(&self, purpose: TokenPurpose) -> &Collection<OneTimeDoc> {
        match purpose {
            TokenPurpose::PasswordReset => &self.reset_tokens,
            TokenPurpose::EmailVerification => &self.verification_tokens,
            TokenPurpose::MfaChallenge => &self.mfa_challenges,
        }
    }
}

#[async_trait]
impl OneTimeTokenStore for MongoStore {
    async fn replace_one_time_token(
        &self,
        purpose: TokenPurpose,
        token: &NewOneTimeToken,
    ) -> StoreResult<()> {
        self.indexes.ensure().await?;
        let collection = self.one_time(purpose);
        let doc = OneTimeDoc {
            id: ObjectId::new(),
            user_id: token.user_id.as_str().to_owned(),
            token_hash: token.token_hash.as_str().to_owned(),
            expires_at: bson_date(token.expires_at),
            created_at: bson_date(token.created_at),
        };
        let new_id = doc.id;
        // Insert first, then delete every other token of the user: if the
        // delete fails the new link still works. Two concurrent requests can
        // at worst delete each other's token, which fails closed (ask again).
        collection.insert_one(&doc).await?;
        collection
            .delete_many(doc! { "user_id": &doc.user_id, "_id": { "$ne": new_id } })
            .await?;
        Ok(())
    }

    async fn find_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserId>> {
        Ok(self
            .one_time(purpose)
            .find_one(doc! { "token_hash": hash.as_str(), "expires_at": { "$gt": bson_date(now) } })
            .await?
            .map(|doc| UserId::new(doc.user_id)))
    }

    async fn consume_one_time_token(
        &self,
        purpose: TokenPurpose,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<UserId>> {
        // Deleted whether or not it has expired (an expired link is used up
        // too); the expiry check is ours, not the TTL monitor's.
        let consumed = self
            .one_time(purpose)
            .find_one_and_delete(doc! { "token_hash": hash.as_str() })
            .await?;
        Ok(consumed
            .filter(|doc| doc.expires_at > bson_date(now))
            .map(|doc| UserId::new(doc.user_id)))
    }

    async fn delete_user_one_time_tokens(
        &self,
        purpose: TokenPurpose,
        user_id: &UserId,
    ) -> StoreResult<()> {
        self.one_time(purpose)
            .delete_many(doc! { "user_id": user_id.as_str() })
            .await?;
        Ok(())
    }
}
