//! /admin/invitations: invite someone, and see, resend or revoke the open
//! invitations; the same use-case as /api/admin/invitations.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{refusal, AdminPage};
use crate::http::pages::csrf::{CsrfForm, NoFields};
use crate::http::pages::handlers::{flash_and_go, page, PageResult};
use crate::http::pages::views::admin::{InvitationRow, InvitationsPage, INVITE_FIELDS};
use crate::http::pages::views::{FormState, Moment};
use crate::http::pages::PageError;
use crate::http::AppState;
use crate::services::invitations::InviteInput;
use crate::services::{ClientContext, ServiceError};

const HERE: &str = "/admin/invitations";

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct InviteForm {
    email: String,
    name: String,
    role: String,
}

async fn invitations_page(
    state: &AppState,
    admin: &mut AdminPage,
    form: FormState,
    role: String,
    status: StatusCode,
) -> PageResult {
    let rows = state
        .invitations
        .list()
        .await?
        .into_iter()
        .map(|open| {
            let i = open.invitation;
            InvitationRow {
                id: i.id,
                email: i.email.as_str().to_owned(),
                name: i.name.as_str().to_owned(),
                role: i.role.to_string(),
                sent: Moment::of(i.last_sent_at),
                expires: Moment::of(i.expires_at),
                expired: open.expired,
                resends: i.resend_count,
            }
        })
        .collect();
    let roles = &state.portal.roles;
    let view = InvitationsPage {
        layout: admin.layout(state).await?,
        nav: "invitations",
        form,
        roles: roles.all().iter().map(ToString::to_string).collect(),
        // A new invitation is for the role most people get.
        role: if role.is_empty() {
            roles.default_role().to_string()
        } else {
            role
        },
        rows,
    };
    page(status, &view)
}

pub async fn show(State(state): State<AppState>, mut admin: AdminPage) -> PageResult {
    let form = FormState::labelled(INVITE_FIELDS);
    invitations_page(&state, &mut admin, form, String::new(), StatusCode::OK).await
}

pub async fn invite(
    State(state): State<AppState>,
    mut admin: AdminPage,
    client: ClientContext,
    CsrfForm(f): CsrfForm<InviteForm>,
) -> PageResult {
    if let Some(to) = admin.0.needs_reauth(&state, HERE) {
        return Ok(to);
    }
    let input = InviteInput {
        email: f.email.clone(),
        name: f.name.clone(),
        role: f.role.clone(),
    };
    let mut form = FormState::labelled(INVITE_FIELDS)
        .with_value("email", &f.email)
        .with_value("name", &f.name);
    let status = match state
        .invitations
        .invite(&input, &admin.0.user, &client)
        .await
    {
        Ok(sent) => {
            let message = format!("Invitation sent to {}.", sent.email.as_str());
            return flash_and_go(&mut admin.0.portal, &message, HERE).await;
        }
        Err(ServiceError::Validation(errors)) => {
            form.field_errors(errors);
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Err(refused) => {
            let (status, message) = refusal(refused)?;
            form.error("email", message);
            status
        }
    };
    invitations_page(&state, &mut admin, form, f.role, status).await
}

/// Sends an open invitation again (`resend`) or revokes it (`revoke`),
/// then back to the list with what it came to: the invitation may have
/// been accepted or revoked by another admin meanwhile.
pub async fn act(
    State(state): State<AppState>,
    mut admin: AdminPage,
    client: ClientContext,
    Path((id, action)): Path<(String, String)>,
    _: CsrfForm<NoFields>,
) -> PageResult {
    if let Some(to) = admin.0.needs_reauth(&state, HERE) {
        return Ok(to);
    }
    let by = &admin.0.user;
    let (done, message) = match action.as_str() {
        "resend" => (
            state.invitations.resend(&id, by, &client).await.map(drop),
            "The invitation was sent again with a new link.",
        ),
        "revoke" => (
            state.invitations.revoke(&id, by, &client).await,
            "The invitation is revoked: its link no longer works.",
        ),
        _ => return Err(PageError::NotFound),
    };
    let message = match done {
        Ok(()) => message.to_owned(),
        Err(ServiceError::NotFound) => {
            "That invitation is no longer open: it was accepted or revoked.".to_owned()
        }
        Err(refused) => refusal(refused)?.1,
    };
    flash_and_go(&mut admin.0.portal, &message, HERE).await
}
