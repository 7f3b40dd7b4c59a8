//! Whether the store takes writes, for `/health`: kept current in the
//! background, so `/health` itself only reads a flag (it is the benchmarks'
//! baseline, and a load balancer polls it).
//!
//! `SELECT 1` on a reader, all `/health` did before issue 16, stays green
//! while a full disk, a read-only file or a held lock refuses every write.
//! Two signals say whether writes work:
//! - the audit writer's own appends: nearly every request that changes
//!   something is audited, so a failed append marks the store unwritable at
//!   once, and the next successful one clears it;
//! - a write probe, one upsert into `health_probe`, every
//!   [`PROBE_EVERY`], every second while it fails, and right after a failed
//!   append. It notices a fault when no audited request does, and tells the
//!   audit writer to retry as soon as writes work again.
//!
//! So a node that cannot write answers `/health` with 503 `degraded` within
//! seconds, and 200 again within seconds of the fault clearing, without a
//! restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Audit;
use crate::storage::HealthProbe;

/// How often the store is probed while it takes writes.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How often while it does not, so recovery shows within about a second.
const PROBE_EVERY_WHILE_FAILING: Duration = Duration::from_secs(1);
/// A probe still running after this long counts as failed (the store's own
/// timeouts, SQLite's 5 s busy wait and connection wait, end it before).
const PROBE_TIMEOUT: Duration = Duration::from_secs(12);
/// After a failed append, the probe waits this long so a burst of failing
/// retries does not become a burst of probes.
const AFTER_FAILURE: Duration = Duration::from_millis(200);

pub struct WriteHealth {
    probe_ok: AtomicBool,
    audit: Audit,
    probes: Arc<dyn HealthProbe>,
}

impl WriteHealth {
    /// Starts out writable: the first probe runs at once and start-up (which
    /// just applied the migrations) has written already.
    pub fn new(audit: Audit, probes: Arc<dyn HealthProbe>) -> Arc<Self> {
        Arc::new(Self {
            probe_ok: AtomicBool::new(true),
            audit,
            probes,
        })
    }

    /// True when the database answers a round trip.
    pub async fn database_ok(&self) -> bool {
        self.probes.ping().await.is_ok()
    }

    /// True while the last probe succeeded and the audit writer is not
    /// failing. One atomic load each.
    pub fn writable(&self) -> bool {
        self.probe_ok.load(Ordering::Acquire) && !self.audit.is_failing()
    }

    /// The probe loop; it runs until aborted (at shutdown).
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let health = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let ok = health.probe().await;
                let wait = if ok && !health.audit.is_failing() {
                    PROBE_EVERY
                } else {
                    PROBE_EVERY_WHILE_FAILING
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = health.audit.append_failed() => {
                        tokio::time::sleep(AFTER_FAILURE).await;
                    }
                }
            }
        })
    }

    async fn probe(&self) -> bool {
        let outcome =
            tokio::time::timeout(PROBE_TIMEOUT, self.probes.probe_write(chrono::Utc::now())).await;
        let ok = matches!(outcome, Ok(Ok(())));
        let was = self.probe_ok.swap(ok, Ordering::AcqRel);
        match (was, ok) {
            (true, false) => {
                let error = match outcome {
                    Ok(Err(e)) => format!("{:#}", anyhow::Error::from(e)),
                    _ => format!("no answer within {PROBE_TIMEOUT:?}"),
                };
                tracing::error!(
                    error,
                    "the database does not take writes: /health answers 503 until it does"
                );
            }
            (false, true) => tracing::info!("the database takes writes again"),
            _ => {}
        }
        if ok {
            // The audit writer may be waiting out its backoff.
            self.audit.store_writable();
        }
        ok
    }
}
