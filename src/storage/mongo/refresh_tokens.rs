//! `refresh_tokens` on MongoDB: the [`RefreshTokenStore`], every change a
//! single-document write (no transactions on a standalone server).

use async_trait::async_trait;
use bson::doc;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::options::ReturnDocument;

use super::{bson_date, MongoStore};
use crate::domain::{TokenHash, UserId};
use crate::storage::refresh_tokens::{
    act_on_replay, with_sibling_owner, ReplaySteps, StoredRefreshToken,
};
use crate::storage::{
    NewRefreshToken, RefreshTokenRecord, RefreshTokenStore, Rotated, Rotation, StoreResult,
    UserStore,
};

/// A `refresh_tokens` document.
pub(super) type RefreshDoc = StoredRefreshToken<bson::DateTime>;

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
            let retired = RefreshTokenRecord::try_from(retired)?;
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
        self.refresh_tokens
            .find_one(doc! { "token_hash": hash.as_str() })
            .await?
            .map(RefreshTokenRecord::try_from)
            .transpose()
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
        docs.into_iter().map(RefreshTokenRecord::try_from).collect()
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
