//! Per-client-IP rate limits, answered in the API's error format with
//! Retry-After.
//!
//! Two backends (RATE_LIMIT_BACKEND): `memory`, GCRA via `governor` (wired
//! by `tower_governor`) in this process, so N instances allow N times the
//! limit; `store`, a counter per client and fixed one-minute window in the
//! database ([`shared`]), so every instance on one store enforces one limit.
//!
//! An IPv4 client is one address. An IPv6 client is its whole prefix
//! (RATE_LIMIT_IPV6_PREFIX, default /64): a single host, home or cloud VM
//! is routinely handed a /64, and keying by /128 would give it 2^64
//! budgets.

mod shared;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use governor::middleware::NoOpMiddleware;
use ipnet::Ipv6Net;
use tower::util::Either;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use crate::error::ApiError;
pub use shared::SharedCounters;
use shared::{SharedLimit, SharedLimitLayer};

/// What the limiters count a request against: the client's address, or for
/// IPv6 its network (set by the client-IP middleware beside `ClientIp`).
#[derive(Debug, Clone, Copy)]
pub struct RateLimitKey(pub IpAddr);

/// The limiter key of a canonical client address: IPv4 as it is, IPv6
/// masked to its first `ipv6_prefix` bits (1..=128, checked in config).
pub fn key_for(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => Ipv6Net::new(v6, ipv6_prefix).map_or(ip, |net| IpAddr::V6(net.network())),
    }
}

/// Keys requests by the [`RateLimitKey`] the client-IP middleware set.
#[derive(Debug, Clone, Copy)]
pub struct ClientIpKey;

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        req.extensions()
            .get::<RateLimitKey>()
            .map(|key| key.0)
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

type MemoryLimit = Arc<GovernorConfig<ClientIpKey, NoOpMiddleware>>;

/// One per-IP limit.
#[derive(Clone)]
pub struct Limiter {
    /// GCRA in this process: the limit itself with the `memory` backend;
    /// with `store`, what applies while the store cannot answer.
    memory: MemoryLimit,
    /// The counter in the store (`store` backend).
    shared: Option<Arc<SharedLimit>>,
}

impl Limiter {
    /// `per_minute` requests per minute per IP, allowed to arrive as a
    /// burst. With `counters` the count is kept in the store under `name`
    /// (unique per limit), shared by every instance on it.
    pub fn new(name: &'static str, per_minute: u32, counters: Option<&SharedCounters>) -> Self {
        let memory = in_memory(per_minute);
        let shared = counters.map(|c| Arc::new(c.limit(name, per_minute, memory.clone())));
        Self { memory, shared }
    }
}

/// The 429 every limiter answers (the portal turns it into its friendly
/// page), counted in `clinic_auth_rate_limited_total`.
fn too_many_requests(wait_secs: u64) -> Response {
    metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
    ApiError::rate_limited(wait_secs).into_response()
}

/// A request without a [`RateLimitKey`]: the layers are wired wrongly.
fn no_key() -> Response {
    tracing::error!("rate limiter could not tell the client's IP");
    ApiError::internal().into_response()
}

fn in_memory(per_minute: u32) -> MemoryLimit {
    let interval = Duration::from_secs(60) / per_minute.max(1);
    let config = GovernorConfigBuilder::default()
        .period(interval)
        .burst_size(per_minute.max(1))
        .key_extractor(ClientIpKey)
        .error_handler(|err| {
            match err {
                GovernorError::TooManyRequests { wait_time, .. } => too_many_requests(wait_time),
                GovernorError::UnableToExtractKey => no_key(),
                GovernorError::Other { .. } => ApiError::internal().into_response(),
            }
            .map(Body::new)
        })
        .finish()
        .expect("a non-zero period and burst are valid");
    Arc::new(config)
}

pub fn layer(
    limiter: &Limiter,
) -> Either<GovernorLayer<ClientIpKey, NoOpMiddleware>, SharedLimitLayer> {
    match &limiter.shared {
        None => Either::Left(GovernorLayer {
            config: Arc::clone(&limiter.memory),
        }),
        Some(shared) => Either::Right(SharedLimitLayer::new(Arc::clone(shared))),
    }
}

/// Forgets idle clients now and then so the limiter's memory stays bounded.
pub fn spawn_cleanup(limiters: Vec<Limiter>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            for limiter in &limiters {
                limiter.memory.limiter().retain_recent();
                limiter.memory.limiter().shrink_to_fit();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str, prefix: u8) -> String {
        key_for(ip.parse().unwrap(), prefix).to_string()
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix_and_ipv4_by_address() {
        // Every address of one /64 is one client...
        assert_eq!(key("2001:db8:1::1", 64), "2001:db8:1::");
        assert_eq!(
            key("2001:db8:1:0:ffff:ffff:ffff:ffff", 64),
            key("2001:db8:1::2", 64)
        );
        // ...and the next /64 another.
        assert_ne!(key("2001:db8:1:1::1", 64), key("2001:db8:1::1", 64));
        // Other prefixes as configured, /128 being one address.
        assert_eq!(key("2001:db8:1:2:3::1", 48), "2001:db8:1::");
        assert_eq!(key("2001:db8::7", 128), "2001:db8::7");
        assert_eq!(key("2001:db8::7", 1), "::");
        // IPv4 stays per address whatever the IPv6 prefix.
        assert_eq!(key("198.51.100.7", 64), "198.51.100.7");
        assert_eq!(key("198.51.100.7", 1), "198.51.100.7");
    }
}
