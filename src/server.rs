//! The HTTP/1.1 accept loop. It does what `axum::serve` does (one task per
//! connection, `ConnectInfo<SocketAddr>` for the client-IP middleware,
//! graceful shutdown) plus what `axum::serve` cannot: a deadline for the
//! request headers, so a client that opens connections and trickles bytes
//! (slowloris) cannot hold them open. The body deadline is a layer
//! ([`crate::http::middleware::body_timeout`]) because only the handler
//! knows when it reads the body.
//!
//! It also caps the connections open at once (MAX_CONNECTIONS): each holds
//! a permit, and at the cap the loop stops accepting until one closes. A
//! flood of idle connections then waits in the kernel's accept queue, where
//! it costs no descriptor of ours, while the header timeout keeps closing
//! the idle ones it let in; `accept` never runs out of descriptors.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Layer;

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting, lets in-flight requests finish (idle keep-alive connections
/// close at once) and returns.
///
/// `header_timeout` runs from the moment a connection can send a request
/// (accepted, or its previous response written) until the request's headers
/// are complete, so it also ends idle keep-alive connections: hyper has no
/// separate idle timer for HTTP/1.
///
/// At most `max_connections` connections are open at once; more wait to be
/// accepted until one closes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut warned: Option<Instant> = None;
    loop {
        if slots.available_permits() == 0
            && warned.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY)
        {
            tracing::warn!(
                max_connections,
                "connection cap reached: new connections wait until one closes (MAX_CONNECTIONS)"
            );
            warned = Some(Instant::now());
        }
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are small and written whole: Nagle would only add a
        // round trip of latency to each one.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        // An IPv4 client of a socket bound to `::` arrives as ::ffff:a.b.c.d;
        // from here on (ConnectInfo, client IP, logs) it is plain IPv4.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        // The same wrapping `into_make_service_with_connect_info` does: one
        // router clone (an Arc) per connection, nothing extra per request.
        let service = TowerToHyperService::new(Extension(ConnectInfo(peer)).layer(router.clone()));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Timeouts, resets and malformed requests end up here; they are
            // the client's doing, not ours, so they stay out of the logs.
            if let Err(e) = connection.await {
                tracing::trace!(%peer, error = %e, "connection ended with an error");
            }
            // The socket is closed: its slot is free for the next one.
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Errors that concern one connection (the client gave up before we
/// accepted) are skipped; others (out of file descriptors) would fail again
/// at once, so wait a moment instead of spinning, as `axum::serve` does.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// How often "connection cap reached" may be logged: a sustained flood
/// would otherwise write a line per accepted connection.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Descriptors kept back from MAX_CONNECTIONS's default for everything that
/// is not a client connection: the SQLite files of up to nine connections,
/// MongoDB's pool, SMTP, outbox files, the listeners, logs and the runtime.
pub const RESERVED_DESCRIPTORS: u64 = 128;

/// The process's soft limit on open descriptors (RLIMIT_NOFILE), if known.
#[allow(unsafe_code)] // getrlimit: see the SAFETY note below
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only to the struct it is handed.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            return Some(limit.rlim_cur);
        }
    }
    None
}

/// Raises the soft descriptor limit to the hard limit, as most servers do
/// at start: the soft default (often 1024) is a guard for interactive
/// programs, not a budget for a server. Best effort; returns the soft limit
/// in force afterwards.
#[allow(unsafe_code)] // getrlimit and setrlimit: see the SAFETY note below
pub fn raise_descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write only the struct
        // they are handed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
                && limit.rlim_cur < limit.rlim_max
            {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
            }
        }
    }
    descriptor_limit()
}

/// MAX_CONNECTIONS when it is not set: the descriptor limit less
/// [`RESERVED_DESCRIPTORS`], or half the limit when that is small, so
/// client connections alone can never use up the descriptors.
pub fn default_max_connections(descriptor_limit: Option<u64>) -> usize {
    // Unknown or unlimited: a limit no real deployment reaches first.
    let limit = descriptor_limit.unwrap_or(1 << 20).min(1 << 20);
    let cap = if limit >= 2 * RESERVED_DESCRIPTORS {
        limit - RESERVED_DESCRIPTORS
    } else {
        limit / 2
    };
    usize::try_from(cap.max(1)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_descriptors_for_everything_else() {
        assert_eq!(default_max_connections(Some(1024)), 896);
        assert_eq!(default_max_connections(Some(1_048_576)), 1_048_448);
        // Small limits: half for connections, half for the rest.
        assert_eq!(default_max_connections(Some(128)), 64);
        assert_eq!(default_max_connections(Some(1)), 1);
        // Unlimited is treated as a million.
        assert_eq!(default_max_connections(Some(u64::MAX)), 1_048_448);
        assert_eq!(default_max_connections(None), 1_048_448);
    }
}
