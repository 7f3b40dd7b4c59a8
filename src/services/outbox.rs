//! The durable email outbox: requests queue sealed messages in the store
//! (with the change that causes them), and one sender per instance
//! delivers them in the background.
//!
//! What it guarantees, and why each part is there:
//! - Nothing queued is lost while the mail server is down: a failed
//!   attempt is retried with exponential backoff and jitter (the first
//!   retry within [`BACKOFF_FIRST`], then doubling up to [`BACKOFF_MAX`])
//!   until MAIL_RETRY_FOR after the message was queued.
//! - A server that accepts and never answers costs bounded resources: each
//!   attempt is cut off at MAIL_TIMEOUT as a whole (lettre's own timeout
//!   covers only the connect), dropping the attempt closes its socket, and
//!   at most MAIL_CONCURRENCY attempts run at once.
//! - A link is sent only while it is the user's current one: before each
//!   attempt the sender checks that its token is still stored, unexpired
//!   for the whole attempt, and not replaced by a newer link or used.
//!   Otherwise the message is dropped, never sent.
//! - Several instances never send one message at the same time: a sender
//!   claims messages with a lease (an atomic conditional update), and only
//!   the holder of the claim finishes or reschedules them. A sender that
//!   dies mid-attempt gives its messages back when the lease runs out; one
//!   whose delivery was not confirmed may then be delivered twice (SMTP has
//!   no exactly-once), with the same Message-ID.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::domain::{User, UserId};
use crate::email::sealed::{Content, Letter, Sealer};
use crate::email::Mailer;
use crate::storage::{EmailQueueStore, NewQueuedEmail, OneTimeTokenStore, QueuedLink};

mod sender;

/// The first retry comes within this (jittered down to half of it).
pub const BACKOFF_FIRST: Duration = Duration::from_secs(4);
/// Retries slow down to at most one per this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// What the sender needs to know.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub app_name: String,
    pub app_url: String,
    /// The domain of MAIL_FROM, for Message-IDs.
    pub message_id_domain: String,
    /// MAIL_TIMEOUT: one whole delivery attempt.
    pub timeout: Duration,
    /// MAIL_RETRY_FOR: how long after queueing a message is retried.
    pub retry_for: Duration,
    /// MAIL_CONCURRENCY: attempts at once.
    pub concurrency: usize,
}

pub struct Outbox {
    queue: Arc<dyn EmailQueueStore>,
    /// A link's token is checked before each attempt.
    links: Arc<dyn OneTimeTokenStore>,
    mailer: Arc<dyn Mailer>,
    sealer: Sealer,
    settings: OutboxSettings,
    /// Due times, link expiry and the retry deadline go by it.
    clock: Arc<dyn Clock>,
    /// This process, in claims (a fresh suffix per claim).
    instance: String,
    /// Wakes the sender: a message was queued, or a send slot came free.
    wake: Notify,
    /// Tells [`Outbox::settled`] waiters that something moved.
    progress: Notify,
    /// A message was queued here: claim now.
    due_now: AtomicBool,
    /// The earliest retry this sender's attempts scheduled since it last
    /// looked (Unix milliseconds; `i64::MAX`: none).
    next_retry: AtomicI64,
    /// Attempts running now.
    in_flight: AtomicUsize,
    /// Requests that will queue a message and have not yet (see
    /// [`Outbox::will_queue`]).
    pending: AtomicUsize,
    stopping: AtomicBool,
}

/// Who a message is for. A registration's email is sealed before the
/// store assigns the user's id (the store files it under the new id).
#[derive(Clone, Copy)]
pub struct Recipient<'a> {
    pub name: &'a str,
    pub address: &'a str,
    pub user_id: Option<&'a UserId>,
}

impl<'a> From<&'a User> for Recipient<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            name: user.name.as_str(),
            address: user.email.as_str(),
            user_id: Some(&user.id),
        }
    }
}

/// Counts one `will_queue` until dropped.
pub struct PendingEmail(Arc<Outbox>);

impl Drop for PendingEmail {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
        self.0.wake.notify_one();
        self.0.progress.notify_waiters();
    }
}

/// The delay before retry number `attempts` (1 for the first retry):
/// doubling from [`BACKOFF_FIRST`] up to [`BACKOFF_MAX`], each drawn from
/// its upper half so instances that failed together do not retry together.
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    let ceiling = BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX);
    ceiling.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// What the sealed payload is bound to: its row and its link.
