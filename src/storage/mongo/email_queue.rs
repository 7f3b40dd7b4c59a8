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

use super::{bson_date, MongoStore};
use crate::domain::{User, UserId};
use crate::storage::email_queue::{require_verification_link, StoredEmail};
use crate::storage::{
    EmailQueueStore, NewOneTimeToken, NewQueuedEmail, NewUser, OneTimeTokenStore, QueueStats,
    QueuedEmail, StoreError, StoreResult, TokenPurpose, UserStore,
};

pub(super) const COLLECTION: &str = "email_queue";

/// An `email_queue` document.
type QueueDoc = StoredEmail<bson::DateTime>;

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
