//! Askama views for the portal, and the form state they show.

use std::borrow::Cow;

use askama::Template;

use crate::domain::FieldError;

/// What every page's layout needs.
pub struct Layout {
    pub app_name: String,
    pub csrf: String,
    pub signed_in_as: Option<String>,
    pub notice: Option<String>,
    /// "14:05 UTC" while the user's emergency access is on: the red
    /// banner on every page.
    pub emergency_until: Option<String>,
}

/// The admin console's views (issue 19).
pub mod admin;

/// When something happened, for people: "24 Nov 2026, 09:15 UTC".
pub fn date_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%d %b %Y, %H:%M UTC").to_string()
}

/// A time for a `<time>` element: what people read, and the machine form.
pub struct Moment {
    pub text: String,
    pub iso: String,
}

impl Moment {
    pub fn of(t: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            text: date_time(t),
            iso: t.to_rfc3339(),
        }
    }
}

/// When something ends, for the banner and the account page.
pub fn clock_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%H:%M UTC").to_string()
}

/// What a form shows back: the values typed (never passwords) and every
/// error, in field order for the summary.
#[derive(Default)]
pub struct FormState {
    values: Vec<(&'static str, String)>,
    pub errors: Vec<FormError>,
    /// The form's fields and the labels the person sees: the template shows
    /// them, and errors are worded with them.
    labels: Labels,
    /// Fields marked invalid by another field's message (field, owner).
    shared: Vec<(&'static str, &'static str)>,
}

/// A form's fields and their visible labels, in one place for the template
/// and the error messages.
pub type Labels = &'static [(&'static str, &'static str)];

pub const LOGIN_FIELDS: Labels = &[("email", "Email address"), ("password", "Password")];
pub const REGISTER_FIELDS: Labels = &[
    ("name", "Full name"),
    ("email", "Email address"),
    ("password", "Password"),
    ("password_confirm", "Confirm password"),
];
pub const FORGOT_FIELDS: Labels = &[("email", "Email address")];
pub const RESET_FIELDS: Labels = &[
    ("password", "New password"),
    ("password_confirm", "Confirm new password"),
];
pub const CHANGE_PASSWORD_FIELDS: Labels = &[
    ("current_password", "Current password"),
    ("new_password", "New password"),
    ("password_confirm", "Confirm new password"),
];
pub const REAUTH_FIELDS: Labels = &[("password", "Password")];
pub const INVITATION_FIELDS: Labels = &[
    ("name", "Full name"),
    ("password", "Password"),
    ("password_confirm", "Confirm password"),
];

pub struct FormError {
    pub field: String,
    pub message: String,
}

impl FormState {
    /// An empty form whose fields are labelled `labels`.
    pub fn labelled(labels: Labels) -> Self {
        Self {
            labels,
            ..Self::default()
        }
    }