fn bound_to(id: &str, link: Option<&QueuedLink>) -> Vec<u8> {
    let mut aad = id.as_bytes().to_vec();
    aad.push(0);
    if let Some(link) = link {
        aad.extend_from_slice(link.token_hash.as_str().as_bytes());
    }
    aad
}

impl Outbox {
    pub fn new(
        queue: Arc<dyn EmailQueueStore>,
        links: Arc<dyn OneTimeTokenStore>,
        mailer: Arc<dyn Mailer>,
        sealer: Sealer,
        settings: OutboxSettings,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue,
            links,
            mailer,
            sealer,
            settings,
            clock,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            wake: Notify::new(),
            progress: Notify::new(),
            due_now: AtomicBool::new(true),
            next_retry: AtomicI64::new(i64::MAX),
            in_flight: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        })
    }

    /// A sealed message for `to`, due now. `link` is the token the
    /// content's link carries, checked before every attempt.
    pub fn letter(
        &self,
        to: Recipient<'_>,
        content: Content,
        link: Option<QueuedLink>,
    ) -> anyhow::Result<NewQueuedEmail> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let kind = content.kind().to_owned();
        let letter = Letter {
            name: to.name.to_owned(),
            address: to.address.to_owned(),
            content,
        };
        let payload = self.sealer.seal(&letter, &bound_to(&id, link.as_ref()))?;
        let now = self.clock.now();
        Ok(NewQueuedEmail {
            id,
            kind,
            user_id: to.user_id.cloned(),
            link,
            payload,
            created_at: now,
            due_at: now,
        })
    }

    /// A message was stored: send it now rather than at the next poll.
    pub fn queued(&self) {
        self.due_now.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Marks a request that will queue a message from a task of its own
    /// (forgot-password answers before it looks the account up), so
    /// [`Outbox::settled`] waits for it.
    pub fn will_queue(self: &Arc<Self>) -> PendingEmail {
        self.pending.fetch_add(1, Ordering::SeqCst);
        PendingEmail(Arc::clone(self))
    }

    /// Starts the sender.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.run().await })
    }

    /// Stops claiming and waits (at most `grace`) for attempts in flight.
    /// Messages not yet sent stay queued for the next start (or another
    /// instance).
    pub async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let drained = async {
            loop {
                let progressed = self.progress.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                progressed.await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                in_flight = self.in_flight.load(Ordering::SeqCst),
                "email attempts still running at shutdown; their messages are retried after the lease"
            );
        }
    }

    /// Resolves once nothing is left to do now: no request about to queue
    /// a message, no attempt in flight, and no stored message due (those
    /// waiting for a retry do not count). For tests that check what was,
    /// or was not, sent without sleeping.
    pub async fn settled(&self) {
        loop {
            let progressed = self.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            if self.pending.load(Ordering::SeqCst) == 0
                && self.in_flight.load(Ordering::SeqCst) == 0
            {
                match self.queue.email_queue_stats().await {
                    Ok(stats) if stats.next_due_at.is_none_or(|due| due > self.clock.now()) => {
                        return
                    }
                    _ => {}
                }
            }
            self.queued();
            // The sender signals progress; the timer only covers a due
            // message that another instance holds.
            let _ = tokio::time::timeout(Duration::from_millis(50), progressed).await;
        }
    }
}

/// Counts a message that will never be sent.
pub fn count_dropped(reason: &'static str) {
    metrics::counter!(crate::metrics::EMAILS_DROPPED, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_retry_up_to_the_cap() {
        for _ in 0..50 {
            let first = backoff(1);
            assert!(
                first >= BACKOFF_FIRST / 2 && first <= BACKOFF_FIRST,
                "{first:?}"
            );
            let third = backoff(3);
            assert!(third >= BACKOFF_FIRST * 2 && third <= BACKOFF_FIRST * 4);
            let late = backoff(500);
            assert!(late >= BACKOFF_MAX / 2 && late <= BACKOFF_MAX, "{late:?}");
        }
        assert!(
            BACKOFF_FIRST <= Duration::from_secs(30),
            "first retry within 30 s"
        );
    }

    #[test]
    fn payloads_are_bound_to_their_row_and_link() {
        let link = QueuedLink {
            purpose: crate::storage::TokenPurpose::PasswordReset,
            token_hash: crate::domain::TokenHash::of("t"),
        };
        assert_ne!(bound_to("a", None), bound_to("a", Some(&link)));
        assert_ne!(bound_to("a", None), bound_to("b", None));
    }
}
