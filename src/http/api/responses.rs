//! Answers many routes share, described once for the OpenAPI document.
//! Each enum is only a description: `utoipa::path` lists it among a route's
//! `responses(...)`; handlers produce these answers through `ApiError`.

#![allow(dead_code)] // the variants describe responses; nothing builds them

use utoipa::IntoResponses;

use crate::error::ErrorBody;

/// What can go wrong reading any JSON request body.
#[derive(IntoResponses)]
pub enum BodyErrors {
    #[response(
        status = 408,
        description = "The body did not arrive within HTTP_BODY_TIMEOUT (`request_timeout`); the connection is closed"
    )]
    Timeout(ErrorBody),
    #[response(status = 413, description = "Body too large (`payload_too_large`)")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "Not JSON (`unsupported_media_type`)")]
    NotJson(ErrorBody),
}

/// The per-IP rate limit.
#[derive(IntoResponses)]
pub enum RateLimited {
    #[response(
        status = 429,
        description = "Rate limited (`rate_limited`)",
        headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))
    )]
    RateLimited(ErrorBody),
}

/// The database cannot be reached (the service recovers by itself).
#[derive(IntoResponses)]
pub enum Unavailable {
    #[response(
        status = 503,
        description = "Database unavailable (`database_unavailable`)",
        headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))
    )]
    Database(ErrorBody),
}
