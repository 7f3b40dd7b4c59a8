//! The durable email outbox (`email_queue`): messages stored with the change
//! that causes them and handed out to background senders under a lease.
//!
//! A queued message is sealed (encrypted and authenticated) by the outbox
//! service before it reaches the store; the store sees only what it needs
//! to schedule and check it: when it is due, whose it is, what kind, and
//! the hash of the link it carries, never the address or the link itself.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    stored_count, NewOneTimeToken, NewUser, StoreError, StoreResult, StoredInstant, TokenPurpose,
};
use crate::domain::{TokenHash, User, UserId};

/// The single-use link a message delivers: the sender checks before each
/// attempt that this token is still the user's current one (stored,
/// unexpired, not consumed, not replaced by a newer link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedLink {
    pub purpose: TokenPurpose,
    pub token_hash: TokenHash,
}

/// A message to be queued. The id is chosen by the caller because the
/// sealed payload is bound to it (a payload moved to another row does not
/// open).
#[derive(Clone)]
pub struct NewQueuedEmail {
    pub id: String,
    /// What it is (`password_reset`, `verify_email`, ...): for logs and
    /// metrics, never secret.
    pub kind: String,
    /// The recipient's account, for logs without the address. For
    /// [`EmailQueueStore::create_user_and_queue`] the store sets it to the
    /// new user's id.
    pub user_id: Option<UserId>,
    pub link: Option<QueuedLink>,
    /// Nonce and ciphertext: the recipient and everything the message says.
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// First attempt not before this.
    pub due_at: DateTime<Utc>,
}

impl std::fmt::Debug for NewQueuedEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewQueuedEmail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// A message a sender has claimed.
#[derive(Clone)]
pub struct QueuedEmail {
    pub id: String,
    pub kind: String,
    pub user_id: Option<UserId>,
    pub link: Option<QueuedLink>,
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// The claim this copy was handed out under: only it can finish or
    /// reschedule the message.
    pub claim: String,
}

impl std::fmt::Debug for QueuedEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedEmail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("user_id", &self.user_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A queued message as both backends store it: an `email_queue` row
/// (SQLite, `T = i64`) or document (MongoDB, `T = bson::DateTime`). No
/// `Debug`: the payload is sealed, but there is no reason to print it
/// either.
#[derive(sqlx::FromRow, Serialize, Deserialize)]
pub(crate) struct StoredEmail<T> {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) user_id: Option<String>,
    #[serde(default)]
    pub(crate) link_purpose: Option<String>,
    #[serde(default)]
    pub(crate) link_hash: Option<String>,
    #[serde(with = "serde_bytes")]
    pub(crate) payload: Vec<u8>,
    pub(crate) created_at: T,
    /// Also the lease: a claim moves it to when the claim runs out.
    pub(crate) due_at: T,
    #[serde(default)]
    pub(crate) attempts: i64,
    #[serde(default)]
    pub(crate) claimed_by: Option<String>,
}

impl<T: StoredInstant> StoredEmail<T> {
    /// `email` as queued, unclaimed; `user_id` overrides the message's own
    /// (a new user's id, which the message could not know).
    pub(crate) fn new(email: &NewQueuedEmail, user_id: Option<&UserId>) -> Self {
        let (link_purpose, link_hash) = QueuedLink::to_stored(email.link.as_ref());
        Self {
            id: email.id.clone(),
            kind: email.kind.clone(),
            user_id: user_id
                .or(email.user_id.as_ref())
                .map(|u| u.as_str().to_owned()),
            link_purpose: link_purpose.map(str::to_owned),
            link_hash: link_hash.map(str::to_owned),
            payload: email.payload.clone(),
            created_at: T::from_utc(email.created_at),
            due_at: T::from_utc(email.due_at),
            attempts: 0,
            claimed_by: None,
        }
    }
}

impl<T: StoredInstant> TryFrom<StoredEmail<T>> for QueuedEmail {
    type Error = StoreError;

    fn try_from(stored: StoredEmail<T>) -> StoreResult<Self> {
        Ok(QueuedEmail {
            id: stored.id,
            kind: stored.kind,
            user_id: stored.user_id.map(UserId::new),
            link: QueuedLink::from_stored(stored.link_purpose, stored.link_hash)?,
            payload: stored.payload,
            created_at: stored.created_at.to_utc()?,
            attempts: stored_count(stored.attempts),
            claim: stored.claimed_by.unwrap_or_default(),
        })
    }
}

