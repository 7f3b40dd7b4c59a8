//! Cross-cutting layers: request ids and logging, client IP, security
//! headers, rate limits, the request-body deadline.

pub mod body_timeout;
pub mod client_ip;
pub mod rate_limit;
pub mod request_context;
pub mod security_headers;
