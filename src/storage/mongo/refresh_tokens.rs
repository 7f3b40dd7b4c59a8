//! `refresh_tokens` on MongoDB: the [`RefreshTokenStore`], every change a
//! single-document write (no transactions on a standalone server).

use async_trait::async_trait;
use bson::doc;
use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};

use super::{bson_date, MongoStore};
use crate::domain::{TokenHash, UserId};
use crate::storage::refresh_tokens::{act_on_replay, with_sibling_owner, ReplaySteps};
use crate::storage::{
    NewRefreshToken, RefreshTokenRecord, RefreshTokenStore, Rotated, Rotation, StoreResult,
    UserStore,
};

/// `refresh_tokens`. The rotation fields are optional because documents
/// written by the Python service do not have them.
#[derive(Serialize, Deserialize)]
pub(super) struct RefreshDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    user_id: String,
    jti: String,
    token_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    family_id: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    ip_address: Option<String>,
    revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replaced_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<bson::DateTime>,
    /// Set on a retired token once its one grace sibling exists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sibling_issued: bool,
    expires_at: bson::DateTime,
    created_at: bson::DateTime,
}

impl RefreshDoc {
    fn new(token: &NewRefreshToken) -> Self {
        Self {
            id: ObjectId::new(),
            user_id: token.user_id.as_str().to_owned(),
            jti: token.jti.clone(),
            token_hash: token.token_hash.as_str().to_owned(),
            family_id: Some(token.family_id.clone()),
            user_agent: token.user_agent.clone(),
            ip_address: token.ip_address.clone(),
            revoked: false,
            replaced_by: None,
            revoked_at: None,
            sibling_issued: false,
            expires_at: bson_date(token.expires_at),
            created_at: bson_date(token.created_at),
        }
    }
}

impl From<RefreshDoc> for RefreshTokenRecord {
    fn from(doc: RefreshDoc) -> Self {
        RefreshTokenRecord {
            user_id: UserId::new(doc.user_id),
            // A token from before rotation existed is the only member of its
            // own family; its jti is unique, so it names that family.
            family_id: doc.family_id.unwrap_or_else(|| doc.jti.clone()),
            jti: doc.jti,
            token_hash: TokenHash::from_stored(doc.token_hash),
            user_agent: doc.user_agent,
            ip_address: doc.ip_address,
            revoked: doc.revoked,
            replaced_by: doc.replaced_by,
            revoked_at: doc.revoked_at.map(bson::DateTime::to_chrono),
            sibling_issued: doc.sibling_issued,
            expires_at: doc.expires_at.to_chrono(),
            created_at: doc.created_at.to_chrono(),
        }
    }
}

#[async_trait]
impl RefreshTokenStore for MongoStore {
    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> StoreResult<()> {
        self.indexes.ensure().await?;
        self.refresh_tokens
            .insert_one(RefreshDoc::new(token))
            .await?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &TokenHash,
        now: DateTime<Utc>,
        grace: chrono::Duration,
        replacement: &NewRefreshToken,
    ) -> StoreResult<Rotation> {
        self.indexes.ensure().await?;
        let now_b = bson_date(now);
        // The child goes in before the parent is retired, so from the moment
        // a token counts as rotated its replacement exists: a second tab
        // racing this one (inside the reuse grace) then finds the family
        // alive, where insert-after-retire showed it a family with no live
        // token and refused it. A loser removes its child again. A crash in
        // between leaves an extra child nobody holds, which expires.
        self.insert_refresh_token(replacement).await?;
        // The single-document update is the whole guard against concurrent
        // use: of several callers, only one matches `revoked: false`.
        let retired = self
            .refresh_tokens
            .find_one_and_update(
                doc! {
                    "token_hash": old_hash.as_str(),
                    "revoked": false,
                    "expires_at": { "$gt": now_b },
                },
                doc! { "$set": {
                    "revoked": true,
                    "replaced_by": &replacement.jti,
                    "revoked_at": now_b,
                } },
            )
            .return_document(ReturnDocument::After)
            .await?;
        if let Some(retired) = retired {
            let retired = RefreshTokenRecord::from(retired);
            let owner = self.find_user_by_id(&retired.user_id).await?;
            return Ok(Rotation::Rotated(Rotated { retired, owner }));
        }
        self.refresh_tokens
            .delete_one(doc! { "jti": &replacement.jti })
            .await?;
        let old = self.find_refresh_token(old_hash).await?;
        let mut steps = Replay {
            store: self,
            now,
            replacement,
        };
        let rotation = act_on_replay(&mut steps, old, now, grace).await?;
        with_sibling_owner(self, rotation).await
    }

