//! `sessions` on MongoDB: the [`WebSessionStore`] of portal sessions, keyed
//! by the hash of the session id.

use async_trait::async_trait;
use bson::doc;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;

use super::{bson_date, MongoStore};
use crate::domain::{TokenHash, UserId};
use crate::storage::web_sessions::StoredWebSession;
use crate::storage::{StoreResult, WebSessionRecord, WebSessionStore};

/// A document of the `sessions` collection.
pub(super) type SessionDoc = StoredWebSession<bson::DateTime>;

#[async_trait]
impl WebSessionStore for MongoStore {
    async fn insert_web_session(&self, session: &WebSessionRecord) -> StoreResult<()> {
        self.sessions.insert_one(SessionDoc::new(session)).await?;
        Ok(())
    }

    async fn update_web_session(
        &self,
        session: &WebSessionRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let doc = SessionDoc::new(session);
        let optional = |v: Option<String>| v.map_or(bson::Bson::Null, Into::into);
        // No upsert: a session deleted or expired meanwhile stays ended.
        let done = self
            .sessions
            .update_one(
                doc! { "_id": &doc.id_hash, "expires_at": { "$gt": bson_date(now) } },
                doc! {
                    "$set": {
                        "user_id": optional(doc.user_id.clone()),
                        "data": &doc.data,
                        "user_agent": optional(doc.user_agent.clone()),
                        "ip_address": optional(doc.ip_address.clone()),
                        "refresh_family": optional(doc.refresh_family.clone()),
                        "last_used_at": doc.last_used_at,
                        "expires_at": doc.expires_at,
                    },
                },
            )
            .await?;
        Ok(done.matched_count == 1)
    }

    async fn load_web_session(
        &self,
        id_hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebSessionRecord>> {
        self.sessions
            .find_one(doc! { "_id": id_hash.as_str(), "expires_at": { "$gt": bson_date(now) } })
            .await?
            .map(WebSessionRecord::try_from)
            .transpose()
    }

    async fn delete_web_session(&self, id_hash: &TokenHash) -> StoreResult<bool> {
        let done = self
            .sessions
            .delete_one(doc! { "_id": id_hash.as_str() })
            .await?;
        Ok(done.deleted_count > 0)
    }

    async fn list_user_web_sessions(
        &self,
        user_id: &UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<WebSessionRecord>> {
        let docs: Vec<SessionDoc> = self
            .sessions
            .find(doc! { "user_id": user_id.as_str(), "expires_at": { "$gt": bson_date(now) } })
            .sort(doc! { "last_used_at": -1 })
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(WebSessionRecord::try_from).collect()
    }

    async fn delete_user_web_sessions(
        &self,
        user_id: &UserId,
        keep: Option<&TokenHash>,
    ) -> StoreResult<u64> {
        let mut filter = doc! { "user_id": user_id.as_str() };
        if let Some(keep) = keep {
            filter.insert("_id", doc! { "$ne": keep.as_str() });
        }
        let done = self.sessions.delete_many(filter).await?;
        Ok(done.deleted_count)
    }

    async fn delete_family_web_sessions(
        &self,
        user_id: &UserId,
        family_id: &str,
    ) -> StoreResult<u64> {
        let done = self
            .sessions
            .delete_many(doc! { "user_id": user_id.as_str(), "refresh_family": family_id })
            .await?;
        Ok(done.deleted_count)
    }
}