    /// The visible label of `field` (the field's name if it has none).
    pub fn label<'a>(&self, field: &'a str) -> &'a str {
        self.labels
            .iter()
            .find(|(f, _)| *f == field)
            .map_or(field, |(_, label)| label)
    }

    /// The services word messages with the API's field names ("Name is
    /// required.", "Password must be at least 12 characters."); a page
    /// says them with the label next to the field ("Full name is
    /// required.", "New password must be ..."), so the two match.
    fn relabel(&self, field: &str, message: String) -> String {
        let label = self.label(field);
        for noun in ["Name", "Email", "Password"] {
            let names_this_field = label.to_lowercase().contains(&noun.to_lowercase());
            match message.strip_prefix(noun) {
                Some(rest) if rest.starts_with(' ') && names_this_field => {
                    return format!("{label}{rest}");
                }
                _ => {}
            }
        }
        message
    }

    /// Marks `field` invalid with `owner`'s message (shown once, next to
    /// `owner`): a wrong email or password could be either.
    pub fn also_invalid(&mut self, field: &'static str, owner: &'static str) {
        self.shared.push((field, owner));
    }

    /// Whether the form was sent back with errors (the page title says so).
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The id of the message that explains why `field` is invalid.
    pub fn error_id(&self, field: &str) -> String {
        let owner = self
            .shared
            .iter()
            .find(|(f, _)| *f == field && !self.errors.iter().any(|e| e.field == field))
            .map_or(field, |(_, owner)| owner);
        format!("{owner}-error")
    }

    pub fn with_value(mut self, field: &'static str, value: &str) -> Self {
        self.values.push((field, value.to_owned()));
        self
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        let message = self.relabel(field, message.into());
        self.errors.push(FormError {
            field: field.to_owned(),
            message,
        });
    }

    pub fn field_errors(&mut self, errors: Vec<FieldError>) {
        for e in errors {
            for m in e.messages {
                self.error(&e.field, m);
            }
        }
    }

    pub fn value(&self, field: impl AsRef<str>) -> &str {
        let field = field.as_ref();
        self.values
            .iter()
            .find(|(f, _)| *f == field)
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn has(&self, field: impl AsRef<str>) -> bool {
        let field = field.as_ref();
        self.errors.iter().any(|e| e.field == field) || self.shared.iter().any(|(f, _)| *f == field)
    }

    pub fn messages(&self, field: impl AsRef<str>) -> Vec<&str> {
        let field = field.as_ref();
        self.errors
            .iter()
            .filter(|e| e.field == field)
            .map(|e| e.message.as_str())
            .collect()
    }
}

#[derive(Template)]
#[template(path = "pages/login.html")]
pub struct LoginPage {
    pub layout: Layout,
    pub form: FormState,
    pub next: String,
}

#[derive(Template)]
#[template(path = "pages/register.html")]
pub struct RegisterPage {
    pub layout: Layout,
    pub form: FormState,
    pub rules: PasswordRules,
    /// REGISTRATION is not `open`: how to get an account instead of the
    /// form.
    pub closed: Option<Cow<'static, str>>,
}

#[derive(Template)]
#[template(path = "pages/forgot.html")]
pub struct ForgotPage {
    pub layout: Layout,
    pub form: FormState,
}

#[derive(Template)]
#[template(path = "pages/forgot_sent.html")]
pub struct ForgotSentPage {
    pub layout: Layout,
    pub minutes: u64,
}

#[derive(Template)]
#[template(path = "pages/reset.html")]
pub struct ResetPage {
    pub layout: Layout,
    pub form: FormState,
    /// The account's address, for password managers (the link proves it).
    pub email: String,
    pub token: String,
    pub rules: PasswordRules,
}

#[derive(Template)]
#[template(path = "pages/reset_invalid.html")]
pub struct ResetInvalidPage {
    pub layout: Layout,
}

#[derive(Template)]
#[template(path = "pages/verify_email.html")]
pub struct VerifyEmailPage {
    pub layout: Layout,
    pub verified: bool,
    pub signed_in: bool,
}

/// What a new password must be, as the forms explain it.
pub struct PasswordRules {
    pub min_length: usize,
}

impl PasswordRules {
    pub fn hint(&self) -> String {
        format!(
            "At least {} characters. A few unrelated words make a strong password.",
            self.min_length
        )
    }
}

pub struct UserView {
    pub name: String,
    pub email: String,
    pub role: String,
    pub verified: bool,
}

pub struct SessionRow {
    pub id: String,
    pub device: String,
    pub ip: String,
    pub created: String,
    pub created_iso: String,
    pub last_used: String,
    pub last_used_iso: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "pages/account.html")]
pub struct AccountPage {
    pub layout: Layout,
    pub form: FormState,
    pub user: UserView,
    pub sessions: Vec<SessionRow>,
    pub rules: PasswordRules,
    /// Whether an authenticator is on (the two-step section's status).
    pub two_step_on: bool,
    pub emergency: EmergencyView,
}

