//! The listeners' policy, said once in the log at start-up: how many
//! connections the main listener takes, who may read /metrics there, and
//! the METRICS_ADDR listener of its own.

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::http;

/// The METRICS_ADDR listener's connection cap: a scraper needs one or two,
/// and a flood there must not eat the main listener's descriptors.
const METRICS_MAX_CONNECTIONS: usize = 16;

/// Binds METRICS_ADDR, when set, and serves /metrics there with the same
/// read timeouts as the main listener; the task runs until aborted (with
/// the other background tasks at shutdown).
pub(super) async fn spawn_metrics_listener(
    config: &Config,
    metrics: PrometheusHandle,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(addr) = config.metrics.metrics_addr else {
        return Ok(None);
    };
    let metrics_listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (METRICS_ADDR)"))?;
    tracing::info!(%addr, "metrics listening");
    Ok(Some(tokio::spawn(crate::server::serve(
        metrics_listener,
        http::metrics_router(
            match &config.metrics.metrics_token {
                Some(token) => http::MetricsAccess::bearer(token),
                None => http::MetricsAccess::Public,
            },
            metrics,
        ),
        config.server.http_header_timeout,
        METRICS_MAX_CONNECTIONS,
        std::future::pending(),
    ))))
}

/// Who may read /metrics on the main listener, said once in the log. It
/// carries request counts per route, lock and reuse counters: useful to an
/// attacker probing the service, so production never serves it there to
/// anyone (ASVS 5.0 13.4.5). METRICS_ADDR moves it to a listener of its
/// own; METRICS_TOKEN admits only a scraper holding the token.
pub(super) fn metrics_on_main_listener(config: &Config) -> http::MetricsAccess {
    let with_token = config.metrics.metrics_token.is_some();
    let access = match (&config.metrics.metrics_addr, &config.metrics.metrics_token) {
        (Some(_), _) => http::MetricsAccess::Off,
        (None, Some(token)) => http::MetricsAccess::bearer(token),
        (None, None) if config.is_production() => http::MetricsAccess::Off,
        (None, None) => http::MetricsAccess::Public,
    };
    match (&access, config.metrics.metrics_addr) {
        (http::MetricsAccess::Off, Some(addr)) => {
            tracing::info!(%addr, bearer_token = with_token, "/metrics served on METRICS_ADDR only");
        }
        (http::MetricsAccess::Off, None) => tracing::info!(
            "/metrics is off: production without METRICS_ADDR or METRICS_TOKEN answers 404 there"
        ),
        (http::MetricsAccess::Bearer(_), _) => {
            tracing::info!("/metrics on the main listener, for the METRICS_TOKEN bearer only");
        }
        (http::MetricsAccess::Public, _) => {
            tracing::info!("/metrics is public on the main listener (development)");
        }
    }
    access
}

/// MAX_CONNECTIONS, or its default from the descriptor limit; said in the
/// log, with a warning when a set value leaves too few descriptors for the
/// rest of the process.
pub(super) fn max_connections(config: &Config) -> usize {
    let limit = crate::server::descriptor_limit();
    let fits = crate::server::default_max_connections(limit);
    match config.server.max_connections {
        Some(set) if set > fits => {
            tracing::warn!(
                max_connections = set,
                descriptor_limit = limit,
                "MAX_CONNECTIONS is more than the descriptor limit leaves room for; \
                 a flood could still run the process out of descriptors"
            );
            set
        }
        Some(set) => {
            tracing::info!(max_connections = set, "connection cap");
            set
        }
        None => {
            tracing::info!(
                max_connections = fits,
                descriptor_limit = limit,
                "connection cap"
            );
            fits
        }
    }
}
