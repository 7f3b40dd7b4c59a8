//! The audit recorder: how the services write to the audit trail, and the
//! check that the stored chain is whole (its links, its keyed hashes, and
//! the signed checkpoints kept outside the database: see `checkpoints`).
//!
//! An operation is acknowledged only once its audit record is durable
//! (HIPAA 164.312(b)): `record` returns when the transaction holding the
//! event has committed. Throughput comes from group commit, not from
//! answering early: one background writer appends whatever has queued up
//! as one batch (one transaction), and while a batch commits the next one
//! accumulates, so under load many requests share each commit.
//!
//! The writer survives any store error: it keeps the batch, retries with
//! backoff (sooner when the write probe of `health` sees the store take a
//! write again) and never drops an event. A caller waits at most
//! [`RECORD_WAIT`] for its record; past it the operation answers 503 and the
//! event stays queued, to be written when the store recovers. While the
//! writer cannot write, [`Audit::ready`] refuses new audited operations up
//! front, before they change anything.
//!
//! From a service:
//! ```ignore
//! self.audit.record(self.audit.entry(AuditEvent::LoginSuccess, client).user(&user.id)).await?;
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{ClientContext, ServiceError};
use crate::clock::{Clock, SystemClock};
use crate::domain::audit::MAX_EMAIL_CHARS;
use crate::domain::{AuditEvent, AuditKey, AuditOutcome, NewAuditEvent, UserId};
use crate::storage::AuditStore;

mod verify;
mod writer;

pub use verify::{verify_chain, ChainBreak, ChainFault, ChainSummary};

/// How long an operation waits for its audit record to commit before it
/// answers 503 `database_unavailable`. The SQLite busy timeout (5 s) is how
/// long a healthy store may keep a writer waiting for its lock, and MongoDB
/// gives up selecting a server after 3 s: a record still not stored after
/// this long waits for a store that is not coming back soon, and the client
/// is better told so (with Retry-After) than kept hanging.
pub const RECORD_WAIT: Duration = Duration::from_secs(5);

/// One event about to be recorded, built from the request's context.
#[derive(Debug, Clone)]
pub struct AuditEntry(NewAuditEvent);

impl AuditEntry {
    /// An entry for `event` with the client's IP, user agent and request id,
    /// stamped `now`, with the event's usual outcome. Services get one from
    /// [`Audit::entry`], which stamps it with the app's clock.
    pub fn at(event: AuditEvent, client: &ClientContext, now: DateTime<Utc>) -> Self {
        // Both stores keep milliseconds; truncating here makes the hash
        // computed at append the one recomputed from what was stored.
        let time = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        Self(NewAuditEvent {
            id: uuid::Uuid::now_v7().simple().to_string(),
            time,
            event,
            outcome: event.default_outcome(),
            user_id: None,
            email: None,
            ip: client.ip.map(|ip| ip.to_string()),
            user_agent: client.user_agent.clone(),
            request_id: client.request_id.clone(),
            detail: None,
        })
    }

    pub fn user(mut self, id: &UserId) -> Self {
        self.0.user_id = Some(id.as_str().to_owned());
        self
    }

    /// The email the request named, e.g. the attempted one of a failed
    /// login (bounded: it is whatever the client sent).
    pub fn email(mut self, email: &str) -> Self {
        self.0.email = Some(email.trim().chars().take(MAX_EMAIL_CHARS).collect());
        self
    }

    pub fn outcome(mut self, outcome: AuditOutcome) -> Self {
        self.0.outcome = outcome;
        self
    }

    /// A short qualifier such as `role=admin`. Never a secret.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.0.detail = Some(detail.into());
        self
    }

    pub fn into_event(self) -> NewAuditEvent {
        self.0
    }
}

enum Command {
    /// An event, and whom to tell once it is committed.
    Record(NewAuditEvent, oneshot::Sender<()>),
    /// Answered once everything queued before it is stored.
    Flush(oneshot::Sender<()>),
}

/// What the writer and the handles share.
#[derive(Default)]
struct Shared {
    /// Set from a failed append until one succeeds.
    failing: AtomicBool,
    /// Told about each failed append, so the health probe looks at once.
    failed: Notify,
    /// Cuts the writer's backoff short: the store took a write again.
    retry_now: Notify,
    /// Shutdown gave up waiting: stop retrying, report what is left.
    abandoned: AtomicBool,
    abandon: Notify,
}

