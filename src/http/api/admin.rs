//! /api/admin: what only the `admin` role may see. Today the audit trail.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::responses::{RateLimited, Unavailable};
use crate::domain::{AuditEvent, AuditRecord, FieldError};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::AdminUser;
use crate::http::AppState;
use crate::services::AdminService;
use crate::storage::{AuditQuery, AUDIT_PAGE_MAX};

/// Page size when the client does not ask for one.
const DEFAULT_LIMIT: u32 = 50;

pub fn router() -> Router<AppState> {
    Router::new().route("/audit", get(audit))
}

/// The query string of GET /api/admin/audit (documentation; parsed by hand
/// so every bad value is a 422 naming its parameter).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuditFilters {
    /// Only events of this user id.
    user_id: Option<String>,
    /// Only this event, e.g. `login_failure`.
    #[param(example = "login_failure")]
    event: Option<String>,
    /// Only events at or after this instant (RFC 3339).
    #[param(example = "2026-01-01T00:00:00Z")]
    since: Option<String>,
    /// Only events before this instant (RFC 3339).
    until: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<u32>,
    /// The `next` value of the previous page, for the next (older) page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPageResponse {
    /// Newest first.
    pub events: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next: Option<String>,
}

/// Read the audit trail, newest first, a page at a time (admin only).
#[utoipa::path(
    get, path = "/api/admin/audit", tag = "admin",
    operation_id = "admin_audit_trail",
    security(("bearer" = [])),
    params(AuditFilters),
    responses(
        (status = 200, description = "A page of audit events", body = AuditPageResponse),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token (`invalid_token`)", body = ErrorBody),
        (status = 403, description = "Signed in without the admin role (`forbidden`)", body = ErrorBody),
        (status = 422, description = "A filter value is not acceptable (`validation_failed`, naming it)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn audit(
    State(admin): State<Arc<AdminService>>,
    AdminUser(_admin): AdminUser,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<AuditPageResponse>, ApiError> {
    let query = parse_filters(&filter_pairs(query)?).map_err(ApiError::validation)?;
    let page = admin.audit_page(query).await?;
    Ok(Json(AuditPageResponse {
        events: page.events,
        next: page.next.map(|seq| seq.to_string()),
    }))
}

/// The filters of an admin listing as `(name, value)` pairs: 400 for a
/// query string that does not even parse, 422 naming each filter given
/// more than once (which of two values was meant cannot be guessed).
pub(super) fn filter_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    let Query(pairs) = query.map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "The query string is malformed.",
        )
    })?;
    let mut seen = std::collections::HashSet::new();
    let repeated: Vec<FieldError> = pairs
        .iter()
        .filter(|(key, _)| !seen.insert(key.as_str()))
        .map(|(key, _)| FieldError::new(key.clone(), "Give this filter once."))
        .collect();
    if repeated.is_empty() {
        Ok(pairs)
    } else {
        Err(ApiError::validation(repeated))
    }
}

fn parse_filters(pairs: &[(String, String)]) -> Result<AuditQuery, Vec<FieldError>> {
    let mut query = AuditQuery {
        limit: DEFAULT_LIMIT,
        ..AuditQuery::default()
    };
    let mut errors = Vec::new();
    let time = |value: &str| DateTime::parse_from_rfc3339(value).map(|t| t.with_timezone(&Utc));
    for (key, value) in pairs {
        let bad = |message: &str| FieldError::new(key.clone(), message);
        match key.as_str() {
            "user_id" if !value.is_empty() && value.len() <= 64 => {
                query.user_id = Some(value.clone())
            }
            "user_id" => errors.push(bad("Give a user id.")),
            "event" => match AuditEvent::parse(value) {
                Some(event) => query.event = Some(event),
                None => errors.push(bad("Unknown event name.")),
            },
            "since" => match time(value) {
                Ok(t) => query.since = Some(t),
                Err(_) => errors.push(bad("Give an RFC 3339 time, e.g. 2026-01-01T00:00:00Z.")),
            },
            "until" => match time(value) {
                Ok(t) => query.until = Some(t),
                Err(_) => errors.push(bad("Give an RFC 3339 time, e.g. 2026-01-01T00:00:00Z.")),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=AUDIT_PAGE_MAX).contains(&n) => query.limit = n,
                _ => errors.push(bad("Give a whole number from 1 to 200.")),
            },
            "cursor" => match value.parse::<u64>() {
                Ok(n) if n > 0 => query.before_seq = Some(n),
                _ => errors.push(bad("Give the `next` value of the previous page.")),
            },
            _ => errors.push(bad("This filter is not accepted.")),
        }
    }
    if let (Some(since), Some(until)) = (query.since, query.until) {
        if since >= until {
            errors.push(FieldError::new("until", "Must be later than `since`."));
        }
    }
    if errors.is_empty() {
        Ok(query)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn filters_parse_and_bad_ones_name_the_field() {
        let q = parse_filters(&pairs(&[
            ("event", "login_failure"),
            ("since", "2026-01-01T00:00:00Z"),
            ("limit", "200"),
            ("cursor", "42"),
        ]))
        .unwrap();
        assert_eq!(q.event, Some(AuditEvent::LoginFailure));
        assert_eq!((q.limit, q.before_seq), (200, Some(42)));
        for (key, value) in [
            ("event", "nope"),
            ("since", "yesterday"),
            ("limit", "0"),
            ("limit", "201"),
            ("cursor", "-1"),
            ("role", "admin"),
        ] {
            let errors = parse_filters(&pairs(&[(key, value)])).unwrap_err();
            assert_eq!(errors[0].field, key);
        }
    }
}
