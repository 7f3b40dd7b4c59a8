//! /api/admin/users: the accounts as an administrator finds and sees them,
//! and the actions on one account (issue 19). Each action answers the
//! account as it now is and is audited with the acting admin, the target
//! and the optional reason.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::admin::filter_pairs;
use super::responses::{AdminErrors, BearerErrors, BodyErrors, RateLimited, Unavailable};
use crate::domain::{AuditRecord, FieldError, Role, User, UserId};
use crate::error::{ApiError, ErrorBody};
use crate::http::extract::{AdminAction, AdminUser, ApiJson, OptionalJson};
use crate::http::AppState;
use crate::services::user_directory::{
    AccountState, StatusFilter, UserDetail, UserFilter, UserRow,
};
use crate::services::{
    AccountErasure, AccountStatus, AccountSupport, ClientContext, MfaReset, RoleChange,
    SessionInfo, UserDirectory,
};
use crate::storage::USER_PAGE_MAX;

/// Page size when the client does not ask for one.
const DEFAULT_LIMIT: u32 = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list))
        .route("/users/{id}", get(detail).patch(update).delete(erase))
        .route("/users/{id}/disable", post(disable))
        .route("/users/{id}/enable", post(enable))
        .route("/users/{id}/unlock", post(unlock))
        .route("/users/{id}/sessions/revoke", post(revoke_sessions))
        .route("/users/{id}/password-reset", post(password_reset))
        .route("/users/{id}/mfa-reset", post(mfa_reset))
}

/// The query string of GET /api/admin/users (documentation; parsed by hand
/// so every bad value is a 422 naming its parameter).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct UserFilters {
    /// Start of the email or the name, case-insensitive (on SQLite, name
    /// letters outside ASCII must match their case); at most 254
    /// characters.
    #[param(example = "jan")]
    q: Option<String>,
    /// Only this role (any well-formed role name: one ROLES no longer lists
    /// still finds the users who have it).
    #[param(example = "nurse")]
    role: Option<String>,
    /// `active` (neither disabled nor locked), `disabled`, `locked` (sign-in
    /// paused now), `unverified` (email not confirmed), `no_second_factor`
    /// (neither an authenticator app nor a passkey).
    #[param(example = "disabled")]
    status: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<u32>,
    /// The `next` value of the previous page.
    cursor: Option<String>,
}

/// One account in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserRowView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// `disabled` wins over `locked`, which wins over `active`.
    pub status: AccountState,
    pub verified: bool,
    /// When the account was disabled; null while active.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Until when sign-in is paused; null when it is not.
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The newest completed sign-in in the audit trail; null if none is
    /// kept.
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// A confirmed authenticator app or a passkey.
    pub second_factor: bool,
}

