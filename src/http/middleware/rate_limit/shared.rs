//! RATE_LIMIT_BACKEND=store: per-IP limits counted in the database, so
//! several instances on one store enforce one limit between them.
//!
//! Each request is one atomic increment-and-read of the counter for (limit,
//! client, current minute) ([`RateLimitStore::count_request`]): it passes
//! while the count is at most the limit, and is otherwise answered 429 with
//! Retry-After = the rest of the minute. Fixed windows aligned to the
//! minute: within one window exactly the limit passes, however many
//! instances share it; across a window's end a client can send up to twice
//! the limit in a short span, as the in-memory GCRA's burst plus its refill
//! also allows. Refused requests are counted too, which changes nothing
//! within the window and is forgotten with it.
//!
//! When the store does not answer (an error, or nothing within
//! [`STORE_TIMEOUT`]), this instance's in-memory limit decides instead, for
//! [`OUTAGE_HOLD`] before the store is asked again: never unlimited, and an
//! outage costs one timeout per hold rather than one per request. Not
//! failing closed: the counters live in the database every credential
//! check needs, so while it is down a sign-in cannot succeed anyway (503),
//! and refusing here would also take down what still works (reads while a
//! disk is full, `/health` telling the balancer what is wrong).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use axum::response::Response;
use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use tower::{Layer, Service};

use super::{no_key, too_many_requests, MemoryLimit, RateLimitKey};
use crate::storage::RateLimitStore;

/// The limits are per minute.
const WINDOW_MS: i64 = 60_000;

/// How long a count may take before the in-memory limit decides. A count is
/// one small write (a millisecond or two); this only ends the wait when
/// the store is down (MongoDB's server selection alone takes 3 s).
pub const STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// After a failed count, how long the in-memory limits apply before the
/// store is asked again.
pub const OUTAGE_HOLD: Duration = Duration::from_secs(5);

/// The store the counters live in, and whether it answers: one per app,
/// shared by all its limits.
#[derive(Clone)]
pub struct SharedCounters {
    store: Arc<dyn RateLimitStore>,
    outage: Arc<Outage>,
}

impl SharedCounters {
    pub fn new(store: Arc<dyn RateLimitStore>) -> Self {
        Self {
            store,
            outage: Arc::new(Outage::default()),
        }
    }

    pub(super) fn limit(
        &self,
        name: &'static str,
        per_minute: u32,
        memory: MemoryLimit,
    ) -> SharedLimit {
        SharedLimit {
            name,
            per_minute: u64::from(per_minute.max(1)),
            store: Arc::clone(&self.store),
            outage: Arc::clone(&self.outage),
            memory,
        }
    }
}

/// Whether the counters are being skipped after a failure.
#[derive(Default)]
struct Outage {
    /// Wall-clock milliseconds until which the store is not asked.
    until_ms: AtomicI64,
    /// Set by a failure, cleared (and said in the log) by the next success.
    down: AtomicBool,
}

impl Outage {
    fn holds(&self, now_ms: i64) -> bool {
        now_ms < self.until_ms.load(Ordering::Relaxed)
    }

    fn begin(&self, now_ms: i64, why: &dyn std::fmt::Display) {
        metrics::counter!(crate::metrics::STORE_ERRORS, "kind" => "rate_limit").increment(1);
        let hold_ms = i64::try_from(OUTAGE_HOLD.as_millis()).unwrap_or(i64::MAX);
        // Of the requests that failed together, one says so.
        if self.until_ms.swap(now_ms + hold_ms, Ordering::Relaxed) <= now_ms {
            tracing::warn!(
                error = %why,
                hold_secs = OUTAGE_HOLD.as_secs(),
                "rate-limit counters unavailable: this instance's own limits apply meanwhile"
            );
        }
        self.down.store(true, Ordering::Relaxed);
    }

    fn answered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("rate-limit counters answer again: the shared limits apply");
        }
    }
}

/// One limit counted in the store.
pub(super) struct SharedLimit {
    /// Unique per limit: each has a budget of its own.
    name: &'static str,
    per_minute: u64,
    store: Arc<dyn RateLimitStore>,
    outage: Arc<Outage>,
    memory: MemoryLimit,
}

impl SharedLimit {
    /// `Err(seconds to wait)` when `client` is over the limit.
    async fn check(&self, client: IpAddr) -> Result<(), u64> {
        let now_ms = Utc::now().timestamp_millis();
        if !self.outage.holds(now_ms) {
            let start_ms = now_ms - now_ms.rem_euclid(WINDOW_MS);
            let end_ms = start_ms + WINDOW_MS;
            let instant = |ms| DateTime::from_timestamp_millis(ms).unwrap_or_default();
            let counted = tokio::time::timeout(
                STORE_TIMEOUT,
                self.store.count_request(
                    self.name,
                    &client.to_string(),
                    instant(start_ms),
                    instant(end_ms),
                ),
            )
            .await;
            match counted {
                Ok(Ok(hits)) => {
                    self.outage.answered();
                    if hits <= self.per_minute {
                        return Ok(());
                    }
                    let left_ms = u64::try_from(end_ms - now_ms).unwrap_or(0);
                    return Err(left_ms.div_ceil(1000));
                }
                Ok(Err(err)) => self
                    .outage
                    .begin(now_ms, &format_args!("{:#}", anyhow::Error::from(err))),
                Err(_) => self.outage.begin(now_ms, &"no answer within 1 s"),
            }
        }
        self.memory
            .limiter()
            .check_key(&client)
            .map_err(|not_until| {
                not_until
                    .wait_time_from(DefaultClock::default().now())
                    .as_secs()
            })
    }
}

/// Wraps a route (or the whole router) in one [`SharedLimit`].
#[derive(Clone)]
pub struct SharedLimitLayer {
    limit: Arc<SharedLimit>,
}

impl SharedLimitLayer {
    pub(super) fn new(limit: Arc<SharedLimit>) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for SharedLimitLayer {
    type Service = SharedLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SharedLimitService {
            limit: Arc::clone(&self.limit),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct SharedLimitService<S> {
    limit: Arc<SharedLimit>,
    inner: S,
}

impl<S, B> Service<Request<B>> for SharedLimitService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = Arc::clone(&self.limit);
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let Some(RateLimitKey(client)) = req.extensions().get::<RateLimitKey>().copied() else {
                return Ok(no_key());
            };
            match limit.check(client).await {
                Ok(()) => inner.call(req).await,
                Err(wait_secs) => Ok(too_many_requests(wait_secs)),
            }
        })
    }
}
