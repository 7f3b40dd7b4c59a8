//! The background work of a running service that is not a use-case: the
//! hourly purge of expired rows, the minute sweeps of emergency access and
//! of the signing keys, and the signal that asks it to stop.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::storage::Store;

/// Resolves when the process gets Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

/// Expired tokens are worthless; delete them hourly so tables stay small.
/// Login throttles are kept a day after their last failure, so a lock that
/// ends and is earned again right away still doubles.
pub(super) fn spawn_purge(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    throttle_memory: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let now = clock.now();
            let idle_before = now
                - chrono::Duration::from_std(throttle_memory).unwrap_or(chrono::Duration::days(1));
            match store.purge_expired(now, idle_before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "expired tokens deleted"),
                Err(e) => tracing::warn!(error = %e, "purging expired tokens failed"),
            }
        }
    })
}

/// Closes emergency access windows whose time ran out, so each gets its
/// `emergency_access_ended` record within a minute even if its user never
/// comes back, and keeps the review gauges current.
pub(super) fn spawn_emergency_sweep(
    emergency: Arc<crate::services::EmergencyAccess>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match emergency.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(closed = n, "expired emergency access closed"),
                Err(e) => tracing::warn!(error = %e, "closing expired emergency access failed"),
            }
        }
    })
}

/// Every minute: prunes the signing keys no token can still need, then
/// re-reads them, so a key rotated by the CLI or another instance is
/// signed with here within a minute (issue 20).
pub(super) fn spawn_key_sweep(
    ring: Arc<crate::services::signing_keys::KeyRing>,
    rotation: crate::services::key_rotation::KeyRotation,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // Every second until the keys are loaded (the database was
            // unreachable at start), then every minute.
            tokio::time::sleep(if ring.is_loaded() {
                crate::services::signing_keys::RELOAD_EVERY
            } else {
                Duration::from_secs(1)
            })
            .await;
            match rotation.prune().await {
                Ok(kids) if kids.is_empty() => {}
                Ok(kids) => tracing::info!(pruned = ?kids, "retired signing keys pruned"),
                Err(e) => tracing::warn!(error = %e, "pruning the signing keys failed"),
            }
            if let Err(e) = ring.reload().await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "reloading the signing keys failed"
                );
            }
        }
    })
}
