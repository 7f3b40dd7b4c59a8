//! The sender: claims due messages, runs each attempt (link check,
//! delivery under MAIL_TIMEOUT) and finishes, reschedules or drops it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

use super::{backoff, bound_to, count_dropped, Outbox};
use crate::services::span;
use crate::storage::{QueuedEmail, StoreError};

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

impl Outbox {
    /// The sender. It claims only when it knows something is due: a
    /// message was queued here, one of its own attempts scheduled a retry
    /// that has come, or the queue's next due time (read every [`POLL`],
    /// which also moves the gauges and catches messages whose sender died)
    /// has passed. So a message costs three store calls here (claim, link
    /// check, finish), not a claim and a read at every wake-up.
    pub(super) async fn run(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let lease = span(self.settings.timeout.saturating_mul(2) + LEASE_MARGIN);
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
                    .queue
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
                        next_due = Some(now + span(store_retry));
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
        match self.queue.email_queue_stats().await {
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
                self.queue.finish_email(&email.id, &email.claim).await
            }
            Outcome::LinkDead => {
                count_dropped("link_dead");
                tracing::info!(
                    user_id,
                    email = kind,
                    "queued email dropped: its link was used, replaced by a newer one or expired"
                );
                self.queue.finish_email(&email.id, &email.claim).await
            }
            Outcome::Unreadable(error) => {
                count_dropped("unreadable");
                tracing::error!(user_id, email = kind, error = %format!("{error:#}"), "queued email dropped: it cannot be read");
                self.queue.finish_email(&email.id, &email.claim).await
            }
            Outcome::Failed { timed_out, error } => {
                count_attempt(if timed_out { "timeout" } else { "failed" });
                let now = self.clock.now();
                if now >= email.created_at + span(self.settings.retry_for) {
                    count_dropped("gave_up");
                    tracing::error!(
                        user_id,
                        email = kind,
                        attempts = email.attempts,
                        error = %format!("{error:#}"),
                        "email given up: not delivered within MAIL_RETRY_FOR"
                    );
                    self.queue.finish_email(&email.id, &email.claim).await
                } else {
                    let delay = backoff(email.attempts);
                    let due = now + span(delay);
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
                        .queue
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
            let deadline = self.clock.now() + span(self.settings.timeout);
            match self
                .links
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
