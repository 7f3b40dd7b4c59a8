//! The audit recorder: how the services write to the audit trail, and the
//! check that the stored chain is whole (its links, its keyed hashes, and
//! the signed checkpoints kept outside the database: see `checkpoints`).
//!
//! Recording must not cost the request a database round trip (login and
//! refresh are benchmarked), yet must not lose events either. So a service
//! hands its entry to a bounded channel and goes on; one background task
//! appends whatever has queued up as a batch (one transaction per batch).
//! When the channel is full, `record` waits (backpressure) rather than drop
//! the event; when an append fails, the task logs, counts a store error and
//! retries the same batch with backoff until the database takes it.
//!
//! From a service:
//! ```ignore
//! self.audit.record(AuditEntry::new(AuditEvent::LoginSuccess, client).user(&user.id)).await;
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Notify};

use super::checkpoints::Checkpoint;
use super::{ClientContext, ServiceError};
use crate::domain::audit::{canonical_time, GENESIS_HASH, MAX_EMAIL_CHARS};
use crate::domain::{
    AuditEvent, AuditKey, AuditOutcome, AuditRecord, HashVersion, NewAuditEvent, UserId,
};
use crate::storage::{AuditStore, ChainLink, StoreError};

/// Entries that may wait for the writer before `record` starts waiting.
/// Large enough to ride out a slow commit under a login flood.
const CHANNEL_CAPACITY: usize = 4096;
/// Most events appended in one transaction.
const BATCH_MAX: usize = 256;
/// How long a batch may wait for more events before it is written. Each
/// append is a transaction on a store's single writer (SQLite), shared with
/// refresh rotations; under load, fewer and larger appends leave it free.
/// Nobody waits on this but a flush, which ends the wait at once. (A spare
/// wake-up left by an earlier flush only ends a later wait early.)
const BATCH_LINGER: Duration = Duration::from_millis(20);
/// Retry pacing while the database refuses appends.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Records read per round trip while verifying.
const VERIFY_PAGE: u32 = 1000;

/// One event about to be recorded, built from the request's context.
#[derive(Debug, Clone)]
pub struct AuditEntry(NewAuditEvent);

impl AuditEntry {
    /// An entry for `event` with the client's IP, user agent and request id,
    /// stamped now, with the event's usual outcome.
    pub fn new(event: AuditEvent, client: &ClientContext) -> Self {
        let now = Utc::now();
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
    Record(NewAuditEvent),
    /// Answered once everything queued before it is stored.
    Flush(oneshot::Sender<()>),
}

/// The handle the services record through; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Command>,
    /// Ends the writer's linger early for a flush.
    flushes: Arc<Notify>,
}

impl Audit {
    /// Starts the writer task appending to `store`. The task ends once every
    /// `Audit` handle is dropped and the queue is drained; the receiver
    /// completes then.
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
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let flushes = Arc::new(Notify::new());
        let task = write_batches(store, key, rx, Arc::clone(&flushes));
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
        Ok((Self { tx, flushes }, finished))
    }

    /// Queues an entry; waits only when the queue is full.
    pub async fn record(&self, entry: AuditEntry) {
        let event = entry.0.event;
        if self.tx.send(Command::Record(entry.0)).await.is_err() {
            // Only after the writer is gone, i.e. while the runtime shuts down.
            tracing::error!(event = %event, "audit writer stopped; event not recorded");
        }
    }

    /// Returns once everything recorded before the call is in the store
    /// (graceful shutdown, the CLI, tests).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).await.is_ok() {
            self.flushes.notify_one();
            let _ = rx.await;
        }
    }
}

