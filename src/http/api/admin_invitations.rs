//! /api/admin/invitations (issue 19): an administrator invites someone by
//! email, lists the open invitations, sends one again or revokes it. Every
//! route needs the admin role and a recent sign-in (step-up), and every
//! change is audited with the acting admin. The link's token is never in
//! an answer: only the invitee's mailbox gets it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::responses::{AdminErrors, BearerErrors, BodyErrors, RateLimited, Unavailable};
use crate::domain::Role;
use crate::error::{ApiError, ErrorBody};
use crate::http::extract::{AdminAction, ApiJson};
use crate::http::AppState;
use crate::services::{ClientContext, Invitations, InviteInput, ListedInvitation};
use crate::storage::Invitation;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/invitations", post(invite).get(list))
        .route("/invitations/{id}/resend", post(resend))
        .route("/invitations/{id}", delete(revoke))
}

/// Who to invite. Every field is required.
///
/// A missing field reads as empty, so that it is refused with the others
/// as a field error (422). The default is per field, not on the struct:
/// utoipa documents a struct-wide default as `default: ""` on every field,
/// which is not an email address (openapi-spec-validator refuses it) and
/// not a value anyone should send.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    #[serde(default)]
    #[schema(example = "nurse.lee@example.com", format = "email", required = true)]
    pub email: String,
    #[serde(default)]
    #[schema(example = "Sam Lee", min_length = 1, max_length = 100, required = true)]
    pub name: String,
    /// `admin` or one of ROLES.
    #[serde(default)]
    #[schema(example = "nurse", required = true)]
    pub role: String,
}

/// An open invitation (never its link).
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// `pending`, or `expired` (the link no longer works: resend or revoke).
    #[schema(example = "pending")]
    pub status: &'static str,
    /// The admin who sent it.
    pub invited_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// How many times it was sent again, each time with a new link.
    pub resend_count: u32,
    pub last_sent_at: DateTime<Utc>,
}

impl InvitationView {
    fn new(invitation: Invitation, expired: bool) -> Self {
        Self {
            id: invitation.id,
            email: invitation.email.as_str().to_owned(),
            name: invitation.name.as_str().to_owned(),
            role: invitation.role,
            status: if expired { "expired" } else { "pending" },
            invited_by: invitation.invited_by.as_str().to_owned(),
            created_at: invitation.created_at,
            expires_at: invitation.expires_at,
            resend_count: invitation.resend_count,
            last_sent_at: invitation.last_sent_at,
        }
    }
}

impl From<ListedInvitation> for InvitationView {
    fn from(listed: ListedInvitation) -> Self {
        Self::new(listed.invitation, listed.expired)
    }
}

/// The open invitations.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationList {
    pub invitations: Vec<InvitationView>,
}

/// Invite someone: they are emailed a single-use link (INVITE_EXPIRES,
/// default 72h) to a page where they choose a password; the account then
/// has this role and a verified address.
#[utoipa::path(
    post, path = "/api/admin/invitations", tag = "admin",
    operation_id = "admin_create_invitation",
    security(("bearer" = [])),
    request_body = InviteRequest,
    responses(
        (status = 201, description = "Invited; the email is on its way", body = InvitationView),
        BodyErrors,
        (status = 401, description = "Missing, invalid or expired access token (`invalid_token`), or a sign-in older than REAUTH_WINDOW (`reauthentication_required`): sign in again", body = ErrorBody),
        AdminErrors,
        (status = 409, description = "The address already has an account (`email_taken`) or an unexpired invitation (`invitation_pending`: resend or revoke it)", body = ErrorBody),
        (status = 422, description = "A bad email or name, or a role the clinic does not use (`validation_failed`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn invite(
    State(invitations): State<Arc<Invitations>>,
    AdminAction(admin): AdminAction,
    client: ClientContext,
    ApiJson(body): ApiJson<InviteRequest>,
) -> Result<(StatusCode, Json<InvitationView>), ApiError> {
    let input = InviteInput {
        email: body.email,
        name: body.name,
        role: body.role,
    };
    let invitation = invitations.invite(&input, &admin, &client).await?;
    Ok((
        StatusCode::CREATED,
        Json(InvitationView::new(invitation, false)),
    ))
}

/// The open invitations, oldest first: pending ones and expired ones not
/// yet resent or revoked (accepted and revoked ones are gone; the audit
/// trail keeps them).
#[utoipa::path(
    get, path = "/api/admin/invitations", tag = "admin",
    operation_id = "admin_list_invitations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The open invitations", body = InvitationList),
        BearerErrors,
        (status = 401, description = "A sign-in older than REAUTH_WINDOW (`reauthentication_required`): sign in again", body = ErrorBody),
        AdminErrors,
        RateLimited,
        Unavailable,
    )
)]
pub async fn list(
    State(invitations): State<Arc<Invitations>>,
    AdminAction(_admin): AdminAction,
) -> Result<Json<InvitationList>, ApiError> {
    let listed = invitations.list().await?;
    Ok(Json(InvitationList {
        invitations: listed.into_iter().map(InvitationView::from).collect(),
    }))
}

/// Send an invitation again: a new link and a new expiry; the old link
/// stops working.
#[utoipa::path(
    post, path = "/api/admin/invitations/{id}/resend", tag = "admin",
    operation_id = "admin_resend_invitation",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The invitation's id")),
    responses(
        (status = 200, description = "Sent again", body = InvitationView),
        BearerErrors,
        (status = 401, description = "A sign-in older than REAUTH_WINDOW (`reauthentication_required`): sign in again", body = ErrorBody),
        AdminErrors,
        (status = 404, description = "No open invitation with this id (`not_found`)", body = ErrorBody),
        (status = 409, description = "The address has an account by now (`email_taken`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn resend(
    State(invitations): State<Arc<Invitations>>,
    AdminAction(admin): AdminAction,
    client: ClientContext,
    Path(id): Path<String>,
) -> Result<Json<InvitationView>, ApiError> {
    let invitation = invitations.resend(&id, &admin, &client).await?;
    Ok(Json(InvitationView::new(invitation, false)))
}

/// Revoke an invitation: its link stops working.
#[utoipa::path(
    delete, path = "/api/admin/invitations/{id}", tag = "admin",
    operation_id = "admin_revoke_invitation",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The invitation's id")),
    responses(
        (status = 204, description = "Revoked"),
        BearerErrors,
        (status = 401, description = "A sign-in older than REAUTH_WINDOW (`reauthentication_required`): sign in again", body = ErrorBody),
        AdminErrors,
        (status = 404, description = "No open invitation with this id (`not_found`)", body = ErrorBody),
        RateLimited,
        Unavailable,
    )
)]
pub async fn revoke(
    State(invitations): State<Arc<Invitations>>,
    AdminAction(admin): AdminAction,
    client: ClientContext,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    invitations.revoke(&id, &admin, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
