//! Cross-cutting layers: request ids and logging, client IP, security
//! headers, rate limits.

pub mod client_ip;
pub mod rate_limit;
pub mod request_context;
pub mod security_headers;