/// The handle the services record through; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    /// Unbounded, and still bounded in practice: every caller waits for its
    /// own record (at most [`RECORD_WAIT`]), and while the writer fails,
    /// `ready` keeps new operations out. A bounded queue would have to
    /// either make a request wait without limit or drop its event.
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    /// What entries are stamped with.
    clock: Arc<dyn Clock>,
}

impl Audit {
    /// Starts the writer task appending to `store`. The task ends once every
    /// `Audit` handle is dropped and the queue is drained (or after
    /// [`Audit::abandon`]); the receiver completes then.
    ///
    /// With `own_thread` (stores that serialise writes on one connection,
    /// i.e. SQLite) it runs on a thread of its own: an append holds the one
    /// writer across several statements, and waiting for each wake-up behind
    /// the request handlers kept refresh rotations waiting for the writer.
    ///
    /// Records are keyed with `key` (AUDIT_KEY).
    pub fn start(
        store: Arc<dyn AuditStore>,
        own_thread: bool,
        key: AuditKey,
    ) -> std::io::Result<(Self, oneshot::Receiver<()>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let task = writer::write_batches(store, key, rx, Arc::clone(&shared));
        let finished = if own_thread {
            crate::background::spawn_dedicated("audit-writer", task)?
        } else {
            let (done, finished) = oneshot::channel();
            tokio::spawn(async move {
                task.await;
                let _ = done.send(());
            });
            finished
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Ok((Self { tx, shared, clock }, finished))
    }

    /// The same recorder, stamping entries with `clock` (the app's).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// An entry for `event`, stamped now by the app's clock.
    pub fn entry(&self, event: AuditEvent, client: &ClientContext) -> AuditEntry {
        AuditEntry::at(event, client, self.clock.now())
    }

    /// The clock entries are stamped with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Records an entry and returns once it is committed: only then may the
    /// operation it describes be acknowledged. `Unavailable` (503) when it
    /// is not stored within [`RECORD_WAIT`]; the event then stays queued
    /// and is written once the store takes writes again, never dropped
    /// (short of the process dying first; see `abandon` for shutdown).
    pub async fn record(&self, entry: AuditEntry) -> Result<(), ServiceError> {
        let event = entry.0.event;
        let (ack, stored) = oneshot::channel();
        if self.tx.send(Command::Record(entry.0, ack)).is_err() {
            // Only after the writer is gone: shutdown.
            tracing::error!(event = %event, "audit writer stopped; event not recorded");
            return Err(ServiceError::Unavailable(anyhow::anyhow!(
                "the audit writer has stopped"
            )));
        }
        match tokio::time::timeout(RECORD_WAIT, stored).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ServiceError::Unavailable(anyhow::anyhow!(
                "the audit writer stopped before storing the event"
            ))),
            Err(_) => {
                tracing::warn!(
                    event = %event,
                    wait_ms = RECORD_WAIT.as_millis() as u64,
                    "audit record not stored in time; answering 503, the event stays queued"
                );
                Err(ServiceError::Unavailable(anyhow::anyhow!(
                    "audit record not stored within {RECORD_WAIT:?}"
                )))
            }
        }
    }

    /// Refuses an audited operation before it changes anything while the
    /// trail cannot be written: its record could not be stored anyway, and
    /// a change acknowledged with 503 (a rotated refresh token the client
    /// never received) is worse than one never made. Costs one atomic load.
    pub fn ready(&self) -> Result<(), ServiceError> {
        if self.is_failing() {
            return Err(ServiceError::Unavailable(anyhow::anyhow!(
                "the audit trail cannot be written right now"
            )));
        }
        Ok(())
    }

    /// True from a failed append until the next one succeeds.
    pub fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Acquire)
    }

    /// Resolves at the next failed append (for the health probe).
    pub(crate) async fn append_failed(&self) {
        self.shared.failed.notified().await;
    }

    /// The store took a write (the health probe): a writer waiting out its
    /// backoff retries now instead.
    pub(crate) fn store_writable(&self) {
        if self.is_failing() {
            self.shared.retry_now.notify_one();
        }
    }

    /// Returns once everything recorded before the call is in the store
    /// (graceful shutdown, the CLI, tests).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// At shutdown, once waiting for the store has gone on long enough: the
    /// writer stops retrying, logs every event it could not store (target
    /// `audit`, "audit event NOT stored", with the fields of the record, so
    /// the log stream keeps a copy) with their count, and ends.
    pub fn abandon(&self) {
        self.shared.abandoned.store(true, Ordering::Release);
        self.shared.abandon.notify_one();
    }
}

#[cfg(test)]
mod tests;