impl From<UserRow> for UserRowView {
    fn from(row: UserRow) -> Self {
        let user = row.user;
        Self {
            id: user.id.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            role: user.role,
            status: row.state,
            verified: user.verified,
            disabled_at: user.disabled_at,
            locked_until: row.locked_until,
            created_at: user.created_at,
            last_sign_in_at: row.last_sign_in_at,
            second_factor: row.second_factor,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserListResponse {
    /// By email, ascending.
    pub users: Vec<UserRowView>,
    /// Pass as `cursor` for the next page; null when nothing more matches.
    /// A page may be shorter than `limit` and still have a `next` (the
    /// `locked` and `no_second_factor` filters read at most 1000 accounts
    /// per request).
    pub next: Option<String>,
}

/// The sign-in lock of one account.
#[derive(Debug, Serialize, ToSchema)]
pub struct LockView {
    /// Null when sign-in is not paused.
    pub locked_until: Option<DateTime<Utc>>,
    /// Failed sign-ins in the current window.
    pub failures: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FactorsView {
    /// A confirmed authenticator app.
    pub totp: bool,
    pub recovery_codes_left: u32,
    pub passkeys: Vec<PasskeyView>,
}

/// One account in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserDetailView {
    #[serde(flatten)]
    pub user: UserRowView,
    /// Portal sessions and API sign-ins, as the user's own list shows them
    /// (`current` is always false here).
    pub sessions: Vec<SessionInfo>,
    pub lock: LockView,
    pub factors: FactorsView,
    /// The user's last 20 audit events, newest first.
    pub recent_events: Vec<AuditRecord>,
}

impl From<UserDetail> for UserDetailView {
    fn from(detail: UserDetail) -> Self {
        Self {
            user: detail.row.into(),
            sessions: detail.sessions,
            lock: LockView {
                locked_until: detail.lock.locked_until,
                failures: detail.lock.failures,
            },
            factors: FactorsView {
                totp: detail.factors.totp,
                recovery_codes_left: detail.factors.recovery_codes_left,
                passkeys: detail
                    .factors
                    .passkeys
                    .into_iter()
                    .map(|p| PasskeyView {
                        id: p.id,
                        name: p.name,
                        created_at: p.created_at,
                        last_used_at: p.last_used_at,
                    })
                    .collect(),
            },
            recent_events: detail.recent_events,
        }
    }
}

/// Find accounts: by the start of the email or name, role and status, by
/// email ascending, a page at a time (admin only).
#[utoipa::path(
    get, path = "/api/admin/users", tag = "admin",
    operation_id = "admin_list_users",
    security(("bearer" = [])),
    params(UserFilters),
    responses(
        (status = 200, description = "A page of accounts", body = UserListResponse),
        (status = 400, description = "Malformed query string", body = ErrorBody),
        BearerErrors,
        AdminErrors,
        (status = 422, description = "A filter value is not acceptable (`validation_failed`, naming it)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn list(
    State(directory): State<Arc<UserDirectory>>,
    AdminUser(_admin): AdminUser,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<UserListResponse>, ApiError> {
    let filter = parse_filters(&filter_pairs(query)?).map_err(ApiError::validation)?;
    let page = directory.list(&filter).await?;
    Ok(Json(UserListResponse {
        users: page.users.into_iter().map(UserRowView::from).collect(),
        next: page.next.as_deref().map(encode_cursor),
    }))
}

/// One account in full: profile, status, sessions, lock, factors and its
/// last 20 audit events (admin only).
#[utoipa::path(
    get, path = "/api/admin/users/{id}", tag = "admin",
    operation_id = "admin_get_user",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The account", body = UserDetailView),
        BearerErrors,
        AdminErrors,
        (status = 404, description = "No such user (`not_found`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn detail(
    State(directory): State<Arc<UserDirectory>>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<String>,
) -> Result<Json<UserDetailView>, ApiError> {
    let detail = directory.detail(&UserId::new(id)).await?;
    Ok(Json(detail.into()))
}

/// The cursor is the last email of the page, base64url: opaque to clients,
/// and nothing to escape in a URL.
pub(crate) fn encode_cursor(email: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(email)
}

fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

pub(crate) fn parse_filters(pairs: &[(String, String)]) -> Result<UserFilter, Vec<FieldError>> {
    let mut filter = UserFilter {
        limit: DEFAULT_LIMIT,
        ..UserFilter::default()
    };
    let mut errors = Vec::new();
    for (key, value) in pairs {
        let bad = |message: &str| FieldError::new(key.clone(), message);
        match key.as_str() {
            // An empty search box means no search.
            "q" if value.trim().is_empty() => {}
            "q" if value.chars().count() <= crate::domain::EmailAddress::MAX_LEN => {
                filter.prefix = Some(value.trim().to_owned())
            }
            "q" => errors.push(bad("Give at most 254 characters.")),
            "role" => match Role::parse(value) {
                Some(role) => filter.role = Some(role),
                None => errors.push(bad("Give a role name, e.g. nurse.")),
            },
            "status" => match StatusFilter::parse(value) {
                Some(status) => filter.status = Some(status),
                None => errors.push(FieldError::new(
                    key.clone(),
                    format!("Status must be one of: {}.", StatusFilter::NAMES),
                )),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=USER_PAGE_MAX).contains(&n) => filter.limit = n,
                _ => errors.push(bad("Give a whole number from 1 to 200.")),
            },
            "cursor" => match decode_cursor(value) {
                Some(email) => filter.after_email = Some(email),
                None => errors.push(bad("Give the `next` value of the previous page.")),
            },
            _ => errors.push(bad("This filter is not accepted.")),
        }
    }
    if errors.is_empty() {
        Ok(filter)
    } else {
        Err(errors)
    }
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
    /// May start emergency access (granted; administrators may anyway).
    pub emergency_access: bool,
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
            emergency_access: user.emergency_access,
        }
    }
}

/// What every action on one account may answer besides the shared sets:
/// listed after them, so its 401 (which also covers a stale sign-in) wins.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description; nothing builds it
pub enum ActionErrors {
    #[response(
        status = 401,
        description = "Missing, invalid or expired access token (`invalid_token`), or a sign-in older than REAUTH_WINDOW (`reauthentication_required`): sign in again"
    )]
    Reauthenticate(ErrorBody),
    #[response(status = 404, description = "No such user (`not_found`)")]
    NotFound(ErrorBody),
}