/// What is waiting, for the metrics and for the sender's next wake-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages stored (due, waiting for a retry, or being sent).
    pub depth: u64,
    pub oldest_created_at: Option<DateTime<Utc>>,
    /// When the next message falls due (or a claim on one runs out).
    pub next_due_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait EmailQueueStore: Send + Sync {
    /// Queues a message that carries no link (a notice).
    async fn queue_email(&self, email: &NewQueuedEmail) -> StoreResult<()>;

    /// Stores `token` as the user's link for `purpose` (replacing the one
    /// before, as [`super::OneTimeTokenStore::replace_one_time_token`]) and
    /// queues `email`, which carries it. A store with transactions commits
    /// both at once; one without stores the token first, so a queued link
    /// always has its token (a failure in between leaves a link nobody was
    /// sent, and the caller gets the error).
    async fn replace_link_and_queue(
        &self,
        purpose: TokenPurpose,
        token: &NewOneTimeToken,
        email: &NewQueuedEmail,
    ) -> StoreResult<()>;

    /// [`super::UserStore::create_user`] with its `verification_link`, and
    /// `email` (which carries that link) queued for the new user, in the
    /// same way: one commit where the store can, otherwise user, link, then
    /// message.
    async fn create_user_and_queue(
        &self,
        user: &NewUser,
        email: &NewQueuedEmail,
    ) -> StoreResult<User>;

    /// Claims up to `limit` messages due at `now`, earliest due first: each
    /// becomes due again only at `lease_until` (so a sender that dies with
    /// it does not hold it for ever) and is tagged with `claim`, and its
    /// attempt count goes up by one. Atomic per message: of concurrent
    /// claimers, in this process or in other instances on the same
    /// database, exactly one gets each message.
    async fn claim_due_emails(
        &self,
        claim: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueuedEmail>>;

    /// Deletes a message that was sent, dropped or given up on. False when
    /// it is no longer held under `claim` (the lease ran out and another
    /// sender took it, or it is gone).
    async fn finish_email(&self, id: &str, claim: &str) -> StoreResult<bool>;

    /// Releases a claimed message to be tried again at `due_at`. False as
    /// for [`EmailQueueStore::finish_email`].
    async fn retry_email_at(
        &self,
        id: &str,
        claim: &str,
        due_at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// How many messages are stored, the oldest, and the next due time.
    async fn email_queue_stats(&self) -> StoreResult<QueueStats>;
}

impl QueuedLink {
    /// The link of a stored message from its two columns (fields); both
    /// or neither are set.
    pub fn from_stored(purpose: Option<String>, hash: Option<String>) -> StoreResult<Option<Self>> {
        let (Some(purpose), Some(hash)) = (purpose, hash) else {
            return Ok(None);
        };
        let purpose = purpose_from_name(&purpose).ok_or_else(|| {
            StoreError::Other(anyhow::anyhow!("email_queue: unknown link purpose"))
        })?;
        Ok(Some(QueuedLink {
            purpose,
            token_hash: TokenHash::from_stored(hash),
        }))
    }

    /// The columns (fields) a link is stored in.
    pub fn to_stored(link: Option<&QueuedLink>) -> (Option<&'static str>, Option<&str>) {
        (
            link.map(|l| purpose_name(l.purpose)),
            link.map(|l| l.token_hash.as_str()),
        )
    }
}

/// [`EmailQueueStore::create_user_and_queue`] queues the email that carries
/// the user's first link: without one there is nothing to carry.
pub fn require_verification_link(user: &NewUser) -> StoreResult<()> {
    if user.verification_link.is_none() {
        return Err(StoreError::Other(anyhow::anyhow!(
            "a queued verification email needs the user's verification link"
        )));
    }
    Ok(())
}

/// How purposes are named in the queue's `link_purpose` column/field.
fn purpose_name(purpose: TokenPurpose) -> &'static str {
    match purpose {
        TokenPurpose::PasswordReset => "password_reset",
        TokenPurpose::EmailVerification => "email_verification",
        // Never queued: a challenge token goes back in the sign-in answer.
        TokenPurpose::MfaChallenge => "mfa_challenge",
    }
}

/// The inverse of [`purpose_name`]; `None` for anything else.
fn purpose_from_name(name: &str) -> Option<TokenPurpose> {
    match name {
        "password_reset" => Some(TokenPurpose::PasswordReset),
        "email_verification" => Some(TokenPurpose::EmailVerification),
        _ => None,
    }
}
