//! /admin/users/{id}/{action}: each action on an account, behind a
//! confirmation page. GET asks "are you sure?" (and for a reason for the
//! audit trail); POST does it through the same service as the API's route
//! and goes back to the account's page. Both need a recent sign-in.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{refusal, AdminPage};
use crate::domain::{User, UserId};
use crate::http::pages::csrf::CsrfForm;
use crate::http::pages::handlers::{flash_and_go, page, PageResult};
use crate::http::pages::views::admin::{ConfirmPage, REASON_FIELDS};
use crate::http::pages::views::FormState;
use crate::http::pages::PageError;
use crate::http::AppState;
use crate::services::{ClientContext, ServiceError};

/// What an administrator can do to one account from its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Role,
    Disable,
    Enable,
    Unlock,
    EndSessions,
    PasswordReset,
    TwoStepReset,
    GrantEmergency,
    WithdrawEmergency,
    Erase,
}

impl Action {
    const ALL: [Action; 10] = [
        Action::Role,
        Action::Disable,
        Action::Enable,
        Action::Unlock,
        Action::EndSessions,
        Action::PasswordReset,
        Action::TwoStepReset,
        Action::GrantEmergency,
        Action::WithdrawEmergency,
        Action::Erase,
    ];

    fn parse(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.slug() == slug)
    }

    /// The last segment of its address.
    pub fn slug(self) -> &'static str {
        match self {
            Action::Role => "role",
            Action::Disable => "disable",
            Action::Enable => "enable",
            Action::Unlock => "unlock",
            Action::EndSessions => "end-sessions",
            Action::PasswordReset => "password-reset",
            Action::TwoStepReset => "two-step-reset",
            Action::GrantEmergency => "grant-emergency-access",
            Action::WithdrawEmergency => "withdraw-emergency-access",
            Action::Erase => "erase",
        }
    }

    /// The link on the account's page.
    pub fn label(self) -> &'static str {
        match self {
            Action::Role => "Change role",
            Action::Disable => "Disable account",
            Action::Enable => "Enable account",
            Action::Unlock => "Unlock sign-in",
            Action::EndSessions => "Sign out everywhere",
            Action::PasswordReset => "Send a password-reset email",
            Action::TwoStepReset => "Reset two-step sign-in",
            Action::GrantEmergency => "Allow emergency access",
            Action::WithdrawEmergency => "Withdraw emergency access",
            Action::Erase => "Erase personal data",
        }
    }

    /// Shown in red: it locks someone out or cannot be undone.
    pub fn dangerous(self) -> bool {
        matches!(
            self,
            Action::Disable | Action::EndSessions | Action::TwoStepReset | Action::Erase
        )
    }

    fn explanation(self) -> &'static str {
        match self {
            Action::Role => "The new role applies at once: their apps must sign in again, because their access tokens carry the old role.",
            Action::Disable => "They will not be able to sign in, refresh, reset their password or use any emailed link, and every session they have ends now. You can enable the account again later.",
            Action::Enable => "They can sign in again with their current password.",
            Action::Unlock => "Sign-in was paused after too many wrong passwords. Unlocking lets them try again now.",
            Action::EndSessions => "Every browser and app signed in as them is signed out now. Their password stays the same.",
            Action::PasswordReset => "They get an email with a link to choose a new password. You never see or set it. An earlier link stops working.",
            Action::TwoStepReset => "Their authenticator app, recovery codes and passkeys are removed and they are signed out everywhere; they must set up a second factor again. They and every administrator are emailed.",
            Action::GrantEmergency => "They may then start emergency access themselves, with a reason. Every use is announced to all administrators and reviewed.",
            Action::WithdrawEmergency => "They can no longer start emergency access.",
            Action::Erase => "Their name and email address are replaced for good; the account stays disabled and keeps its id, so the audit trail still points at it. This cannot be undone.",
        }
    }

    fn button(self) -> &'static str {
        match self {
            Action::Role => "Change role",
            Action::Disable => "Disable account",
            Action::Enable => "Enable account",
            Action::Unlock => "Unlock sign-in",
            Action::EndSessions => "Sign them out everywhere",
            Action::PasswordReset => "Send the email",
            Action::TwoStepReset => "Reset two-step sign-in",
            Action::GrantEmergency => "Allow emergency access",
            Action::WithdrawEmergency => "Withdraw emergency access",
            Action::Erase => "Erase personal data",
        }
    }

    /// The notice on the account's page afterwards.
    fn done(self) -> &'static str {
        match self {
            Action::Role => "The role has been changed.",
            Action::Disable => "The account is disabled and signed out everywhere.",
            Action::Enable => "The account is enabled.",
            Action::Unlock => "Sign-in is unlocked.",
            Action::EndSessions => "The account has been signed out everywhere.",
            Action::PasswordReset => "A password-reset email is on its way.",
            Action::TwoStepReset => "Two-step sign-in has been reset.",
            Action::GrantEmergency => "Emergency access is allowed.",
            Action::WithdrawEmergency => "Emergency access is withdrawn.",
            Action::Erase => "The personal data has been erased.",
        }
    }

    /// The emergency permission has no reason in the audit trail (the
    /// API's PATCH records none either).
    fn takes_reason(self) -> bool {
        !matches!(self, Action::GrantEmergency | Action::WithdrawEmergency)
    }

    /// What makes sense for `user` as it is now.
    pub fn offered(user: &User, locked: bool) -> Vec<Action> {
        let disabled = user.is_disabled();
        Self::ALL
            .into_iter()
            .filter(|action| match action {
                Action::Enable | Action::Erase => disabled,
                Action::Unlock => locked && !disabled,
                Action::GrantEmergency => {
                    !disabled && !user.role.is_admin() && !user.emergency_access
                }
                Action::WithdrawEmergency => {
                    !disabled && !user.role.is_admin() && user.emergency_access
                }
                _ => !disabled,
            })
            .collect()
    }

    /// The field a refusal is explained next to.
    fn field(self) -> &'static str {
        if self == Action::Role {
            "role"
        } else {
            "reason"
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ActionForm {
    reason: String,
    role: String,
}

/// The action named in the address, and the account it is for.
async fn target(state: &AppState, id: &str, slug: &str) -> Result<(Action, User), PageError> {
    let action = Action::parse(slug).ok_or(PageError::NotFound)?;
    let user = state
        .sessions
        .user_by_id(&UserId::new(id))
        .await?
        .ok_or(PageError::NotFound)?;
    Ok((action, user))
}

async fn confirm_page(
    state: &AppState,
    admin: &mut AdminPage,
    action: Action,
    user: &User,
    form: FormState,
    status: StatusCode,
) -> PageResult {
    let view = ConfirmPage {
        layout: admin.layout(state).await?,
        nav: "users",
        form,
        user_id: user.id.as_str().to_owned(),
        user_name: user.name.as_str().to_owned(),
        user_email: user.email.as_str().to_owned(),
        action: action.slug(),
        heading: format!("{}: {}", action.label(), user.name.as_str()),
        explanation: action.explanation(),
        button: action.button(),
        danger: action.dangerous(),
        takes_reason: action.takes_reason(),
        roles: if action == Action::Role {
            state
                .portal
                .roles
                .all()
                .iter()
                .map(ToString::to_string)
                .collect()
        } else {
            Vec::new()
        },
        current_role: user.role.to_string(),
    };
    page(status, &view)
}

/// "Are you sure?", after a recent sign-in.
pub async fn confirm(
    State(state): State<AppState>,
    mut admin: AdminPage,
    Path((id, slug)): Path<(String, String)>,
) -> PageResult {
    let (action, user) = target(&state, &id, &slug).await?;
    if let Some(to) = admin
        .0
        .needs_reauth(&state, &format!("/admin/users/{id}/{slug}"))
    {
        return Ok(to);
    }
    let form = FormState::labelled(REASON_FIELDS);
    confirm_page(&state, &mut admin, action, &user, form, StatusCode::OK).await
}

/// Does it, then back to the account's page with a notice; a refusal
/// (the last administrator, a bad reason) is explained on the
/// confirmation page.
pub async fn act(
    State(state): State<AppState>,
    mut admin: AdminPage,
    client: ClientContext,
    Path((id, slug)): Path<(String, String)>,
    CsrfForm(f): CsrfForm<ActionForm>,
) -> PageResult {
    let (action, user) = target(&state, &id, &slug).await?;
    // The confirmation page is where a fresh sign-in comes back to.
    if let Some(to) = admin
        .0
        .needs_reauth(&state, &format!("/admin/users/{id}/{slug}"))
    {
        return Ok(to);
    }
    let reason = Some(f.reason.trim()).filter(|r| !r.is_empty());
    let (target, by) = (&user.id, &admin.0.user);
    let done: Result<(), ServiceError> = match action {
        Action::Role => state
            .role_change
            .change(target, Some(&f.role), reason, by, &client)
            .await
            .map(drop),
        Action::Disable => state
            .account_status
            .disable(target, reason, by, &client)
            .await
            .map(drop),
        Action::Enable => state
            .account_status
            .enable(target, reason, by, &client)
            .await
            .map(drop),
        Action::Unlock => state
            .account_support
            .unlock(target, reason, by, &client)
            .await
            .map(drop),
        Action::EndSessions => state
            .account_support
            .end_sessions(target, reason, by, &client)
            .await
            .map(drop),
        Action::PasswordReset => {
            state
                .account_support
                .send_password_reset(target, reason, by, &client)
                .await
        }
        Action::TwoStepReset => state
            .mfa_reset
            .reset(target, reason, by, &client)
            .await
            .map(drop),
        Action::GrantEmergency | Action::WithdrawEmergency => state
            .emergency_reviews
            .set_permission(target, action == Action::GrantEmergency, by, &client)
            .await
            .map(drop),
        Action::Erase => state
            .account_erasure
            .erase(target, reason, by, &client)
            .await
            .map(drop),
    };
    let mut form = FormState::labelled(REASON_FIELDS).with_value("reason", &f.reason);
    let status = match done {
        Ok(()) => {
            let back = format!("/admin/users/{}", user.id);
            return flash_and_go(&mut admin.0.portal, action.done(), &back).await;
        }
        Err(ServiceError::Validation(errors)) => {
            form.field_errors(errors);
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Err(refused) => {
            let (status, message) = refusal(refused)?;
            form.error(action.field(), message);
            status
        }
    };
    confirm_page(&state, &mut admin, action, &user, form, status).await
}
