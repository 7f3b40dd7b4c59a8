//! /admin and /admin/users/{id}: finding accounts and seeing one in full,
//! read through the same directory as GET /api/admin/users.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::actions::Action;
use super::{filter_value, query_pairs, AdminPage, Listing};
use crate::domain::{AuditOutcome, AuditRecord, UserId};
use crate::http::api::admin_users::{encode_cursor, parse_filters};
use crate::http::pages::handlers::{page, PageResult};
use crate::http::pages::views::admin::{
    ActionLink, AdminSessionRow, EventRow, PasskeyLine, UserPage, UserRowView, UsersPage, STATUSES,
    USER_FILTER_FIELDS,
};
use crate::http::pages::views::{session_device, FormState, Moment};
use crate::http::AppState;
use crate::services::user_directory::{AccountState, UserRow};

fn state_label(state: AccountState) -> &'static str {
    match state {
        AccountState::Active => "Active",
        AccountState::Locked => "Locked",
        AccountState::Disabled => "Disabled",
    }
}

fn row_view(row: UserRow) -> UserRowView {
    UserRowView {
        status: state_label(row.state),
        second_factor: row.second_factor,
        last_sign_in: row.last_sign_in_at.map(Moment::of),
        id: row.user.id.as_str().to_owned(),
        name: row.user.name.as_str().to_owned(),
        email: row.user.email.as_str().to_owned(),
        role: row.user.role.to_string(),
    }
}

/// The users table, filtered as the search form (or the address) says.
pub async fn list(
    State(state): State<AppState>,
    mut admin: AdminPage,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> PageResult {
    let pairs = query_pairs(query)?;
    let given = |key: &str| filter_value(&pairs, key);
    let (q, role, status) = (given("q"), given("role"), given("status"));
    let mut form = FormState::labelled(USER_FILTER_FIELDS);
    let listing = match parse_filters(&pairs) {
        Ok(filter) => {
            let found = state.user_directory.list(&filter).await?;
            Listing::found(
                found.users.into_iter().map(row_view).collect(),
                "/admin",
                &[("q", &q), ("role", &role), ("status", &status)],
                found.next.as_deref().map(encode_cursor),
            )
        }
        Err(errors) => {
            form.field_errors(errors);
            Listing::refused()
        }
    };
    let view = UsersPage {
        layout: admin.layout(&state).await?,
        nav: "users",
        form,
        q,
        role,
        status,
        roles: state
            .portal
            .roles
            .all()
            .iter()
            .map(ToString::to_string)
            .collect(),
        statuses: STATUSES,
        rows: listing.rows,
        next: listing.next,
    };
    page(listing.status, &view)
}

/// An audit record as a table row.
pub(super) fn event_row(record: AuditRecord) -> EventRow {
    EventRow {
        time: Moment::of(record.time),
        event: record.event.as_str(),
        failed: record.outcome == AuditOutcome::Failure,
        who: record
            .email
            .clone()
            .or_else(|| record.user_id.clone())
            .unwrap_or_else(|| "—".to_owned()),
        user_id: record.user_id,
        ip: record.ip.unwrap_or_else(|| "—".to_owned()),
        detail: record.detail.unwrap_or_default(),
    }
}

/// One account in full, with the actions an administrator may take on it.
pub async fn detail(
    State(state): State<AppState>,
    mut admin: AdminPage,
    Path(id): Path<String>,
) -> PageResult {
    let detail = state.user_directory.detail(&UserId::new(id)).await?;
    let user = &detail.row.user;
    let actions = Action::offered(user, detail.lock.locked_until.is_some())
        .into_iter()
        .map(|action| ActionLink {
            href: format!("/admin/users/{}/{}", user.id, action.slug()),
            label: action.label(),
            danger: action.dangerous(),
        })
        .collect();
    let view = UserPage {
        layout: admin.layout(&state).await?,
        nav: "users",
        id: user.id.as_str().to_owned(),
        name: user.name.as_str().to_owned(),
        email: user.email.as_str().to_owned(),
        role: user.role.to_string(),
        status: state_label(detail.row.state),
        verified: user.verified,
        created: Moment::of(user.created_at),
        last_sign_in: detail.row.last_sign_in_at.map(Moment::of),
        disabled_at: user.disabled_at.map(Moment::of),
        locked_until: detail.lock.locked_until.map(Moment::of),
        failures: detail.lock.failures,
        totp: detail.factors.totp,
        recovery_codes_left: detail.factors.recovery_codes_left,
        passkeys: detail
            .factors
            .passkeys
            .into_iter()
            .map(|p| PasskeyLine {
                name: p.name,
                created: Moment::of(p.created_at),
            })
            .collect(),
        emergency_access: user.emergency_access,
        is_admin: user.role.is_admin(),
        sessions: detail
            .sessions
            .into_iter()
            .map(|s| AdminSessionRow {
                device: session_device(s.kind, s.user_agent.as_deref()),
                ip: s.ip_address.unwrap_or_else(|| "unknown".to_owned()),
                created: Moment::of(s.created_at),
                last_used: Moment::of(s.last_used_at),
            })
            .collect(),
        events: detail.recent_events.into_iter().map(event_row).collect(),
        actions,
    };
    page(StatusCode::OK, &view)
}
