//! The account page: who you are, changing the password, and where you are
//! signed in (ending one session or all of them).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::{explain, flash_and_return, layout, mismatch, page, password_rules, PageResult};
use crate::domain::Password;
use crate::http::api::cookies::cleared_cookie;
use crate::http::pages::csrf::{CsrfForm, NoFields};
use crate::http::pages::session::Portal;
use crate::http::pages::views::{
    clock_time, session_device, AccountPage, EmergencyView, FormState, SessionRow, UserView,
    CHANGE_PASSWORD_FIELDS,
};
use crate::http::pages::{PageError, SignedIn};
use crate::http::AppState;
use crate::services::{ClientContext, CurrentSession};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ChangePasswordForm {
    current_password: String,
    new_password: String,
    password_confirm: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SessionForm {
    session: String,
}

fn current(portal: &Portal) -> CurrentSession {
    CurrentSession {
        web: portal.id_hash(),
        family: portal.data.refresh_family.clone(),
    }
}

pub(super) async fn account_view(
    state: &AppState,
    signed_in: &SignedIn,
    form: FormState,
    notice: Option<String>,
) -> Result<AccountPage, PageError> {
    let user = &signed_in.user;
    let sessions = state
        .account
        .list_sessions(&user.id, &current(&signed_in.portal))
        .await?;
    let when = crate::http::pages::views::date_time;
    Ok(AccountPage {
        layout: layout(
            state,
            &signed_in.portal,
            Some(user.name.as_str().to_owned()),
            notice,
        ),
        form,
        user: UserView {
            name: user.name.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
            role: user.role.to_string(),
            verified: user.verified,
        },
        sessions: sessions
            .into_iter()
            .map(|s| SessionRow {
                device: session_device(s.kind, s.user_agent.as_deref()),
                ip: s.ip_address.unwrap_or_else(|| "unknown".to_owned()),
                created: when(s.created_at),
                created_iso: s.created_at.to_rfc3339(),
                last_used: when(s.last_used_at),
                last_used_iso: s.last_used_at.to_rfc3339(),
                current: s.current,
                id: s.id,
            })
            .collect(),
        rules: password_rules(state),
        two_step_on: state.mfa.status(user).await?.totp_enabled,
        emergency: EmergencyView {
            allowed: user.may_break_glass(),
            until: signed_in
                .portal
                .emergency
                .as_ref()
                .map(|window| clock_time(window.expires_at)),
            reason: signed_in
                .portal
                .emergency
                .as_ref()
                .map(|window| window.reason.as_str().to_owned())
                .unwrap_or_default(),
            minutes: state.portal.emergency_minutes,
            form: FormState::default(),
        },
    })
}

pub async fn account_page(State(state): State<AppState>, mut signed_in: SignedIn) -> PageResult {
    let notice = signed_in.portal.data.flash.take();
    if notice.is_some() {
        signed_in.portal.save().await?;
    }
    let view = account_view(
        &state,
        &signed_in,
        FormState::labelled(CHANGE_PASSWORD_FIELDS),
        notice,
    )
    .await?;
    page(StatusCode::OK, &view)
}

pub async fn change_password(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    CsrfForm(f): CsrfForm<ChangePasswordForm>,
) -> PageResult {
    // Step-up: an unattended signed-in computer must not be enough to
    // take the account over.
    if let Some(to) = signed_in.needs_reauth(&state, "/account") {
        return Ok(to);
    }
    let result = if f.new_password != f.password_confirm {
        Err(mismatch(
            "password_confirm",
            "The new passwords do not match.",
        ))
    } else {
        state
            .account
            .change_password(
                &signed_in.user,
                &Password::new(f.current_password),
                &Password::new(f.new_password),
                &current(&signed_in.portal),
                &client,
            )
            .await
    };
    let mut form_state = FormState::labelled(CHANGE_PASSWORD_FIELDS);
    let status = match result {
        Ok(token_version) => {
            // This session stays signed in across the cut-off that ended
            // every other one.
            signed_in.portal.data.token_version = token_version;
            return flash_and_return(
                &mut signed_in.portal,
                "Your password has been changed. You were signed out everywhere else.",
            )
            .await;
        }
        Err(e) => explain(&mut form_state, "current_password", e)?,
    };
    let view = account_view(&state, &signed_in, form_state, None).await?;
    page(status, &view)
}

pub async fn end_session(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    CsrfForm(f): CsrfForm<SessionForm>,
) -> PageResult {
    let message = if state
        .account
        .end_session(&signed_in.user.id, &f.session, &client)
        .await?
    {
        "That session has been signed out."
    } else {
        "That session had already ended."
    };
    flash_and_return(&mut signed_in.portal, message).await
}

pub async fn end_all_sessions(
    State(state): State<AppState>,
    signed_in: SignedIn,
    client: ClientContext,
    jar: CookieJar,
    _: CsrfForm<NoFields>,
) -> PageResult {
    state
        .account
        .end_other_sessions(&signed_in.user.id, &CurrentSession::default(), &client)
        .await?;
    signed_in.portal.session.flush().await?;
    let jar = jar.add(cleared_cookie(&state.cookies));
    Ok((jar, Redirect::to("/login?signed_out=1")).into_response())
}
