//! Emergency ("break-glass") access over the API (issue 19): the user
//! starts and ends it under /api/auth/emergency-access; administrators
//! read the review queue and review uses under /api/admin/emergency.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::TokenResponse;
use super::responses::{AdminErrors, BearerErrors, BodyErrors, RateLimited, Unavailable};
use crate::domain::{EmergencyEnd, EmergencyUse, FieldError, User};
use crate::error::{ApiError, ErrorBody};
use crate::http::extract::{AdminAction, AdminUser, ApiJson, SignedIn};
use crate::http::AppState;
use crate::services::emergency_access::{overdue, Caller};
use crate::services::{ClientContext, EmergencyAccess, EmergencyReviews};
use crate::storage::{EmergencyFilter, EMERGENCY_PAGE_MAX};

/// The queue's page size when the client does not ask for one.
const DEFAULT_LIMIT: u32 = 100;

/// Under /api/auth.
pub fn user_router() -> Router<AppState> {
    Router::new().route("/emergency-access", post(start).delete(end))
}

/// Under /api/admin.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/emergency", get(list))
        .route("/emergency/{id}/review", post(review))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Why: at least 20 characters a reviewer can check (the patient or
    /// situation). Kept in the audit trail and the review queue, never
    /// emailed.
    #[schema(example = "Patient in bay 3 unconscious; allergy record held by cardiology")]
    pub reason: String,
}

/// The window as the user's app sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmergencyWindowView {
    /// Also the `reason_id` in the token's `emergency` claim.
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// Fixed: the window is never extended.
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmergencyStartResponse {
    /// Carries `emergency: {started_at, expires_at, reason_id}` and
    /// `emergency` in `amr`; expires with the window at the latest.
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: u64,
    pub emergency: EmergencyWindowView,
}

/// Start emergency ("break-glass") access for EMERGENCY_ACCESS_TTL (default
/// 60 minutes, never extended). Needs the `emergency_access` permission
/// (administrators have it) and a sign-in within REAUTH_WINDOW (sign in
/// again, with the second factor when enrolled, if older). Audited, and
/// every administrator is emailed at once; the use then waits for another
/// administrator's review. Refreshes during the window keep the claim;
/// after it they do not.
#[utoipa::path(
    post, path = "/api/auth/emergency-access", tag = "account",
    operation_id = "start_emergency_access",
    security(("bearer" = [])),
    request_body(content = StartRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Emergency access is on: an access token carrying it", body = EmergencyStartResponse),
        BodyErrors,
        BearerErrors,
        (status = 401, description = "Bad access token (`invalid_token`), or a sign-in older than REAUTH_WINDOW (`reauthentication_required`: sign in again)", body = ErrorBody),
        (status = 403, description = "No emergency access permission (`forbidden`)", body = ErrorBody),
        (status = 409, description = "Emergency access is already on (`emergency_access_active`)", body = ErrorBody),
        (status = 422, description = "The reason is missing or shorter than 20 characters (`validation_failed`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn start(
    State(access): State<Arc<EmergencyAccess>>,
    SignedIn(who): SignedIn,
    client: ClientContext,
    ApiJson(body): ApiJson<StartRequest>,
) -> Result<(StatusCode, Json<EmergencyStartResponse>), ApiError> {
    let caller = Caller::from(&who);
    let grant = access.start(&caller, &body.reason, &client).await?;
    Ok((
        StatusCode::CREATED,
        Json(EmergencyStartResponse {
            access_token: grant.access.token,
            token_type: "Bearer",
            expires_in: grant.access.expires_in,
            emergency: EmergencyWindowView {
                id: grant.window.id,
                started_at: grant.window.started_at,
                expires_at: grant.window.expires_at,
            },
        }),
    ))
}

/// End emergency access early. Access tokens issued during the window stop
/// working at once; the answer is a plain access token for this sign-in.
#[utoipa::path(
    delete, path = "/api/auth/emergency-access", tag = "account",
    operation_id = "end_emergency_access",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Ended; an access token without the claim", body = TokenResponse),
        BearerErrors,
        (status = 409, description = "Emergency access is not on (`emergency_access_not_active`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn end(
    State(access): State<Arc<EmergencyAccess>>,
    SignedIn(who): SignedIn,
    client: ClientContext,
) -> Result<Json<TokenResponse>, ApiError> {
    let caller = Caller::from(&who);
    let token = access.end(&caller, &client).await?;
    Ok(Json(TokenResponse::from(&token)))
}

/// The query string of GET /api/admin/emergency (documentation; parsed by
/// hand so every bad value is a 422 naming its parameter).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct QueueFilters {
    /// `false`: the review queue, oldest first (overdue ones first);
    /// `true`: reviewed uses, newest first; absent: all, newest first.
    reviewed: Option<bool>,
    /// At most this many, 1 to 500 (default 100).
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewView {
    pub by: String,
    pub at: DateTime<Utc>,
    pub note: String,
}

/// One use of emergency access, as an administrator reviews it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmergencyUseView {
    pub id: String,
    pub user_id: String,
    /// The user's email and name now (null if the account cannot be read).
    pub user_email: Option<String>,
    pub user_name: Option<String>,
    pub reason: String,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Null while the window is open.
    pub ended_at: Option<DateTime<Utc>>,
    /// `expired` or `ended_by_user`; null while open.
    pub ended_how: Option<EmergencyEnd>,
    /// Whether the window is still open.
    pub active: bool,
    /// Unreviewed and started more than 24 hours ago.
    pub overdue: bool,
    /// Null until reviewed.
    pub review: Option<ReviewView>,
}

