//! The account's "Two-step sign-in" page (issue 18): status, setting up
//! and removing the authenticator app, recovery codes (how many are left,
//! a new set, the download), and the place of the passkeys section. Every
//! change needs a recent proof of identity (REAUTH_WINDOW): without one
//! the user is sent to the re-authentication page and back.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{explain, layout, page, PageResult};
use crate::domain::mfa::{RecoveryCode, RECOVERY_CODE_COUNT};
use crate::domain::Password;
use crate::error::ApiError;
use crate::http::pages::csrf::{CsrfForm, NoFields};
use crate::http::pages::views::{
    FormState, RecoveryCodesPage, SetupView, TotpSetupPage, TwoStepPage,
};
use crate::http::pages::{no_store, PageError, SignedIn};
use crate::http::AppState;
use crate::services::mfa::MfaError;
use crate::services::{ClientContext, ServiceError};

/// Where this page lives, and where step-up comes back to.
const PAGE: &str = "/account/two-step";

/// The download's file name (the header's quoted-string).
const DOWNLOAD_NAME: &str = "clinic-auth-recovery-codes.txt";

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CodeForm {
    code: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RemoveForm {
    password: String,
    code: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DownloadForm {
    codes: String,
}

fn signed_in_layout(
    state: &AppState,
    signed_in: &SignedIn,
    notice: Option<String>,
) -> crate::http::pages::views::Layout {
    layout(
        state,
        &signed_in.portal,
        Some(signed_in.user.name.as_str().to_owned()),
        notice,
    )
}

async fn two_step_view(
    state: &AppState,
    signed_in: &SignedIn,
    form: FormState,
    notice: Option<String>,
) -> Result<TwoStepPage, PageError> {
    let status = state.mfa.status(&signed_in.user).await?;
    Ok(TwoStepPage {
        layout: signed_in_layout(state, signed_in, notice),
        form,
        totp_enabled: status.totp_enabled,
        recovery_codes_left: status.recovery_codes_left,
        passkeys: super::passkeys::section(state, &signed_in.user).await?,
    })
}

pub async fn two_step_page(State(state): State<AppState>, mut signed_in: SignedIn) -> PageResult {
    let notice = signed_in.portal.data.flash.take();
    if notice.is_some() {
        signed_in.portal.save().await?;
    }
    let view = two_step_view(&state, &signed_in, FormState::default(), notice).await?;
    page(StatusCode::OK, &view)
}

/// Leaves a one-time notice for the two-step page and goes back to it.
pub(super) async fn back_with(signed_in: &mut SignedIn, message: &str) -> PageResult {
    signed_in.portal.data.flash = Some(message.to_owned());
    signed_in.portal.save().await?;
    Ok(Redirect::to(PAGE).into_response())
}

/// A step-up refusal from the service (the window ran out between the
/// check and the call) is the same redirect as the check's.
fn reauth_or(signed_in: &SignedIn, state: &AppState, err: ServiceError) -> PageResult {
    match err {
        ServiceError::ReauthenticationRequired => Ok(signed_in
            .needs_reauth(state, PAGE)
            .unwrap_or_else(|| Redirect::to(PAGE).into_response())),
        other => Err(other.into()),
    }
}

/// The key in groups of four: easier to read out and to type.
fn grouped(key: &str) -> String {
    key.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `<svg>` element of an SVG document, to sit inside the page.
fn inline_svg(document: &str) -> String {
    document
        .find("<svg")
        .map_or_else(String::new, |at| document[at..].to_owned())
}

pub async fn setup(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    _: CsrfForm<NoFields>,
) -> PageResult {
    if let Some(to) = signed_in.needs_reauth(&state, PAGE) {
        return Ok(to);
    }
    match state.mfa.setup_totp(&signed_in.authenticated()).await {
        Ok(setup) => {
            let view = TotpSetupPage {
                layout: signed_in_layout(&state, &signed_in, None),
                form: FormState::default(),
                setup: Some(SetupView {
                    qr_svg: inline_svg(&setup.qr_svg),
                    manual_key: grouped(setup.manual_entry_key.expose_secret()),
                    otpauth_uri: setup.otpauth_uri.expose_secret().to_owned(),
                }),
            };
            page(StatusCode::OK, &view)
        }
        Err(ServiceError::Mfa(MfaError::AlreadyEnabled)) => {
            back_with(&mut signed_in, "Your authenticator app is already set up.").await
        }
        Err(e) => reauth_or(&signed_in, &state, e),
    }
}

pub async fn confirm(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    CsrfForm(f): CsrfForm<CodeForm>,
) -> PageResult {
    if let Some(to) = signed_in.needs_reauth(&state, PAGE) {
        return Ok(to);
    }
    match state
        .mfa
        .confirm_totp(&signed_in.authenticated(), &f.code, &client)
        .await
    {
        Ok(codes) => codes_page(&state, &signed_in, &codes, true),
        Err(ServiceError::Mfa(MfaError::WrongCode)) => {
            let mut form = FormState::default();
            form.error(
                "code",
                "That code is wrong. Check that your phone's clock is right, then type the code your app shows now.",
            );
            let view = TotpSetupPage {
                layout: signed_in_layout(&state, &signed_in, None),
                form,
                setup: None,
            };
            page(
                ApiError::from(ServiceError::Mfa(MfaError::WrongCode)).status,
                &view,
            )
        }
        Err(ServiceError::Mfa(MfaError::NothingToConfirm)) => {
            back_with(
                &mut signed_in,
                "That set-up had ended or was replaced (in another tab?). Start it again.",
            )
            .await
        }
        Err(ServiceError::Mfa(MfaError::AlreadyEnabled)) => {
            back_with(&mut signed_in, "Your authenticator app is already set up.").await
        }
        Err(e) => reauth_or(&signed_in, &state, e),
    }
}

pub async fn regenerate(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    _: CsrfForm<NoFields>,
) -> PageResult {
    if let Some(to) = signed_in.needs_reauth(&state, PAGE) {
        return Ok(to);
    }
    match state
        .mfa
        .regenerate_recovery_codes(&signed_in.authenticated(), &client)
        .await
    {
        Ok(codes) => codes_page(&state, &signed_in, &codes, false),
        Err(ServiceError::Mfa(MfaError::NotEnabled)) => {
            back_with(
                &mut signed_in,
                "Recovery codes come with the authenticator app: set it up first.",
            )
            .await
        }
        Err(e) => reauth_or(&signed_in, &state, e),
    }
}

pub async fn remove(
    State(state): State<AppState>,
    mut signed_in: SignedIn,
    client: ClientContext,
    CsrfForm(f): CsrfForm<RemoveForm>,
) -> PageResult {
    if let Some(to) = signed_in.needs_reauth(&state, PAGE) {
        return Ok(to);
    }
    let mut form = FormState::default();
    let status = match state
        .mfa
        .remove_totp(
            &signed_in.authenticated(),
            &Password::new(f.password),
            &f.code,
            &client,
        )
        .await
    {
        Ok(()) => {
            return back_with(
                &mut signed_in,
                "Two-step sign-in is off. Your password alone now signs you in.",
            )
            .await
        }
        Err(ServiceError::Mfa(MfaError::NotEnabled)) => {
            return back_with(&mut signed_in, "Two-step sign-in was already off.").await
        }
        Err(ServiceError::Mfa(MfaError::WrongCode)) => {
            form.error(
                "remove_code",
                "That code is wrong or was already used. Type the code your app shows now, or an unused recovery code.",
            );
            ApiError::from(ServiceError::Mfa(MfaError::WrongCode)).status
        }
        Err(ServiceError::ReauthenticationRequired) => {
            return reauth_or(&signed_in, &state, ServiceError::ReauthenticationRequired)
        }
        Err(e) => explain(&mut form, "remove_password", e)?,
    };
    let view = two_step_view(&state, &signed_in, form, None).await?;
    page(status, &view)
}

/// The codes, once: the page is `no-store`, and nothing keeps them but
/// the download form on it.
fn codes_page(
    state: &AppState,
    signed_in: &SignedIn,
    codes: &[RecoveryCode],
    just_enabled: bool,
) -> PageResult {
    let codes: Vec<String> = codes
        .iter()
        .map(|c| c.formatted().expose_secret().to_owned())
        .collect();
    let view = RecoveryCodesPage {
        layout: signed_in_layout(state, signed_in, None),
        codes_field: codes.join(" "),
        codes,
        just_enabled,
    };
    page(StatusCode::OK, &view)
}

/// "Download as text file": the codes come back from the page's hidden
/// field and leave as an attachment, so it works without JavaScript and
/// the server keeps nothing. Only well-formed recovery codes are echoed,
/// so the answer can never carry anything else.
pub async fn download(
    State(state): State<AppState>,
    _signed_in: SignedIn,
    CsrfForm(f): CsrfForm<DownloadForm>,
) -> Result<Response, PageError> {
    let codes: Option<Vec<RecoveryCode>> = f
        .codes
        .split_whitespace()
        .map(RecoveryCode::parse)
        .collect();
    let codes = codes
        .filter(|c| !c.is_empty() && c.len() <= RECOVERY_CODE_COUNT)
        .ok_or(PageError::BadRequest)?;
    let mut body = format!(
        "{} recovery codes\r\n\r\nEach code works once, in place of a code from your authenticator app.\r\nKeep them somewhere safe, away from your phone.\r\n\r\n",
        state.portal.app_name
    );
    for code in &codes {
        body.push_str(code.formatted().expose_secret());
        body.push_str("\r\n");
    }
    let response = (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{DOWNLOAD_NAME}\""),
            ),
        ],
        body,
    )
        .into_response();
    Ok(no_store(response))
}
