//! /api/admin/users: an administrator's actions on one account (issue 19).
//! Each answers the account as it now is; each is audited with the acting
//! admin, the target and the optional reason.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::responses::{AdminErrors, BearerErrors, BodyErrors, RateLimited, Unavailable};
use crate::domain::{Role, User, UserId};
use crate::error::{ApiError, ErrorBody};
use crate::http::extract::{AdminAction, OptionalJson};
use crate::http::AppState;
use crate::services::{AccountStatus, ClientContext};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users/{id}/disable", post(disable))
        .route("/users/{id}/enable", post(enable))
}

/// An account as an administrator sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub verified: bool,
    /// `active` or `disabled`.
    #[schema(example = "active")]
    pub status: &'static str,
    /// When the account was disabled; null while active.
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<User> for AdminUserView {
    fn from(user: User) -> Self {
        Self {
            status: if user.is_disabled() {
                "disabled"
            } else {
                "active"
            },
            id: user.id.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            role: user.role,
            verified: user.verified,
            disabled_at: user.disabled_at,
            created_at: user.created_at,
        }
    }
}

/// Why an admin acted; optional, the body may be left out entirely.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// One line, at most 500 characters; recorded in the audit trail.
    #[schema(example = "Left the clinic on 30 November")]
    pub reason: Option<String>,
}

/// Disable an account (offboarding): it cannot sign in, refresh, reset its
/// password or use a link, and every session and access token it had ends
/// at once. Sign-in with its right password then answers 403
/// `account_disabled`; with a wrong one the usual 401.
#[utoipa::path(
    post, path = "/api/admin/users/{id}/disable", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = Option<ReasonRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The account, now disabled (also when it already was)", body = AdminUserView),
        BodyErrors,
        BearerErrors,
        (status = 401, description = "Missing, invalid or expired access token (`invalid_token`), or a sign-in older than REAUTH_WINDOW (`reauthentication_required`): sign in again", body = ErrorBody),
        AdminErrors,
        (status = 404, description = "No such user (`not_found`)", body = ErrorBody),
        (status = 409, description = "The last active administrator (`last_admin`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn disable(
    State(status): State<Arc<AccountStatus>>,
    AdminAction(admin): AdminAction,
    client: ClientContext,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<ReasonRequest>,
) -> Result<Json<AdminUserView>, ApiError> {
    let reason = body.unwrap_or_default().reason;
    let user = status
        .disable(&UserId::new(id), reason.as_deref(), &admin, &client)
        .await?;
    Ok(Json(user.into()))
}

/// Enable a disabled account again (its password is unchanged).
#[utoipa::path(
    post, path = "/api/admin/users/{id}/enable", tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = Option<ReasonRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The account, now active (also when it already was)", body = AdminUserView),
        BodyErrors,
        BearerErrors,
        (status = 401, description = "Missing, invalid or expired access token (`invalid_token`), or a sign-in older than REAUTH_WINDOW (`reauthentication_required`): sign in again", body = ErrorBody),
        AdminErrors,
        (status = 404, description = "No such user (`not_found`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn enable(
    State(status): State<Arc<AccountStatus>>,
    AdminAction(admin): AdminAction,
    client: ClientContext,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<ReasonRequest>,
) -> Result<Json<AdminUserView>, ApiError> {
    let reason = body.unwrap_or_default().reason;
    let user = status
        .enable(&UserId::new(id), reason.as_deref(), &admin, &client)
        .await?;
    Ok(Json(user.into()))
}
