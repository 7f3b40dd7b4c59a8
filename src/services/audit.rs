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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Notify};

use super::checkpoints::Checkpoint;
use super::{ClientContext, ServiceError};
use crate::clock::{Clock, SystemClock};
use crate::domain::audit::{canonical_time, GENESIS_HASH, MAX_EMAIL_CHARS};
use crate::domain::{
    AuditEvent, AuditKey, AuditOutcome, AuditRecord, HashVersion, NewAuditEvent, UserId,
};
use crate::storage::{AuditStore, ChainLink, StoreError};

/// How long an operation waits for its audit record to commit before it
/// answers 503 `database_unavailable`. The SQLite busy timeout (5 s) is how
/// long a healthy store may keep a writer waiting for its lock, and MongoDB
/// gives up selecting a server after 3 s: a record still not stored after
/// this long waits for a store that is not coming back soon, and the client
/// is better told so (with Retry-After) than kept hanging.
pub const RECORD_WAIT: Duration = Duration::from_secs(5);
/// Most events appended in one transaction.
const BATCH_MAX: usize = 256;
/// Retry pacing while the database refuses appends. The cap is short so the
/// trail catches up within seconds of the fault clearing, even without the
/// probe's wake-up.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Records read per round trip while verifying.
const VERIFY_PAGE: u32 = 1000;

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
        let task = write_batches(store, key, rx, Arc::clone(&shared));
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

/// One log line (target `audit`) with every field of `$event`, at `$level`,
/// after the `$extra` fields (a stored event's `seq` and `hash`): the log
/// stream's copy of the trail.
macro_rules! log_event {
    ($level:ident, $event:expr, $message:literal $(, $($extra:tt)+)?) => {
        tracing::$level!(
            target: "audit",
            $($($extra)+,)?
            event = $event.event.as_str(),
            outcome = $event.outcome.as_str(),
            time = %$event.time.to_rfc3339(),
            user_id = $event.user_id.as_deref(),
            email = $event.email.as_deref(),
            ip = $event.ip.as_deref(),
            request_id = $event.request_id.as_deref(),
            detail = $event.detail.as_deref(),
            $message
        )
    };
}

async fn write_batches(
    store: Arc<dyn AuditStore>,
    key: AuditKey,
    mut rx: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let mut acks = Vec::with_capacity(BATCH_MAX);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        // Whatever is queued goes now, without lingering: every record has
        // a request waiting on it. What arrives while this batch commits
        // forms the next one (group commit).
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Record(event, ack) => {
                    batch.push(event);
                    acks.push(ack);
                }
                Command::Flush(ack) => flushes.push(ack),
            }
            if batch.len() >= BATCH_MAX {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            let Some(links) = append_until_stored(store.as_ref(), &batch, &key, &shared).await
            else {
                report_unstored(&batch, &mut rx);
                return;
            };
            // A copy of each stored event on the log stream (target `audit`),
            // so shipping stdout to a central system copies the trail off the
            // host (ASVS 16.4.3). Its seq and hash make that copy a second
            // record of the chain's links, which an insider on the host
            // cannot take back.
            for (event, link) in batch.iter().zip(&links) {
                log_event!(info, event, "audit event stored", seq = link.seq, hash = %link.hash);
            }
            batch.clear();
            for ack in acks.drain(..) {
                // A caller that gave up waiting is gone; its event is stored
                // all the same.
                let _ = ack.send(());
            }
        }
        for ack in flushes.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// Appends `batch`, retrying until the store takes it. `None` only once
