//! `email_queue` on MongoDB: the durable outbox (see `storage::email_queue`).
//!
//! No multi-document transactions (a standalone `mongod` has none), so a
//! link and its message are two writes, in the order that never sends a
//! link whose token was not stored: the token first, then the message.
//! Should the second write fail, the caller gets the error (a resend or a
//! second forgot-password request sends a fresh link) and no message goes
//! out with a dead link; nothing is lost silently. A claim is one
//! `find_one_and_update` per message, which the server applies atomically
//! to one document, so of several instances exactly one gets it.

use async_trait::async_trait;
use bson::doc;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::options::ReturnDocument;
use mongodb::Collection;
use serde::{Deserialize, Serialize};

use super::{bson_date, MongoStore};
use crate::domain::{User, UserId};
use crate::storage::email_queue::require_verification_link;
use crate::storage::{
    stored_count, EmailQueueStore, NewOneTimeToken, NewQueuedEmail, NewUser, OneTimeTokenStore,
    QueueStats, QueuedEmail, QueuedLink, StoreError, StoreResult, TokenPurpose, UserStore,
};

pub(super) const COLLECTION: &str = "email_queue";

/// One queued message. No `Debug`: the payload is sealed, but there is no
/// reason to print it either.
#[derive(Serialize, Deserialize)]
struct QueueDoc {
    #[serde(rename = "_id")]
    id: String,
    kind: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    link_purpose: Option<String>,
    #[serde(default)]
    link_hash: Option<String>,
    payload: bson::Binary,
    created_at: bson::DateTime,
    /// Also the lease: a claim moves it to when the claim runs out.
    due_at: bson::DateTime,
    #[serde(default)]
    attempts: i64,
    #[serde(default)]
    claimed_by: Option<String>,
}

impl QueueDoc {
    fn new(email: &NewQueuedEmail, user_id: Option<&UserId>) -> Self {
        let (link_purpose, link_hash) = QueuedLink::to_stored(email.link.as_ref());
        Self {
            id: email.id.clone(),
            kind: email.kind.clone(),
            user_id: user_id
                .or(email.user_id.as_ref())
                .map(|u| u.as_str().to_owned()),
            link_purpose: link_purpose.map(str::to_owned),
            link_hash: link_hash.map(str::to_owned),
            payload: bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: email.payload.clone(),
            },
            created_at: bson_date(email.created_at),
            due_at: bson_date(email.due_at),
            attempts: 0,
            claimed_by: None,
        }
    }
}

impl TryFrom<QueueDoc> for QueuedEmail {
    type Error = StoreError;

    fn try_from(doc: QueueDoc) -> StoreResult<Self> {
        Ok(QueuedEmail {
            id: doc.id,
            kind: doc.kind,
            user_id: doc.user_id.map(UserId::new),
            link: QueuedLink::from_stored(doc.link_purpose, doc.link_hash)?,
            payload: doc.payload.bytes,
            created_at: doc.created_at.to_chrono(),
            attempts: stored_count(doc.attempts),
            claim: doc.claimed_by.unwrap_or_default(),
        })
    }
}

impl MongoStore {
    fn email_queue(&self) -> Collection<QueueDoc> {
        self.db.collection(COLLECTION)
    }

    async fn insert_queued(
        &self,
        email: &NewQueuedEmail,
        user: Option<&UserId>,
    ) -> StoreResult<()> {
        self.email_queue()
            .insert_one(QueueDoc::new(email, user))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl EmailQueueStore for MongoStore {
    async fn queue_email(&self, email: &NewQueuedEmail) -> StoreResult<()> {
        self.insert_queued(email, None).await
    }

    async fn replace_link_and_queue(
        &self,
        purpose: TokenPurpose,
        token: &NewOneTimeToken,
        email: &NewQueuedEmail,
    ) -> StoreResult<()> {
        self.replace_one_time_token(purpose, token).await?;
        self.insert_queued(email, None).await
    }

    async fn create_user_and_queue(
        &self,
        user: &NewUser,
        email: &NewQueuedEmail,
    ) -> StoreResult<User> {
        require_verification_link(user)?;
        let created = self.create_user(user).await?;
        self.insert_queued(email, Some(&created.id)).await?;
        Ok(created)
    }

    async fn claim_due_emails(
        &self,
        claim: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueuedEmail>> {
        let mut claimed = Vec::new();
        // One document at a time: MongoDB has no "update the first N and
        // return them", and each find_one_and_update is atomic on its own.
        while claimed.len() < limit as usize {
            let doc = self
                .email_queue()
                .find_one_and_update(
                    doc! { "due_at": { "$lte": bson_date(now) } },
                    doc! {
                        "$set": { "due_at": bson_date(lease_until), "claimed_by": claim },
                        "$inc": { "attempts": 1_i64 },
                    },
                )
                .sort(doc! { "due_at": 1 })
                .return_document(ReturnDocument::After)
                .await?;
            match doc {
                Some(doc) => claimed.push(QueuedEmail::try_from(doc)?),
                None => break,
            }
        }
        Ok(claimed)
    }

    async fn finish_email(&self, id: &str, claim: &str) -> StoreResult<bool> {
        let done = self
            .email_queue()
            .delete_one(doc! { "_id": id, "claimed_by": claim })
            .await?;
        Ok(done.deleted_count == 1)
    }

    async fn retry_email_at(
        &self,
        id: &str,
        claim: &str,
        due_at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = self
            .email_queue()
            .update_one(
                doc! { "_id": id, "claimed_by": claim },
                doc! { "$set": { "due_at": bson_date(due_at), "claimed_by": bson::Bson::Null } },
            )
            .await?;
        Ok(done.matched_count == 1)
    }

    async fn email_queue_stats(&self) -> StoreResult<QueueStats> {
        let queue = self.db.collection::<bson::Document>(COLLECTION);
        let depth = queue.count_documents(doc! {}).await?;
        // Two small indexed reads rather than an aggregation: the same on
        // every server that speaks the wire protocol.
        let first = |field: &'static str| {
            let queue = queue.clone();
            async move {
                let docs: Vec<bson::Document> = queue
                    .find(doc! {})
                    .sort(doc! { field: 1 })
                    .limit(1)
                    .projection(doc! { field: 1 })
                    .await?
                    .try_collect()
                    .await?;
                Ok::<_, StoreError>(
                    docs.first()
                        .and_then(|d| d.get_datetime(field).ok())
                        .map(|t| t.to_chrono()),
                )
            }
        };
        Ok(QueueStats {
            depth,
            oldest_created_at: first("created_at").await?,
            next_due_at: first("due_at").await?,
        })
    }
}
