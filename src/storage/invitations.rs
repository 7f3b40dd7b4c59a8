//! Invitations (issue 19): [`InvitationStore`], the open invitations an
//! administrator sent.
//!
//! An invitation is stored only while it is open (pending, or expired and
//! not yet resent or revoked): accepting takes it (deletes it) and revoking
//! deletes it. The audit trail keeps the history, and no used token hash
//! stays behind. One open invitation per address: the email is unique.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{stored_count, StoreResult, StoredInstant};
use crate::domain::{EmailAddress, PersonName, Role, TokenHash, UserId};

/// An open invitation. No token: only its hash is stored, and that is
/// not handed out either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub id: String,
    pub email: EmailAddress,
    pub name: PersonName,
    pub role: Role,
    /// The administrator who sent it.
    pub invited_by: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// How many times it was sent again (each time with a new link).
    pub resend_count: u32,
    pub last_sent_at: DateTime<Utc>,
}

/// An invitation to be stored; the store assigns the id.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    pub email: EmailAddress,
    pub name: PersonName,
    pub role: Role,
    pub token_hash: TokenHash,
    pub invited_by: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// An invitation as both backends store it: an `invitations` row (SQLite,
/// `T = i64`) or document (MongoDB, `T = bson::DateTime`), the id a UUIDv7
/// as text on both. No `Debug`: it holds the token hash.
#[derive(sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct StoredInvitation<T> {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) token_hash: String,
    pub(crate) invited_by: String,
    pub(crate) created_at: T,
    pub(crate) expires_at: T,
    pub(crate) resend_count: i64,
    pub(crate) last_sent_at: T,
}

impl<T: StoredInstant> StoredInvitation<T> {
    /// `invitation` as first sent, under a new time-ordered id (which
    /// keeps the list in the order they were sent).
    pub(crate) fn new(invitation: &NewInvitation) -> Self {
        Self {
            id: uuid::Uuid::now_v7().simple().to_string(),
            email: invitation.email.as_str().to_owned(),
            name: invitation.name.as_str().to_owned(),
            role: invitation.role.as_str().to_owned(),
            token_hash: invitation.token_hash.as_str().to_owned(),
            invited_by: invitation.invited_by.as_str().to_owned(),
            created_at: T::from_utc(invitation.created_at),
            expires_at: T::from_utc(invitation.expires_at),
            resend_count: 0,
            last_sent_at: T::from_utc(invitation.created_at),
        }
    }
}

impl<T: StoredInstant> TryFrom<StoredInvitation<T>> for Invitation {
    type Error = super::StoreError;

    fn try_from(stored: StoredInvitation<T>) -> StoreResult<Self> {
        Ok(Invitation {
            id: stored.id,
            email: EmailAddress::from_stored(stored.email),
            name: PersonName::from_stored(stored.name),
            // As stored, even a role ROLES no longer lists: accepting then
            // gives that role, which start-up reports like any other.
            role: Role::from_stored(&stored.role),
            invited_by: UserId::new(stored.invited_by),
            created_at: stored.created_at.to_utc()?,
            expires_at: stored.expires_at.to_utc()?,
            resend_count: stored_count(stored.resend_count),
            last_sent_at: stored.last_sent_at.to_utc()?,
        })
    }
}

/// The most invitations one listing returns (a clinic has far fewer open).
pub const INVITATIONS_LISTED_MAX: u32 = 1000;

#[async_trait]
pub trait InvitationStore: Send + Sync {
    /// Stores a new invitation. `Err(Conflict)` when the address already
    /// has an open one (pending or expired), and then nothing is stored.
    async fn create_invitation(&self, invitation: &NewInvitation) -> StoreResult<Invitation>;

    /// Open invitations, oldest first, at most [`INVITATIONS_LISTED_MAX`].
    async fn list_invitations(&self) -> StoreResult<Vec<Invitation>>;

    /// `Ok(None)` when no open invitation has that id.
    async fn find_invitation(&self, id: &str) -> StoreResult<Option<Invitation>>;

    /// The open invitation to that (already normalised) address, expired or
    /// not; `Ok(None)` when there is none.
    async fn find_invitation_by_email(
        &self,
        email: &EmailAddress,
    ) -> StoreResult<Option<Invitation>>;

    /// The invitation whose link has that hash, if still unexpired at
    /// `now`, without using it: the page behind the link shows the form
    /// (a mail scanner opening the link must not burn it).
    async fn find_invitation_by_token(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Invitation>>;

    /// Gives the invitation a new link (the old one stops working) that
    /// expires at `expires_at`, counts the resend and records `now` as the
    /// last send. `Ok(None)` when no open invitation has that id.
    async fn renew_invitation(
        &self,
        id: &str,
        hash: &TokenHash,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Invitation>>;

    /// Atomically takes (deletes) the invitation whose link has that hash
    /// if it is unexpired at `now`. Single use: of concurrent callers at
    /// most one gets `Some`. An expired invitation is left in place (the
    /// admin sees it as expired and can resend it) and yields `None`.
    async fn take_invitation(
        &self,
        hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Invitation>>;

    /// Deletes (revokes) the invitation. False when no open invitation has
    /// that id.
    async fn delete_invitation(&self, id: &str) -> StoreResult<bool>;
}