/// The account page's emergency access section.
#[derive(Default)]
pub struct EmergencyView {
    /// The user may break the glass (otherwise no section).
    pub allowed: bool,
    /// While on: when it ends, and the reason given.
    pub until: Option<String>,
    pub reason: String,
    /// EMERGENCY_ACCESS_TTL in minutes, for the explanation.
    pub minutes: u64,
    /// The start form's typed reason and errors.
    pub form: FormState,
}

/// The code page after the password: an authenticator code, or (with
/// `recovery`) a recovery code.
#[derive(Template)]
#[template(path = "pages/login_code.html")]
pub struct SecondStepPage {
    pub layout: Layout,
    pub form: FormState,
    pub recovery: bool,
    /// Where the sign-in goes once done (for "Use a passkey", which
    /// completes it by itself).
    pub next: String,
}

/// Step-up: prove who you are again before a sensitive change.
#[derive(Template)]
#[template(path = "pages/reauth.html")]
pub struct ReauthPage {
    pub layout: Layout,
    pub form: FormState,
    /// The user has an authenticator: a code is asked for too.
    pub needs_code: bool,
    pub next: String,
}

/// The "Two-step sign-in" account page.
#[derive(Template)]
#[template(path = "pages/two_step.html")]
pub struct TwoStepPage {
    pub layout: Layout,
    pub form: FormState,
    pub totp_enabled: bool,
    pub recovery_codes_left: u32,
    /// Passkeys (issue 18): `templates/pages/_passkeys.html`.
    pub passkeys: super::handlers::passkeys::PasskeysSection,
}

/// What enrolment shows once: the QR code (inline SVG, no script, no
/// outside service) and the same secret as text.
pub struct SetupView {
    /// The SVG element only (the XML prolog stripped): trusted markup from
    /// our own QR encoder, rendered unescaped.
    pub qr_svg: String,
    /// The key in groups of four, for reading aloud or typing.
    pub manual_key: String,
    pub otpauth_uri: String,
}

/// Setting up the authenticator: scan or type, then confirm with a code.
/// Without `setup` (a wrong confirming code) only the code form is shown:
/// the secret is not shown twice.
#[derive(Template)]
#[template(path = "pages/two_step_setup.html")]
pub struct TotpSetupPage {
    pub layout: Layout,
    pub form: FormState,
    pub setup: Option<SetupView>,
}

/// New recovery codes, shown this once, with their download.
#[derive(Template)]
#[template(path = "pages/recovery_codes.html")]
pub struct RecoveryCodesPage {
    pub layout: Layout,
    pub codes: Vec<String>,
    /// The codes, space-separated, for the download form's hidden field.
    pub codes_field: String,
    /// Shown after turning the authenticator on (rather than regenerating).
    pub just_enabled: bool,
}

#[derive(Template)]
#[template(path = "pages/error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub heading: String,
    pub message: String,
    pub request_id: Option<String>,
}

/// What a session is called in a sessions table: the browser, or the app
/// signed in through the API.
pub fn session_device(kind: crate::services::SessionKind, user_agent: Option<&str>) -> String {
    match kind {
        crate::services::SessionKind::Browser => device_name(user_agent),
        crate::services::SessionKind::Api => format!("App: {}", device_name(user_agent)),
    }
}

/// A short, human name for a browser from its user agent.
pub fn device_name(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.filter(|ua| !ua.is_empty()) else {
        return "Unknown device".to_owned();
    };
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    let system = [
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Android", "Android"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    match (browser, system) {
        (Some(b), Some(s)) => format!("{b} on {s}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(s)) => s.to_owned(),
        (None, None) => ua.chars().take(40).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_short_and_human() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        assert_eq!(device_name(Some(chrome)), "Chrome on Linux");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile/15E148 Safari/604.1";
        assert_eq!(device_name(Some(iphone)), "Safari on iPhone");
        assert_eq!(device_name(None), "Unknown device");
    }
}
