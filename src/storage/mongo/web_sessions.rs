//! `sessions` on MongoDB: the [`WebSessionStore`] of portal sessions, keyed
//! by the hash of the session id.

use async_trait::async_trait;
use bson::doc;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{bson_date, MongoStore};
use crate::domain::{TokenHash, UserId};
use crate::storage::{StoreResult, WebSessionRecord, WebSessionStore};

/// A browser session in the `sessions` collection, keyed by the hash of its
/// id.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SessionDoc {
    #[serde(rename = "_id")]
    id_hash: String,
    #[serde(default)]
    user_id: Option<String>,
    data: String,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    refresh_family: Option<String>,
    created_at: bson::DateTime,
    last_used_at: bson::DateTime,
    expires_at: bson::DateTime,
}

impl SessionDoc {
    fn new(s: &WebSessionRecord) -> Self {
        Self {
            id_hash: s.id_hash.as_str().to_owned(),
            user_id: s.user_id.as_ref().map(|u| u.as_str().to_owned()),
            data: s.data.clone(),
            user_agent: s.user_agent.clone(),
            ip_address: s.ip_address.clone(),
            refresh_family: s.refresh_family.clone(),
            created_at: bson_date(s.created_at),
            last_used_at: bson_date(s.last_used_at),
            expires_at: bson_date(s.expires_at),
        }
    }
}

impl From<SessionDoc> for WebSessionRecord {
    fn from(doc: SessionDoc) -> Self {
        WebSessionRecord {
            id_hash: TokenHash::from_stored(doc.id_hash),
            user_id: doc.user_id.map(UserId::new),
            data: doc.data,
            user_agent: doc.user_agent,
            ip_address: doc.ip_address,
            refresh_family: doc.refresh_family,
            created_at: doc.created_at.to_chrono(),
            last_used_at: doc.last_used_at.to_chrono(),
            expires_at: doc.expires_at.to_chrono(),
        }
    }
}

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
        Ok(self
            .sessions
            .find_one(doc! { "_id": id_hash.as_str(), "expires_at": { "$gt": bson_date(now) } })
            .await?
            .map(WebSessionRecord::from))
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
        Ok(docs.into_iter().map(WebSessionRecord::from).collect())
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