async fn write_batches(
    store: Arc<dyn AuditStore>,
    key: AuditKey,
    mut rx: mpsc::Receiver<Command>,
    flushes: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + BATCH_LINGER;
        let mut next = Some(first);
        let mut lingered = false;
        loop {
            // Whatever is queued, without waiting.
            while let Some(command) = next.take() {
                match command {
                    Command::Record(event) => batch.push(event),
                    Command::Flush(ack) => waiting.push(ack),
                }
                if batch.len() >= BATCH_MAX {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if lingered || batch.len() >= BATCH_MAX || !waiting.is_empty() {
                break;
            }
            // Then linger once for more, asleep. Lingering in `recv` instead,
            // every record woke this thread: a context switch per request
            // that records (BENCHMARKS.md, "refresh, fourth look").
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = flushes.notified() => {}
            }
            lingered = true;
            next = rx.try_recv().ok();
        }
        let links = append_until_stored(store.as_ref(), &batch, &key).await;
        // A copy of each stored event on the log stream (target `audit`), so
        // shipping stdout to a central system copies the trail off the host
        // (ASVS 16.4.3). Its seq and hash make that copy a second record of
        // the chain's links, which an insider on the host cannot take back.
        for (event, link) in batch.iter().zip(&links) {
            tracing::info!(
                target: "audit",
                seq = link.seq,
                hash = %link.hash,
                event = event.event.as_str(),
                outcome = event.outcome.as_str(),
                time = %event.time.to_rfc3339(),
                user_id = event.user_id.as_deref(),
                email = event.email.as_deref(),
                ip = event.ip.as_deref(),
                request_id = event.request_id.as_deref(),
                detail = event.detail.as_deref(),
                "audit event stored"
            );
        }
        batch.clear();
        for ack in waiting.drain(..) {
            let _ = ack.send(());
        }
    }
}

async fn append_until_stored(
    store: &dyn AuditStore,
    batch: &[NewAuditEvent],
    key: &AuditKey,
) -> Vec<ChainLink> {
    let mut delay = RETRY_FIRST;
    loop {
        match store.append_audit_events(batch, key).await {
            Ok(links) => return links,
            Err(err) => {
                // Through ServiceError so the store-errors metric counts it.
                let err = ServiceError::from(err);
                tracing::error!(
                    error = ?err,
                    pending = batch.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot append to the audit trail; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
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

    /// A writer on a fresh counted store, `n` records queued through it.
    async fn writer_with(
        n: usize,
    ) -> (
        tempfile::TempDir,
        Arc<Counted>,
        Audit,
        oneshot::Receiver<()>,
    ) {
        let (dir, store) = counted().await;
        let (audit, finished) = Audit::start(store.clone(), true, key()).unwrap();
        for i in 0..n {
            audit.record(entry(i)).await;
        }
        (dir, store, audit, finished)
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
        AuditEntry::new(AuditEvent::LoginFailure, &ClientContext::default())
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

    /// Records sent while the writer lingers after the first join its batch,
    /// and a flush ends the linger with everything stored, in order.
    #[tokio::test]
    async fn records_queued_during_the_linger_share_one_append() {
        let (_dir, store, audit, finished) = writer_with(100).await;
        audit.flush().await;
        assert_eq!(stored(&store).await, 100);
        // Typically one append; a few if this thread stalls past a linger.
        let appends = store.appends.load(Ordering::SeqCst);
        assert!(appends <= 10, "{appends} appends for 100 queued records");
        drop(audit);
        finished.await.unwrap();
    }

    /// More than a batch holds is written in full batches without waiting
    /// for a flush, and the chain stays whole across them.
    #[tokio::test]
    async fn a_full_batch_is_written_and_the_rest_follows() {
        let total = 2 * BATCH_MAX + 10;
        let (_dir, store, audit, finished) = writer_with(total).await;
        audit.flush().await;
        assert_eq!(stored(&store).await, total as u64);
        let appends = store.appends.load(Ordering::SeqCst);
        assert!(appends >= 3, "{total} records in {appends} appends");
        let newest = store
            .query_audit_events(&AuditQuery {
                limit: 1,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(
            newest[0].email.as_deref(),
            Some(format!("user{}@clinic.example", total - 1).as_str())
        );
        drop(audit);
        finished.await.unwrap();
    }

    /// Dropping every handle ends the writer after it stored what was
    /// queued, with no flush and no linger left to wait out.
    #[tokio::test]
    async fn dropping_the_handles_drains_the_queue() {
        let (_dir, store, audit, finished) = writer_with(10).await;
        drop(audit);
        finished.await.unwrap();
        assert_eq!(stored(&store).await, 10);
    }
}
