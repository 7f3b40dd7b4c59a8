//! The page an invitation link opens (issue 19): the invitee sees the
//! address they were invited with, chooses a name and password, and is
//! signed in. Opening the page only looks the invitation up (mail scanners
//! open links); only the submitted form uses it.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::sign_in::sign_in;
use super::{explain, layout, mismatch, page, password_rules, PageQuery, PageResult};
use crate::domain::Password;
use crate::http::pages::csrf::CsrfForm;
use crate::http::pages::enrolment;
use crate::http::pages::session::Portal;
use crate::http::pages::views::{FormState, Layout, PasswordRules, INVITATION_FIELDS};
use crate::http::pages::PageError;
use crate::http::AppState;
use crate::services::{ClientContext, ServiceError, SignIn};
use crate::storage::Invitation;

#[derive(Template)]
#[template(path = "pages/invitation.html")]
struct InvitationPage {
    layout: Layout,
    form: FormState,
    token: String,
    email: String,
    role: String,
    rules: PasswordRules,
}

#[derive(Template)]
#[template(path = "pages/invitation_invalid.html")]
struct InvitationInvalidPage {
    layout: Layout,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct InvitationForm {
    token: String,
    name: String,
    password: String,
    password_confirm: String,
}

fn invalid(state: &AppState, portal: &Portal) -> PageResult {
    let view = InvitationInvalidPage {
        layout: layout(state, portal, None, None),
    };
    page(StatusCode::BAD_REQUEST, &view)
}

/// The invitation behind `token`; `None` when the link no longer works.
async fn open(state: &AppState, token: &str) -> Result<Option<Invitation>, PageError> {
    match state.invitation_acceptance.check(token).await {
        Ok(invitation) => Ok(Some(invitation)),
        Err(ServiceError::InvalidInvitation) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn form_page(
    state: &AppState,
    portal: &Portal,
    status: StatusCode,
    form: FormState,
    token: String,
    invitation: &Invitation,
) -> PageResult {
    let view = InvitationPage {
        layout: layout(state, portal, None, None),
        form,
        token,
        email: invitation.email.as_str().to_owned(),
        role: invitation.role.as_str().to_owned(),
        rules: password_rules(state),
    };
    page(status, &view)
}

pub async fn invitation_page(
    State(state): State<AppState>,
    portal: Portal,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let Some(invitation) = open(&state, &q.token).await? else {
        return invalid(&state, &portal);
    };
    let form = FormState::labelled(INVITATION_FIELDS).with_value("name", invitation.name.as_str());
    form_page(&state, &portal, StatusCode::OK, form, q.token, &invitation)
}

pub async fn invitation_submit(
    State(state): State<AppState>,
    mut portal: Portal,
    client: ClientContext,
    jar: CookieJar,
    CsrfForm(f): CsrfForm<InvitationForm>,
) -> PageResult {
    let Some(invitation) = open(&state, &f.token).await? else {
        return invalid(&state, &portal);
    };
    let result = if f.password != f.password_confirm {
        Err(mismatch("password_confirm", "The passwords do not match."))
    } else {
        state
            .invitation_acceptance
            .accept(&f.token, &f.name, &Password::new(f.password), &client)
            .await
    };
    let err = match result {
        Ok(SignIn::Complete(outcome)) => {
            let jar = sign_in(&state, &mut portal, &client, jar, &outcome).await?;
            return Ok((jar, Redirect::to("/account")).into_response());
        }
        // MFA_REQUIRED_ROLES covers the invited role: enrol first.
        Ok(SignIn::EnrolmentRequired(grant)) => {
            enrolment::begin(&state, &mut portal, &client, &grant.user).await?;
            return Ok(Redirect::to(enrolment::ENROLMENT_PAGE).into_response());
        }
        // A new account has no second factor; should one appear, the
        // ordinary sign-in asks for it.
        Ok(SignIn::SecondStepRequired(_)) => {
            return Ok(Redirect::to("/login").into_response());
        }
        Err(ServiceError::InvalidInvitation) => return invalid(&state, &portal),
        Err(e) => e,
    };
    let mut form = FormState::labelled(INVITATION_FIELDS).with_value("name", &f.name);
    let status = explain(&mut form, "password", err)?;
    form_page(&state, &portal, status, form, f.token, &invitation)
}