/// What every action on one account reads from its request: the acting
/// administrator (admin role and a recent sign-in), who is asking, the
/// target's id from the path, and the optional reason from the body, in
/// that order (a non-admin is refused before the body is read).
pub struct AccountAction {
    admin: User,
    client: ClientContext,
    target: UserId,
    reason: Option<String>,
}

impl AccountAction {
    fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl FromRequest<AppState> for AccountAction {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let AdminAction(admin) = AdminAction::from_request_parts(&mut parts, state).await?;
        let Ok(client) = ClientContext::from_request_parts(&mut parts, state).await;
        let Path(id) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        let OptionalJson(reason) =
            OptionalJson::<ReasonRequest>::from_request(Request::from_parts(parts, body), state)
                .await?;
        Ok(Self {
            admin,
            client,
            target: UserId::new(id),
            reason: reason.and_then(|body| body.reason),
        })
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
    operation_id = "admin_disable_user",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = Option<ReasonRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The account, now disabled (also when it already was)", body = AdminUserView),
        BodyErrors,
        BearerErrors,
        AdminErrors,
        ActionErrors,
        (status = 409, description = "The last active administrator (`last_admin`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn disable(
    State(status): State<Arc<AccountStatus>>,
    action: AccountAction,
) -> Result<Json<AdminUserView>, ApiError> {
    let user = status
        .disable(
            &action.target,
            action.reason(),
            &action.admin,
            &action.client,
        )
        .await?;
    Ok(Json(user.into()))
}

/// Enable a disabled account again (its password is unchanged).
#[utoipa::path(
    post, path = "/api/admin/users/{id}/enable", tag = "admin",
    operation_id = "admin_enable_user",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = Option<ReasonRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The account, now active (also when it already was)", body = AdminUserView),
        BodyErrors,
        BearerErrors,
        AdminErrors,
        ActionErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn enable(
    State(status): State<Arc<AccountStatus>>,
    action: AccountAction,
) -> Result<Json<AdminUserView>, ApiError> {
    let user = status
        .enable(
            &action.target,
            action.reason(),
            &action.admin,
            &action.client,
        )
        .await?;
    Ok(Json(user.into()))
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
        let cursor = encode_cursor("ann@example.com");
        let f = parse_filters(&pairs(&[
            ("q", " Jan "),
            ("role", "nurse"),
            ("status", "no_second_factor"),
            ("limit", "200"),
            ("cursor", &cursor),
        ]))
        .unwrap();
        assert_eq!(f.prefix.as_deref(), Some("Jan"));
        assert_eq!(f.status, Some(StatusFilter::NoSecondFactor));
        assert_eq!(f.after_email.as_deref(), Some("ann@example.com"));
        assert_eq!(f.limit, 200);
        assert!(parse_filters(&pairs(&[("q", "")]))
            .unwrap()
            .prefix
            .is_none());
        for (key, value) in [
            ("status", "gone"),
            ("role", "Not A Role"),
            ("limit", "0"),
            ("limit", "201"),
            ("cursor", "!!"),
            ("sort", "name"),
        ] {
            let errors = parse_filters(&pairs(&[(key, value)])).unwrap_err();
            assert_eq!(errors[0].field, key, "{key}={value}");
        }
    }
}

/// What PATCH /api/admin/users/{id} may change. Fields left out stay as
/// they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// One of the clinic's roles (`admin` or one of ROLES). The user's
    /// access tokens stop working at once (they carry the old role).
    #[schema(example = "nurse")]
    pub role: Option<String>,
    /// Grant (`true`) or withdraw (`false`) the permission to start
    /// emergency access (administrators have it whatever this says);
    /// audited `emergency_permission_changed`.
    pub emergency_access: Option<bool>,
    /// One line, at most 500 characters; recorded in the audit trail.
    #[schema(example = "Moved to the front desk")]
    pub reason: Option<String>,
}

/// Change an account: its role, and whether it may start emergency
/// access. The last active administrator cannot be demoted (409
/// `last_admin`).
#[utoipa::path(
    patch, path = "/api/admin/users/{id}", tag = "admin",
    operation_id = "admin_update_user",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = UpdateUserRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The account as it now is (also when nothing changed)", body = AdminUserView),
        BodyErrors,
        BearerErrors,
        AdminErrors,
        ActionErrors,
        (status = 409, description = "The last active administrator (`last_admin`)", body = ErrorBody),
        (status = 422, description = "A role the clinic does not use, or a bad reason (`validation_failed`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn update(
    State(state): State<AppState>,
    AdminAction(admin): AdminAction,
    client: ClientContext,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateUserRequest>,
) -> Result<Json<AdminUserView>, ApiError> {
    let id = UserId::new(id);
    let roles: &Arc<RoleChange> = &state.role_change;
    let mut user = roles
        .change(
            &id,
            body.role.as_deref(),
            body.reason.as_deref(),
            &admin,
            &client,
        )
        .await?;
    if let Some(allowed) = body.emergency_access {
        user = state
            .emergency_reviews
            .set_permission(&id, allowed, &admin, &client)
            .await?;
    }
    Ok(Json(user.into()))
}