/// shutdown abandoned the wait.
async fn append_until_stored(
    store: &dyn AuditStore,
    batch: &[NewAuditEvent],
    key: &AuditKey,
    shared: &Shared,
) -> Option<Vec<ChainLink>> {
    let mut delay = RETRY_FIRST;
    loop {
        if shared.abandoned.load(Ordering::Acquire) {
            return None;
        }
        match store.append_audit_events(batch, key).await {
            Ok(links) => {
                if shared.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        target: "audit",
                        stored = batch.len(),
                        "the audit trail takes writes again; queued events are being stored"
                    );
                }
                return Some(links);
            }
            Err(err) => {
                shared.failing.store(true, Ordering::Release);
                shared.failed.notify_one();
                // Through ServiceError so the store-errors metric counts it.
                let err = ServiceError::from(err);
                tracing::error!(
                    error = ?err,
                    pending = batch.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot append to the audit trail; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shared.retry_now.notified() => {}
                    () = shared.abandon.notified() => {}
                }
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Logs every event the writer holds or has queued and could not store
/// before shutdown, then their count: the log stream is then the only copy.
fn report_unstored(batch: &[NewAuditEvent], rx: &mut mpsc::UnboundedReceiver<Command>) {
    let mut lost = 0usize;
    let mut report = |event: &NewAuditEvent| {
        lost += 1;
        log_event!(
            error,
            event,
            "audit event NOT stored: the database did not take it before shutdown"
        );
    };
    batch.iter().for_each(&mut report);
    // Nothing can be added once the receiver is closed.
    rx.close();
    while let Ok(command) = rx.try_recv() {
        if let Command::Record(event, _) = command {
            report(&event);
        }
    }
    tracing::error!(
        target: "audit",
        not_stored = lost,
        "audit writer stopped at shutdown with events it could not store; they are in the log above"
    );
}

/// What is wrong at the first bad place of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainFault {
    /// The record's content no longer matches its hash, or its link to the
    /// record before it is broken.
    Altered,
    /// A record of the sequence is not there.
    Missing,
    /// A record appears where another should (duplicate or backwards seq).
    OutOfOrder,
    /// The record's hash is one anyone can compute (plain SHA-256) where
    /// only AUDIT_KEY's holder could have made it: an unkeyed record after
    /// keyed ones, or a keyed one re-hashed without the key.
    Unkeyed,
    /// The record is not the one a signed checkpoint recorded at its seq:
    /// the chain up to it was rewritten.
    Rewritten,
    /// The chain ends before a signed checkpoint's seq: its newest records
    /// were removed.
    Truncated,
}

impl ChainFault {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainFault::Altered => "altered",
            ChainFault::Missing => "missing",
            ChainFault::OutOfOrder => "out of order",
            ChainFault::Unkeyed => "recomputed without the key",
            ChainFault::Rewritten => "rewritten",
            ChainFault::Truncated => "truncated",
        }
    }
}

/// The first place the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: u64,
    pub fault: ChainFault,
    pub reason: String,
}

/// A whole chain: how long, its head, where its keyed records start, and
/// the newest checkpoint that vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub records: u64,
    pub head_hash: String,
    /// The first v2 (keyed) record; those before it are v1 (legacy).
    pub first_keyed: Option<u64>,
    /// The checkpoint with the highest seq, which the chain matched.
    pub latest_checkpoint: Option<Checkpoint>,
}

/// Reads the whole chain in seq order and checks every record's hash (v1:
/// plain SHA-256; v2: HMAC under `key`) and link, that no v1 record follows
/// a v2 one, that the chain holds each of `checkpoints` (already checked
/// signatures) at its seq with its exact hash, and that it reaches the
/// highest one. `Ok(Err(..))` names the first break.
pub async fn verify_chain(
    store: &dyn AuditStore,
    key: &AuditKey,
    checkpoints: &[Checkpoint],
) -> Result<Result<ChainSummary, ChainBreak>, StoreError> {
    let mut anchors: BTreeMap<u64, Vec<&Checkpoint>> = BTreeMap::new();
    for checkpoint in checkpoints {
        anchors.entry(checkpoint.seq).or_default().push(checkpoint);
    }
    let mismatch = |seq: u64, hash: &str| {
        let checkpoint = anchors.get(&seq)?.iter().find(|c| c.head != hash)?;
        Some(ChainBreak {
            seq,
            fault: ChainFault::Rewritten,
            reason: format!(
                "record {seq} does not match the checkpoint of {}: the chain up to it was \
                 rewritten (recomputed without AUDIT_KEY, or restored from elsewhere)",
                canonical_time(checkpoint.time)
            ),
        })
    };
    if let Some(broken) = mismatch(0, GENESIS_HASH) {
        return Ok(Err(broken));
    }
    let mut expected = 1u64;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut first_keyed = None;
    loop {
        let page = store.audit_events_after(expected - 1, VERIFY_PAGE).await?;
        if page.is_empty() {
            break;
        }
        for record in &page {
            if let Some(broken) = check(record, expected, &prev_hash, key, first_keyed.is_some())
                .or_else(|| mismatch(record.seq, &record.hash))
            {
                return Ok(Err(broken));
            }
            if record.version == HashVersion::V2 && first_keyed.is_none() {
                first_keyed = Some(record.seq);
            }
            prev_hash = record.hash.clone();
            expected += 1;
        }
    }
    let records = expected - 1;
    if let Some((&last, newest)) = anchors.range(records + 1..).next_back() {
        let removed = if records + 1 == last {
            format!("record {last} was")
        } else {
            format!("records {}..{last} were", records + 1)
        };
        return Ok(Err(ChainBreak {
            seq: records + 1,
            fault: ChainFault::Truncated,
            reason: format!(
                "{removed} removed after the checkpoint of {}",
                canonical_time(newest[0].time)
            ),
        }));
    }
    Ok(Ok(ChainSummary {
        records,
        head_hash: prev_hash,
        first_keyed,
        latest_checkpoint: anchors
            .values()
            .next_back()
            .and_then(|at| at.iter().max_by_key(|c| c.time))
            .map(|c| (*c).clone()),
    }))
}

