//! The audit writer: one task appending whatever has queued up as one
//! batch (group commit), retrying while the store refuses, and reporting
//! to the log what it could not store at shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Command, Shared};
use crate::domain::{AuditKey, NewAuditEvent};
use crate::services::ServiceError;
use crate::storage::{AuditStore, ChainLink};

/// Most events appended in one transaction.
pub(super) const BATCH_MAX: usize = 256;
/// Retry pacing while the database refuses appends. The cap is short so the
/// trail catches up within seconds of the fault clearing, even without the
/// probe's wake-up.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

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

pub(super) async fn write_batches(
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