/// Clear the failed-sign-in lock of an account.
#[utoipa::path(
    post, path = "/api/admin/users/{id}/unlock", tag = "admin",
    operation_id = "admin_unlock_user",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = Option<ReasonRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The account; its sign-in is no longer paused", body = AdminUserView),
        BodyErrors,
        BearerErrors,
        AdminErrors,
        ActionErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn unlock(
    State(support): State<Arc<AccountSupport>>,
    action: AccountAction,
) -> Result<Json<AdminUserView>, ApiError> {
    let user = support
        .unlock(
            &action.target,
            action.reason(),
            &action.admin,
            &action.client,
        )
        .await?;
    Ok(Json(user.into()))
}

/// End every portal session and API sign-in of an account; its access
/// tokens stop working at once. The password is unchanged.
#[utoipa::path(
    post, path = "/api/admin/users/{id}/sessions/revoke", tag = "admin",
    operation_id = "admin_revoke_user_sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = Option<ReasonRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The account, signed out everywhere", body = AdminUserView),
        BodyErrors,
        BearerErrors,
        AdminErrors,
        ActionErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn revoke_sessions(
    State(support): State<Arc<AccountSupport>>,
    action: AccountAction,
) -> Result<Json<AdminUserView>, ApiError> {
    let user = support
        .end_sessions(
            &action.target,
            action.reason(),
            &action.admin,
            &action.client,
        )
        .await?;
    Ok(Json(user.into()))
}

/// Email the account's owner the usual password-reset link (the previous
/// one stops working). Administrators never see or set passwords.
#[utoipa::path(
    post, path = "/api/admin/users/{id}/password-reset", tag = "admin",
    operation_id = "admin_send_password_reset",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = Option<ReasonRequest>, content_type = "application/json"),
    responses(
        (status = 202, description = "The email is queued"),
        BodyErrors,
        BearerErrors,
        AdminErrors,
        ActionErrors,
        (status = 403, description = "Not an administrator (`forbidden`), or the account is disabled (`account_disabled`): enable it first", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn password_reset(
    State(support): State<Arc<AccountSupport>>,
    action: AccountAction,
) -> Result<StatusCode, ApiError> {
    support
        .send_password_reset(
            &action.target,
            action.reason(),
            &action.admin,
            &action.client,
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// Reset an account's second factor: its authenticator app, recovery codes
/// and passkeys are removed and every session ends, so its next sign-in
/// asks it to enrol again where policy requires one. The user and every
/// administrator are emailed.
#[utoipa::path(
    post, path = "/api/admin/users/{id}/mfa-reset", tag = "admin",
    operation_id = "admin_reset_user_mfa",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = Option<ReasonRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The account, without second factors and signed out", body = AdminUserView),
        BodyErrors,
        BearerErrors,
        AdminErrors,
        ActionErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn mfa_reset(
    State(reset): State<Arc<MfaReset>>,
    action: AccountAction,
) -> Result<Json<AdminUserView>, ApiError> {
    let user = reset
        .reset(
            &action.target,
            action.reason(),
            &action.admin,
            &action.client,
        )
        .await?;
    Ok(Json(user.into()))
}

/// Erase a disabled account: its name becomes "Deleted user", its email
/// `deleted-<id>@invalid.example`, its password one nobody knows; its
/// factors, links and sessions go. The id stays, so the audit trail keeps
/// pointing at it. Answers the erased account (200).
#[utoipa::path(
    delete, path = "/api/admin/users/{id}", tag = "admin",
    operation_id = "admin_erase_user",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The user's id")),
    request_body(content = Option<ReasonRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The erased account (also when it already was)", body = AdminUserView),
        BodyErrors,
        BearerErrors,
        AdminErrors,
        ActionErrors,
        (status = 409, description = "The account is active: disable it first (`account_not_disabled`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn erase(
    State(erasure): State<Arc<AccountErasure>>,
    action: AccountAction,
) -> Result<Json<AdminUserView>, ApiError> {
    let user = erasure
        .erase(
            &action.target,
            action.reason(),
            &action.admin,
            &action.client,
        )
        .await?;
    Ok(Json(user.into()))
}