impl EmergencyUseView {
    fn new(used: EmergencyUse, user: Option<User>, now: DateTime<Utc>) -> Self {
        Self {
            active: used.is_active(now),
            overdue: used.review.is_none() && overdue(used.started_at, now),
            id: used.id,
            user_id: used.user_id.as_str().to_owned(),
            user_email: user.as_ref().map(|u| u.email.as_str().to_owned()),
            user_name: user.as_ref().map(|u| u.name.as_str().to_owned()),
            reason: used.reason.as_str().to_owned(),
            started_at: used.started_at,
            expires_at: used.expires_at,
            ended_at: used.ended_at,
            ended_how: used.ended_how,
            review: used.review.map(|r| ReviewView {
                by: r.by.as_str().to_owned(),
                at: r.at,
                note: r.note,
            }),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmergencyQueueResponse {
    pub uses: Vec<EmergencyUseView>,
}

/// The emergency access review queue (admin only).
#[utoipa::path(
    get, path = "/api/admin/emergency", tag = "admin",
    operation_id = "admin_list_emergency_uses",
    security(("bearer" = [])),
    params(QueueFilters),
    responses(
        (status = 200, description = "Uses of emergency access", body = EmergencyQueueResponse),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        BearerErrors,
        AdminErrors,
        (status = 422, description = "A filter value is not acceptable (`validation_failed`, naming it)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<EmergencyQueueResponse>, ApiError> {
    let pairs = super::admin::filter_pairs(query)?;
    let (filter, limit) = parse_filters(&pairs).map_err(ApiError::validation)?;
    let uses = state.emergency_reviews.list(filter, limit).await?;
    let now = state.clock.now();
    Ok(Json(EmergencyQueueResponse {
        uses: uses
            .into_iter()
            .map(|(used, user)| EmergencyUseView::new(used, user, now))
            .collect(),
    }))
}

fn parse_filters(pairs: &[(String, String)]) -> Result<(EmergencyFilter, u32), Vec<FieldError>> {
    let mut filter = EmergencyFilter::All;
    let mut limit = DEFAULT_LIMIT;
    let mut errors = Vec::new();
    for (key, value) in pairs {
        let bad = |message: &str| FieldError::new(key.clone(), message);
        match (key.as_str(), value.as_str()) {
            ("reviewed", "false") => filter = EmergencyFilter::Unreviewed,
            ("reviewed", "true") => filter = EmergencyFilter::Reviewed,
            ("reviewed", _) => errors.push(bad("Give true or false.")),
            ("limit", value) => match value.parse::<u32>() {
                Ok(n) if (1..=EMERGENCY_PAGE_MAX).contains(&n) => limit = n,
                _ => errors.push(bad("Give a whole number from 1 to 500.")),
            },
            _ => errors.push(bad("This filter is not accepted.")),
        }
    }
    if errors.is_empty() {
        Ok((filter, limit))
    } else {
        Err(errors)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// What the reviewer found (required, at most 1000 characters).
    #[schema(example = "Confirmed with the ward: patient admitted unconscious, access justified")]
    pub note: String,
}

/// Review a use of emergency access (admin only, and not one's own).
#[utoipa::path(
    post, path = "/api/admin/emergency/{id}/review", tag = "admin",
    operation_id = "admin_review_emergency_use",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The use's id (`reason_id` in its tokens)")),
    request_body(content = ReviewRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Reviewed", body = EmergencyUseView),
        BodyErrors,
        BearerErrors,
        (status = 401, description = "Bad access token (`invalid_token`), or a sign-in older than REAUTH_WINDOW (`reauthentication_required`)", body = ErrorBody),
        (status = 403, description = "Not an administrator, or one's own use (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No such use (`not_found`)", body = ErrorBody),
        (status = 409, description = "Already reviewed (`already_reviewed`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn review(
    State(state): State<AppState>,
    AdminAction(admin): AdminAction,
    client: ClientContext,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReviewRequest>,
) -> Result<Json<EmergencyUseView>, ApiError> {
    let reviews: &Arc<EmergencyReviews> = &state.emergency_reviews;
    let used = reviews.review(&id, &body.note, &admin, &client).await?;
    let user = state.sessions.user_by_id(&used.user_id).await?;
    Ok(Json(EmergencyUseView::new(used, user, state.clock.now())))
}
