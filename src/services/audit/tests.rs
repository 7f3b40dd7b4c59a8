//! The recorder and the chain check against a real SQLite store.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::verify::check;
use super::writer::BATCH_MAX;
use super::*;
use crate::domain::audit::GENESIS_HASH;
use crate::domain::{AuditRecord, HashVersion};
use crate::storage::sqlite::SqliteStore;
use crate::storage::ChainLink;
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

    async fn audit_events_after(&self, after: u64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        self.store.audit_events_after(after, limit).await
    }
}

/// Makes every append fail (a trigger that rolls the INSERT back),
/// through another connection, as another process would; the
/// connection is returned so the test can remove the fault.
async fn inject_append_fault(dir: &tempfile::TempDir) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite://{}/audit.db", dir.path().display());
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER audit_fault BEFORE INSERT ON audit_events \
         BEGIN SELECT RAISE(ROLLBACK, 'injected fault'); END",
    )
    .execute(&mut other)
    .await
    .unwrap();
    other
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
    let (dir, store, audit, _finished) = writer().await;
    audit.record(entry(0)).await.unwrap();
    let mut other = inject_append_fault(&dir).await;
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
    let _fault = inject_append_fault(&dir).await;
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
