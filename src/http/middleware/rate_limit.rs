//! Per-client-IP rate limits (GCRA via `governor`, wired by
//! `tower_governor`), answered in the API's error format with Retry-After.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::response::IntoResponse;
use governor::middleware::NoOpMiddleware;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use crate::error::ApiError;
use crate::http::extract::ClientIp;

/// Keys requests by the IP the client-IP middleware settled on.
#[derive(Debug, Clone, Copy)]
pub struct ClientIpKey;

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        req.extensions()
            .get::<ClientIp>()
            .map(|ip| ip.0)
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

pub type Limiter = Arc<GovernorConfig<ClientIpKey, NoOpMiddleware>>;

/// `per_minute` requests per minute per IP, allowed to arrive as a burst.
pub fn per_minute(per_minute: u32) -> Limiter {
    let interval = Duration::from_secs(60) / per_minute.max(1);
    let config = GovernorConfigBuilder::default()
        .period(interval)
        .burst_size(per_minute.max(1))
        .key_extractor(ClientIpKey)
        .error_handler(|err| {
            match err {
                GovernorError::TooManyRequests { wait_time, .. } => {
                    metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
                    ApiError::rate_limited(wait_time)
                }
                GovernorError::UnableToExtractKey => {
                    tracing::error!("rate limiter could not tell the client's IP");
                    ApiError::internal()
                }
                GovernorError::Other { .. } => ApiError::internal(),
            }
            .into_response()
            .map(Body::new)
        })
        .finish()
        .expect("a non-zero period and burst are valid");
    Arc::new(config)
}

pub fn layer(limiter: &Limiter) -> GovernorLayer<ClientIpKey, NoOpMiddleware> {
    GovernorLayer {
        config: Arc::clone(limiter),
    }
}

/// Forgets idle clients now and then so the limiter's memory stays bounded.
pub fn spawn_cleanup(limiters: Vec<Limiter>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            for limiter in &limiters {
                limiter.limiter().retain_recent();
                limiter.limiter().shrink_to_fit();
            }
        }
    })
}