    async fn find_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        Ok(self
            .refresh_tokens
            .find_one(doc! { "token_hash": hash.as_str() })
            .await?
            .map(RefreshTokenRecord::from))
    }

    async fn revoke_refresh_token(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = self
            .refresh_tokens
            .update_one(
                doc! { "token_hash": hash.as_str(), "revoked": false },
                doc! { "$set": { "revoked": true, "revoked_at": bson_date(now) } },
            )
            .await?;
        Ok(done.modified_count == 1)
    }

    async fn revoke_user_refresh_tokens(
        &self,
        user_id: &UserId,
        keep_family: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut filter = doc! { "user_id": user_id.as_str(), "revoked": false };
        if let Some(keep) = keep_family {
            filter.insert("family_id", doc! { "$ne": keep });
        }
        let done = self
            .refresh_tokens
            .update_many(
                filter,
                doc! { "$set": { "revoked": true, "revoked_at": bson_date(now) } },
            )
            .await?;
        Ok(done.modified_count)
    }

    async fn list_user_refresh_tokens(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<RefreshTokenRecord>> {
        let docs: Vec<RefreshDoc> = self
            .refresh_tokens
            .find(doc! {
                "user_id": user_id.as_str(),
                "revoked": false,
                "expires_at": { "$gt": bson_date(now) },
            })
            .sort(doc! { "created_at": -1 })
            .await?
            .try_collect()
            .await?;
        Ok(docs.into_iter().map(RefreshTokenRecord::from).collect())
    }

    async fn refresh_family_alive(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        Ok(self
            .refresh_tokens
            .find_one(doc! {
                "user_id": user_id.as_str(),
                "family_id": family_id,
                "revoked": false,
                "expires_at": { "$gt": bson_date(now) },
            })
            .await?
            .is_some())
    }

    async fn revoke_refresh_family(
        &self,
        user_id: &UserId,
        family_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let done = self
            .refresh_tokens
            .update_many(
                doc! { "user_id": user_id.as_str(), "family_id": family_id, "revoked": false },
                doc! { "$set": { "revoked": true, "revoked_at": bson_date(now) } },
            )
            .await?;
        Ok(done.modified_count)
    }
}

/// The steps of a replay, as single-document writes: no transactions on a
/// standalone server.
struct Replay<'a> {
    store: &'a MongoStore,
    now: DateTime<Utc>,
    replacement: &'a NewRefreshToken,
}

#[async_trait]
impl<'a> ReplaySteps for Replay<'a> {
    /// No transaction: a family revoked between this check and the insert
    /// leaves one live sibling behind, which the next replay of any retired
    /// member revokes again. The window is one round trip wide and needs a
    /// token already inside the grace period.
    async fn family_alive(&mut self, token: &RefreshTokenRecord) -> StoreResult<bool> {
        self.store
            .refresh_family_alive(&token.user_id, &token.family_id, self.now)
            .await
    }

    /// The sibling goes in before the mark (as a child goes in before its
    /// parent is retired at rotation): a concurrent replay that loses the
    /// mark and revokes the family then revokes this sibling too, where
    /// mark-then-insert could store it after that revocation. A loser
    /// removes its sibling again.
    async fn issue_sibling(&mut self, token: &RefreshTokenRecord) -> StoreResult<bool> {
        self.store.insert_refresh_token(self.replacement).await?;
        // `$in: [false, null]` (null also matches a document without the
        // field) rather than `$ne: true`: the same on MongoDB, and nx-27017
        // 0.8.1 never matches `$ne` on a missing field in an update.
        let marked = self
            .store
            .refresh_tokens
            .update_one(
                doc! {
                    "token_hash": token.token_hash.as_str(),
                    "sibling_issued": { "$in": [false, bson::Bson::Null] },
                },
                doc! { "$set": { "sibling_issued": true } },
            )
            .await?;
        if marked.modified_count == 1 {
            return Ok(true);
        }
        self.store
            .refresh_tokens
            .delete_one(doc! { "jti": &self.replacement.jti })
            .await?;
        Ok(false)
    }

    async fn revoke_family(&mut self, token: &RefreshTokenRecord) -> StoreResult<u64> {
        self.store
            .revoke_refresh_family(&token.user_id, &token.family_id, self.now)
            .await
    }
}
