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

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::domain::{User, UserId};
use crate::email::sealed::{Content, Letter, Sealer};
use crate::email::Mailer;
use crate::storage::{NewQueuedEmail, QueuedEmail, QueuedLink, Store, StoreError};

/// The first retry comes within this (jittered down to half of it).
pub const BACKOFF_FIRST: Duration = Duration::from_secs(4);
/// Retries slow down to at most one per this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// How often the sender looks for due messages when nothing woke it:
/// retries it scheduled wake it on time, so this catches other instances'
/// messages whose sender died, and lets the gauges move.
const POLL: Duration = Duration::from_secs(5);
/// What a claim lasts beyond MAIL_TIMEOUT: room for the link check and the
/// write that finishes the message, so a live sender's claim never runs out
/// under it.
const LEASE_MARGIN: Duration = Duration::from_secs(60);
/// Pacing while the store itself fails.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(500);
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

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
    store: Arc<dyn Store>,
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

/// How one attempt ended.
enum Outcome {
    Sent,
    /// The link was used, replaced or (nearly) expired: never sent.
    LinkDead,
    /// The payload does not open (the key changed) or does not render.
    Unreadable(anyhow::Error),
    /// Worth another try later.
    Failed {
        timed_out: bool,
        error: anyhow::Error,
    },
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

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
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
        store: Arc<dyn Store>,
        mailer: Arc<dyn Mailer>,
        sealer: Sealer,
        settings: OutboxSettings,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
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
                match self.store.email_queue_stats().await {
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

    /// The sender. It claims only when it knows something is due: a
    /// message was queued here, one of its own attempts scheduled a retry
    /// that has come, or the queue's next due time (read every [`POLL`],
    /// which also moves the gauges and catches messages whose sender died)
    /// has passed. So a message costs three store calls here (claim, link
    /// check, finish), not a claim and a read at every wake-up.
    async fn run(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let lease = to_chrono(self.settings.timeout.saturating_mul(2) + LEASE_MARGIN);
        let mut store_retry = STORE_RETRY_FIRST;
        // When the next message not in our hands falls due, as far as we
        // know; `None`: nothing known before the next observation.
        let mut next_due: Option<DateTime<Utc>> = None;
        let mut observed: Option<tokio::time::Instant> = None;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            if observed.is_none_or(|at| at.elapsed() >= POLL) {
                next_due = earliest(next_due, self.observe().await);
                observed = Some(tokio::time::Instant::now());
            }
            if self.due_now.swap(false, Ordering::SeqCst) {
                next_due = Some(self.clock.now());
            }
            let retry = self.next_retry.swap(i64::MAX, Ordering::SeqCst);
            next_due = earliest(next_due, DateTime::from_timestamp_millis(retry));
            let now = self.clock.now();
            let free = slots.available_permits();
            let mut wait = POLL.saturating_sub(observed.map_or(POLL, |at| at.elapsed()));
            if free > 0 && next_due.is_some_and(|due| due <= now) {
                let claim = format!("{}-{}", self.instance, uuid::Uuid::new_v4().simple());
                let limit = u32::try_from(free).unwrap_or(u32::MAX);
                match self
                    .store
                    .claim_due_emails(&claim, now, now + lease, limit)
                    .await
                {
                    Ok(batch) => {
                        store_retry = STORE_RETRY_FIRST;
                        // A full batch may have left more due: claim again
                        // once a slot frees. Otherwise nothing else is due
                        // now; later ones are our own retries (tracked) or
                        // another sender's (seen at the next observation).
                        next_due = (batch.len() == free).then_some(now);
                        for email in batch {
                            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                                break;
                            };
                            self.in_flight.fetch_add(1, Ordering::SeqCst);
                            let this = Arc::clone(&self);
                            tokio::spawn(async move {
                                this.attempt(email).await;
                                drop(slot);
                                this.in_flight.fetch_sub(1, Ordering::SeqCst);
                                this.wake.notify_one();
                                this.progress.notify_waiters();
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %format!("{:#}", anyhow::Error::from(e)),
                            retry_in_ms = store_retry.as_millis() as u64,
                            "cannot claim queued emails"
                        );
                        // Still due: tried again after the pause.
                        next_due = Some(now + to_chrono(store_retry));
                        store_retry = (store_retry * 2).min(STORE_RETRY_MAX);
                    }
                }
            }
            if let Some(due) = next_due.filter(|_| slots.available_permits() > 0) {
                // A floor, so a due message that another sender holds
                // cannot spin this loop.
                let until = (due - self.clock.now()).to_std().unwrap_or_default();
                wait = wait.min(until).max(Duration::from_millis(20));
            }
            self.progress.notify_waiters();
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Updates the queue gauges; returns when the next message falls due.
    async fn observe(&self) -> Option<DateTime<Utc>> {
        match self.store.email_queue_stats().await {
            Ok(stats) => {
                let age = stats.oldest_created_at.map_or(0.0, |t| {
                    (self.clock.now() - t).num_milliseconds().max(0) as f64 / 1000.0
                });
                metrics::gauge!(crate::metrics::EMAIL_QUEUE_DEPTH).set(stats.depth as f64);
                metrics::gauge!(crate::metrics::EMAIL_OLDEST_AGE).set(age);
                stats.next_due_at
            }
            Err(e) => {
                tracing::warn!(error = %format!("{:#}", anyhow::Error::from(e)), "cannot read the email queue");
                None
            }
        }
    }

    /// One attempt at one claimed message, and what becomes of it.
    async fn attempt(&self, email: QueuedEmail) {
        let outcome = self.deliver(&email).await;
        let user_id = email.user_id.as_ref().map(|u| u.as_str());
        let kind = email.kind.as_str();
        let done = match outcome {
            Outcome::Sent => {
                count_attempt("sent");
                tracing::info!(
                    user_id,
                    email = kind,
                    attempts = email.attempts,
                    "email sent"
                );
                self.store.finish_email(&email.id, &email.claim).await
            }
            Outcome::LinkDead => {
                count_dropped("link_dead");
                tracing::info!(
                    user_id,
                    email = kind,
                    "queued email dropped: its link was used, replaced by a newer one or expired"
                );
                self.store.finish_email(&email.id, &email.claim).await
            }
            Outcome::Unreadable(error) => {
                count_dropped("unreadable");
                tracing::error!(user_id, email = kind, error = %format!("{error:#}"), "queued email dropped: it cannot be read");
                self.store.finish_email(&email.id, &email.claim).await
            }
            Outcome::Failed { timed_out, error } => {
                count_attempt(if timed_out { "timeout" } else { "failed" });
                let now = self.clock.now();
                if now >= email.created_at + to_chrono(self.settings.retry_for) {
                    count_dropped("gave_up");
                    tracing::error!(
                        user_id,
                        email = kind,
                        attempts = email.attempts,
                        error = %format!("{error:#}"),
                        "email given up: not delivered within MAIL_RETRY_FOR"
                    );
                    self.store.finish_email(&email.id, &email.claim).await
                } else {
                    let delay = backoff(email.attempts);
                    let due = now + to_chrono(delay);
                    tracing::warn!(
                        user_id,
                        email = kind,
                        attempts = email.attempts,
                        timed_out,
                        retry_in_secs = delay.as_secs_f64(),
                        error = %format!("{error:#}"),
                        "email not delivered; will retry"
                    );
                    let released = self
                        .store
                        .retry_email_at(&email.id, &email.claim, due)
                        .await;
                    // Our own sender wakes for it when it falls due.
                    self.next_retry
                        .fetch_min(due.timestamp_millis(), Ordering::SeqCst);
                    released
                }
            }
        };
        match done {
            Ok(true) => {}
            // The lease ran out under a very slow attempt and another
            // sender holds the message now: it decides.
            Ok(false) => tracing::warn!(
                user_id,
                email = kind,
                "queued email was claimed again meanwhile"
            ),
            Err(e) => tracing::warn!(
                user_id,
                email = kind,
                error = %format!("{:#}", anyhow::Error::from(e)),
                "cannot update the queued email; it is tried again when its lease runs out"
            ),
        }
    }

    async fn deliver(&self, email: &QueuedEmail) -> Outcome {
        let letter = match self
            .sealer
            .open(&email.payload, &bound_to(&email.id, email.link.as_ref()))
        {
            Ok(letter) => letter,
            Err(e) => return Outcome::Unreadable(e),
        };
        if let Some(link) = &email.link {
            // Alive until the attempt's deadline at least: a link that dies
            // while the message travels is no use to anyone.
            let deadline = self.clock.now() + to_chrono(self.settings.timeout);
            match self
                .store
                .find_one_time_token(link.purpose, &link.token_hash, deadline)
                .await
            {
                Ok(Some(owner)) if email.user_id.as_ref().is_none_or(|u| *u == owner) => {}
                Ok(_) => return Outcome::LinkDead,
                Err(e) => {
                    return Outcome::Failed {
                        timed_out: false,
                        error: store_error(e),
                    }
                }
            }
        }
        let mut outgoing = match letter.compose(&self.settings.app_name, &self.settings.app_url) {
            Ok(outgoing) => outgoing,
            Err(e) => return Outcome::Unreadable(e),
        };
        outgoing.message_id = Some(format!(
            "<{}@{}>",
            email.id, self.settings.message_id_domain
        ));
        // The whole attempt, not just the connect: dropping the future
        // closes its connection, so a server that never answers holds a
        // socket for MAIL_TIMEOUT at most.
        match tokio::time::timeout(self.settings.timeout, self.mailer.send(outgoing)).await {
            Ok(Ok(())) => Outcome::Sent,
            Ok(Err(error)) => Outcome::Failed {
                timed_out: false,
                error,
            },
            Err(_) => Outcome::Failed {
                timed_out: true,
                error: anyhow::anyhow!(
                    "no answer within MAIL_TIMEOUT ({:?})",
                    self.settings.timeout
                ),
            },
        }
    }
}

/// The earlier of two known times.
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn store_error(e: StoreError) -> anyhow::Error {
    anyhow::Error::from(e).context("cannot check the link's token")
}

fn count_attempt(outcome: &'static str) {
    metrics::counter!(crate::metrics::EMAIL_ATTEMPTS, "outcome" => outcome).increment(1);
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
