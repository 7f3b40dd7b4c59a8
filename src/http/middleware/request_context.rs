//! Gives every request an id (echoed in `X-Request-Id`) and writes exactly
//! one log line per request when it completes.
//!
//! Only the path is logged, never the query string: reset links carry their
//! token there.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being handled.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// A client-supplied id is kept (so a proxy's id ties the logs together)
/// only when it is short and plain; anything else could forge log lines.
fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .filter(|v| acceptable(v))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a valid header value")
        });
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // The route template, not the path: bounded label cardinality.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = Instant::now();
    let id_text = id.to_str().unwrap_or_default().to_owned();
    let span = tracing::info_span!("request", request_id = %id_text);
    let mut response = next.run(req).instrument(span).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let latency_ms = (elapsed.as_micros() as f64) / 1000.0;
    metrics::counter!(crate::metrics::HTTP_REQUESTS,
        "method" => method.to_string(), "route" => route.clone(), "status" => status.to_string())
    .increment(1);
    metrics::histogram!(crate::metrics::HTTP_DURATION, "method" => method.to_string(), "route" => route)
        .record(elapsed.as_secs_f64());
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    if status >= 500 {
        tracing::warn!(request_id = %id_text, %method, %path, status, latency_ms, "request");
    } else {
        tracing::info!(request_id = %id_text, %method, %path, status, latency_ms, "request");
    }
    response
}
