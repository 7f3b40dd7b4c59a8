//! `invitations` on MongoDB: the [`InvitationStore`]. One document per
//! open invitation, its `_id` a UUIDv7 as text; unique indexes on `email`
//! (one open invitation per address) and `token_hash`. Taking one is a
//! single `find_one_and_delete`, which the server applies atomically: of
//! concurrent accepts only one gets the document.

use async_trait::async_trait;
use bson::doc;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::options::ReturnDocument;
use mongodb::Collection;

use super::{bson_date, MongoStore};
use crate::domain::{EmailAddress, TokenHash};
use crate::storage::{
    Invitation, InvitationStore, NewInvitation, StoreResult, StoredInvitation,
    INVITATIONS_LISTED_MAX,
};

pub(super) const COLLECTION: &str = "invitations";

type InvitationDoc = StoredInvitation<bson::DateTime>;

/// The invitation with that link, if unexpired at `now` (the expiry is
/// checked here, never left to a TTL monitor).
fn live(hash: &TokenHash, now: DateTime<Utc>) -> bson::Document {
    doc! { "token_hash": hash.as_str(), "expires_at": { "$gt": bson_date(now) } }
}

fn decode(doc: Option<InvitationDoc>) -> StoreResult<Option<Invitation>> {
    doc.map(Invitation::try_from).transpose()
}

impl MongoStore {
    fn invitations(&self) -> Collection<InvitationDoc> {
        self.db.collection(COLLECTION)
    }
}

#[async_trait]
impl InvitationStore for MongoStore {
    async fn create_invitation(&self, invitation: &NewInvitation) -> StoreResult<Invitation> {
        // The unique email index must exist before the first insert, or
        // two invitations to one address could both be stored.
        self.indexes.ensure().await?;
        let doc = InvitationDoc::new(invitation);
        self.invitations().insert_one(&doc).await?;
        Invitation::try_from(doc)
    }

    async fn list_invitations(&self) -> StoreResult<Vec<Invitation>> {
        let docs: Vec<InvitationDoc> = self
            .invitations()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .limit(i64::from(INVITATIONS_LISTED_MAX))
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(Invitation::try_from).collect()
    }

    async fn find_invitation(&self, id: &str) -> StoreResult<Option<Invitation>> {
        decode(self.invitations().find_one(doc! { "_id": id }).await?)
    }

    async fn find_invitation_by_email(
        &self,
        email: &EmailAddress,
    ) -> StoreResult<Option<Invitation>> {
        decode(
            self.invitations()
                .find_one(doc! { "email": email.as_str() })
                .await?,
        )
    }

    async fn find_invitation_by_token(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Invitation>> {
        decode(
            self.invitations()
                .find_one(
                    doc! { "token_hash": hash.as_str(), "expires_at": { "$gt": bson_date(now) } },
                )
                .await?,
        )
    }

    async fn renew_invitation(
        &self,
        id: &str,
        hash: &TokenHash,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Invitation>> {
        let doc = self
            .invitations()
            .find_one_and_update(
                doc! { "_id": id },
                doc! {
                    "$set": {
                        "token_hash": hash.as_str(),
                        "expires_at": bson_date(expires_at),
                        "last_sent_at": bson_date(now),
                    },
                    "$inc": { "resend_count": 1_i64 },
                },
            )
            .return_document(ReturnDocument::After)
            .await?;
        decode(doc)
    }

    async fn take_invitation(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Invitation>> {
        decode(
            self.invitations()
                .find_one_and_delete(live(hash, now))
                .await?,
        )
    }

    async fn delete_invitation(&self, id: &str) -> StoreResult<bool> {
        let done = self.invitations().delete_one(doc! { "_id": id }).await?;
        Ok(done.deleted_count == 1)
    }
}
