//! Answers many routes share, described once for the OpenAPI document.
//! Each enum is only a description: `utoipa::path` lists it among a route's
//! `responses(...)`; handlers produce these answers through `ApiError`.
//!
//! A route whose answer to one of these statuses means more (a 400 that is
//! also a bad link, a 429 that is also a locked account) lists its own
//! entry *after* the shared set: entries are added in order and the later
//! one for a status wins.

#![allow(dead_code)] // the variants describe responses; nothing builds them

use utoipa::IntoResponses;

use crate::error::ErrorBody;

/// What can go wrong reading any JSON request body.
#[derive(IntoResponses)]
pub enum BodyErrors {
    #[response(status = 400, description = "Malformed JSON")]
    Malformed(ErrorBody),
    #[response(
        status = 408,
        description = "The body did not arrive within HTTP_BODY_TIMEOUT (`request_timeout`); the connection is closed"
    )]
    Timeout(ErrorBody),
    #[response(status = 413, description = "Body too large (`payload_too_large`)")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "Not JSON (`unsupported_media_type`)")]
    NotJson(ErrorBody),
    #[response(status = 422, description = "Validation failed")]
    Invalid(ErrorBody),
}

/// A route that takes the token of an emailed link (reset, verification).
/// Listed after [`BodyErrors`], whose 400 it widens.
#[derive(IntoResponses)]
pub enum LinkErrors {
    #[response(
        status = 400,
        description = "Malformed JSON, or a bad, used or expired token (`invalid_token`)"
    )]
    BadLink(ErrorBody),
}

/// A route behind a Bearer access token.
#[derive(IntoResponses)]
pub enum BearerErrors {
    #[response(
        status = 401,
        description = "Missing, invalid or expired access token (`invalid_token`); or an enrolment token, which only the enrolment routes take (`mfa_enrolment_required`: add a second factor first)",
        headers(("WWW-Authenticate" = String, description = "`Bearer`, with `error=\"invalid_token\"` when a token was sent"))
    )]
    InvalidToken(ErrorBody),
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

/// A route for the `admin` role only. Listed after [`BearerErrors`].
#[derive(IntoResponses)]
pub enum AdminErrors {
    #[response(
        status = 403,
        description = "Signed in without the admin role (`forbidden`)"
    )]
    NotAdmin(ErrorBody),
}

/// Refresh and logout, whose token travels only in the HttpOnly cookie: a
/// JSON body carrying `refresh_token` (as the Python service took it) is
/// refused rather than ignored.
#[derive(IntoResponses)]
pub enum RefreshTokenInBody {
    #[response(
        status = 400,
        description = "The JSON body carries `refresh_token` (`refresh_token_in_body`): the token travels only in the HttpOnly cookie; nothing was changed. Any other body is ignored"
    )]
    InBody(ErrorBody),
    #[response(
        status = 408,
        description = "A body was sent and did not arrive within HTTP_BODY_TIMEOUT (`request_timeout`); the connection is closed"
    )]
    Timeout(ErrorBody),
}
