//! The HTTP/1.1 accept loop. It does what `axum::serve` does (one task per
//! connection, `ConnectInfo<SocketAddr>` for the client-IP middleware,
//! graceful shutdown) plus what `axum::serve` cannot: a deadline for the
//! request headers, so a client that opens connections and trickles bytes
//! (slowloris) cannot hold them open. The body deadline is a layer
//! ([`crate::http::middleware::body_timeout`]) because only the handler
//! knows when it reads the body.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::Layer;

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting, lets in-flight requests finish (idle keep-alive connections
/// close at once) and returns.
///
/// `header_timeout` runs from the moment a connection can send a request
/// (accepted, or its previous response written) until the request's headers
/// are complete, so it also ends idle keep-alive connections: hyper has no
/// separate idle timer for HTTP/1.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
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