fn check(
    record: &AuditRecord,
    expected: u64,
    prev_hash: &str,
    key: &AuditKey,
    after_keyed: bool,
) -> Option<ChainBreak> {
    let broken = |seq, fault, reason: String| Some(ChainBreak { seq, fault, reason });
    if record.seq > expected {
        let reason = if expected + 1 == record.seq {
            format!(
                "record {expected} is missing (the next one stored is {})",
                record.seq
            )
        } else {
            format!(
                "records {expected} to {} are missing",
                record.seq.saturating_sub(1)
            )
        };
        return broken(expected, ChainFault::Missing, reason);
    }
    if record.seq < expected {
        return broken(
            record.seq,
            ChainFault::OutOfOrder,
            format!("record {} appears again after {}", record.seq, expected - 1),
        );
    }
    if record.version == HashVersion::V1 && after_keyed {
        return broken(
            record.seq,
            ChainFault::Unkeyed,
            "an unkeyed (v1) record after keyed ones: the chain was recomputed without AUDIT_KEY"
                .to_owned(),
        );
    }
    if record.expected_hash(key) != record.hash {
        if record.version == HashVersion::V2 && record.plain_hash() == record.hash {
            return broken(
                record.seq,
                ChainFault::Unkeyed,
                "its hash is a plain SHA-256, not the HMAC under AUDIT_KEY: the record was \
                 recomputed without AUDIT_KEY"
                    .to_owned(),
            );
        }
        let reason = match record.version {
            HashVersion::V1 => "its content does not match its stored hash",
            HashVersion::V2 => {
                "its content does not match its stored hash under AUDIT_KEY (the record was \
                 altered, or AUDIT_KEY is not the key it was written with)"
            }
        };
        return broken(record.seq, ChainFault::Altered, reason.to_owned());
    }
    if record.prev_hash != prev_hash {
        return broken(
            record.seq,
            ChainFault::Altered,
            format!(
                "its prev_hash does not match the hash of record {} (one of the two was rewritten)",
                record.seq - 1
            ),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::storage::sqlite::SqliteStore;
    use crate::storage::{AuditQuery, StoreResult};

    /// A real SQLite store that counts the appends it is asked for.
    struct Counted {
        store: SqliteStore,
        appends: AtomicUsize,
    }

    #[async_trait]
    impl AuditStore for Counted {
        async fn append_audit_events(
            &self,
            events: &[NewAuditEvent],
            key: &AuditKey,
        ) -> StoreResult<Vec<ChainLink>> {
            self.appends.fetch_add(1, Ordering::SeqCst);
            self.store.append_audit_events(events, key).await
        }

        async fn query_audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
            self.store.query_audit_events(query).await
        }

        async fn audit_events_after(
            &self,
            after: u64,
            limit: u32,
        ) -> StoreResult<Vec<AuditRecord>> {
            self.store.audit_events_after(after, limit).await
        }
    }

    async fn counted() -> (tempfile::TempDir, Arc<Counted>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/audit.db", dir.path().display());
        let store = SqliteStore::connect(&url).await.unwrap();
        let counted = Counted {
            store,
            appends: AtomicUsize::new(0),
        };
        (dir, Arc::new(counted))
    }

    /// A writer on a fresh counted store (and the URL of its database).
    async fn writer() -> (
        tempfile::TempDir,
        Arc<Counted>,
        Audit,
        oneshot::Receiver<()>,
    ) {
        let (dir, store) = counted().await;
        let (audit, finished) = Audit::start(store.clone(), true, key()).unwrap();
        (dir, store, audit, finished)
    }

    /// Records `range` at once, as concurrent requests would, each waiting
    /// for its own commit.
    async fn record_concurrently(audit: &Audit, range: std::ops::Range<usize>) {
        let records: Vec<_> = range
            .map(|i| {
                let audit = audit.clone();
                tokio::spawn(async move { audit.record(entry(i)).await })
            })
            .collect();
        for record in records {
            record.await.unwrap().unwrap();
        }
    }

    fn key() -> AuditKey {
        AuditKey::from_hex(&"5a".repeat(32)).unwrap()
    }

    /// Records in the stored chain, which must be whole.
    async fn stored(store: &Counted) -> u64 {
        verify_chain(store, &key(), &[])
            .await
            .unwrap()
            .unwrap()
            .records
    }

    fn entry(i: usize) -> AuditEntry {
        AuditEntry::at(
            AuditEvent::LoginFailure,
            &ClientContext::default(),
            Utc::now(),
        )
        .email(&format!("user{i}@clinic.example"))
    }

    /// Re-hashing a keyed record with plain SHA-256 is told apart from a
    /// plain alteration, and verifying with another key names AUDIT_KEY.
    #[test]
    fn a_keyed_record_rehashed_without_the_key_is_named_so() {
        let record = AuditRecord::chain(1, &entry(1).into_event(), GENESIS_HASH, &key());
        assert_eq!(check(&record, 1, GENESIS_HASH, &key(), false), None);
        let fault = |r: &AuditRecord, key: &AuditKey| {
            let broken = check(r, 1, GENESIS_HASH, key, false).unwrap();
            (broken.fault, broken.reason)
        };
        let mut forged = record.clone();
        forged.ip = Some("10.6.6.6".into());
        forged.hash = forged.plain_hash();
        assert_eq!(fault(&forged, &key()).0, ChainFault::Unkeyed);
        let mut altered = record.clone();
        altered.ip = Some("10.6.6.6".into());
        assert_eq!(fault(&altered, &key()).0, ChainFault::Altered);
        let other = AuditKey::from_hex(&"a5".repeat(32)).unwrap();
        let (wrong_key, reason) = fault(&record, &other);
        assert_eq!(wrong_key, ChainFault::Altered);
        assert!(reason.contains("AUDIT_KEY is not the key"), "{reason}");
        // A legacy record is fine first, but not after a keyed one.
        let mut legacy = record.clone();
        legacy.version = HashVersion::V1;
        legacy.hash = legacy.plain_hash();
        assert_eq!(check(&legacy, 1, GENESIS_HASH, &key(), false), None);
        let after_keyed = check(&legacy, 1, GENESIS_HASH, &key(), true).unwrap();
        assert_eq!(after_keyed.fault, ChainFault::Unkeyed);
    }

    /// `record` returns only once its event is committed: the store holds
    /// it without a flush (an acknowledged operation has its record).
    #[tokio::test]
    async fn a_record_is_stored_when_record_returns() {
        let (_dir, store, audit, finished) = writer().await;
        for i in 0..5 {
            audit.record(entry(i)).await.unwrap();
            assert_eq!(stored(&store).await, i as u64 + 1);
        }
        drop(audit);
        finished.await.unwrap();
    }

    /// Group commit: records that arrive while a batch commits share the
    /// next append, so 200 concurrent records take a handful of appends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_share_appends() {
        let (_dir, store, audit, finished) = writer().await;
        record_concurrently(&audit, 0..200).await;
        assert_eq!(stored(&store).await, 200);
        let appends = store.appends.load(Ordering::SeqCst);
        assert!(
            appends <= 40,
            "{appends} appends for 200 concurrent records"
        );
        drop(audit);
        finished.await.unwrap();
    }

    /// More than a batch holds is written in several appends, and the chain
    /// stays whole across them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_than_a_batch_is_written_in_several() {
        let total = 2 * BATCH_MAX + 10;
        let (_dir, store, audit, finished) = writer().await;
        record_concurrently(&audit, 0..total).await;
        assert_eq!(stored(&store).await, total as u64);
        let appends = store.appends.load(Ordering::SeqCst);
        assert!(appends >= 3, "{total} records in {appends} appends");
        drop(audit);
        finished.await.unwrap();
    }

    /// Dropping every handle ends the writer after it stored what was
    /// queued.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_handles_drains_the_queue() {
        let (_dir, store, audit, finished) = writer().await;
        let waiting: Vec<_> = (0..10)
            .map(|i| {
                let audit = audit.clone();
                tokio::spawn(async move { audit.record(entry(i)).await })
            })
            .collect();
        drop(audit);
        for record in waiting {
            record.await.unwrap().unwrap();
        }
        finished.await.unwrap();
        assert_eq!(stored(&store).await, 10);
    }

    /// SQLite rolls a whole append back under the writer, as it does on a
    /// full disk (before issue 16 this left sqlx's transaction depth stuck
    /// and the trail stopped for good). The writer keeps the batch, refuses
    /// new audited operations (`ready`) while it cannot write, and once the
    /// fault is gone stores the batch without a restart, so the request
    /// waiting on it is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_survives_a_rolled_back_append_and_catches_up() {
        use sqlx::Connection;
        let (dir, store, audit, _finished) = writer().await;
        audit.record(entry(0)).await.unwrap();
        // Another connection, as another process would.
        let url = format!("sqlite://{}/audit.db", dir.path().display());
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "CREATE TRIGGER audit_fault BEFORE INSERT ON audit_events \
             BEGIN SELECT RAISE(ROLLBACK, 'injected fault'); END",
        )
        .execute(&mut other)
        .await
        .unwrap();
        let waiting = {
            let audit = audit.clone();
            tokio::spawn(async move { audit.record(entry(1)).await })
        };
        tokio::time::timeout(Duration::from_secs(10), audit.append_failed())
            .await
            .expect("the append fails while the fault lasts");
        assert!(audit.is_failing());
        assert!(
            matches!(audit.ready(), Err(ServiceError::Unavailable(_))),
            "new audited operations are refused up front"
        );
        sqlx::query("DROP TRIGGER audit_fault")
            .execute(&mut other)
            .await
            .unwrap();
        waiting
            .await
            .unwrap()
            .expect("stored once the fault cleared, without a restart");
        audit.record(entry(2)).await.unwrap();
        assert!(audit.ready().is_ok());
        assert_eq!(stored(&store).await, 3);
    }
    /// A log sink for one test (the writer task logs on the test's thread).
    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Shutdown gives up on a store that still refuses: the writer stops
    /// retrying, logs each event it could not store with its fields and how
    /// many, and ends; the request still waiting gets a 503.
    #[tokio::test]
    async fn abandoning_at_shutdown_logs_what_was_not_stored() {
        use sqlx::Connection;
        let logs = Logs::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        // The writer runs as a task on this (single) thread, so it logs
        // through this subscriber.
        let _default = tracing::subscriber::set_default(subscriber);
        let (dir, store) = counted().await;
        let (audit, finished) = Audit::start(store, false, key()).unwrap();
        let url = format!("sqlite://{}/audit.db", dir.path().display());
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "CREATE TRIGGER audit_fault BEFORE INSERT ON audit_events \
             BEGIN SELECT RAISE(ROLLBACK, 'injected fault'); END",
        )
        .execute(&mut other)
        .await
        .unwrap();
        let waiting = {
            let audit = audit.clone();
            tokio::spawn(async move { audit.record(entry(7)).await })
        };
        tokio::time::timeout(Duration::from_secs(10), audit.append_failed())
            .await
            .expect("the append fails");
        audit.abandon();
        tokio::time::timeout(Duration::from_secs(10), finished)
            .await
            .expect("the writer stops once abandoned")
            .unwrap();
        assert!(matches!(
            waiting.await.unwrap(),
            Err(ServiceError::Unavailable(_))
        ));
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("audit event NOT stored"))
            .unwrap_or_else(|| panic!("no report of the unstored event: {text}"));
        assert!(line.contains("user7@clinic.example"), "{line}");
        assert!(line.contains("login_failure"), "{line}");
        assert!(text.contains("not_stored=1"), "{text}");
    }
}
