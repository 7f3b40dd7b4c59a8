//! Email bodies rendered from `templates/email/` (plain text + HTML).

use askama::Template;
use lettre::message::Mailbox;
use secrecy::SecretString;

use super::OutgoingEmail;

#[derive(Template)]
#[template(path = "email/password_reset.txt")]
struct ResetText<'a> {
    email: &'a ResetEmail<'a>,
}

#[derive(Template)]
#[template(path = "email/password_reset.html")]
struct ResetHtml<'a> {
    email: &'a ResetEmail<'a>,
}

/// What a password-reset email says.
pub struct ResetEmail<'a> {
    pub app_name: &'a str,
    pub app_url: &'a str,
    pub name: &'a str,
    pub link: &'a str,
    pub expires_minutes: u64,
}

pub fn password_reset(to: Mailbox, email: &ResetEmail<'_>) -> anyhow::Result<OutgoingEmail> {
    Ok(OutgoingEmail {
        to,
        subject: format!("Reset your {} password", email.app_name),
        text: ResetText { email }.render()?,
        html: ResetHtml { email }.render()?,
        action_url: Some(SecretString::from(email.link.to_owned())),
    })
}

#[derive(Template)]
#[template(path = "email/password_changed.txt")]
struct ChangedText<'a> {
    email: &'a ChangedEmail<'a>,
}

#[derive(Template)]
#[template(path = "email/password_changed.html")]
struct ChangedHtml<'a> {
    email: &'a ChangedEmail<'a>,
}

/// What a "your password was changed" notice says (ASVS 6.3.7).
pub struct ChangedEmail<'a> {
    pub app_name: &'a str,
    pub app_url: &'a str,
    pub name: &'a str,
    /// When, for people: "24 Nov 2026, 09:15 UTC".
    pub when: &'a str,
}

pub fn password_changed(to: Mailbox, email: &ChangedEmail<'_>) -> anyhow::Result<OutgoingEmail> {
    Ok(OutgoingEmail {
        to,
        subject: format!("Your {} password was changed", email.app_name),
        text: ChangedText { email }.render()?,
        html: ChangedHtml { email }.render()?,
        action_url: None,
    })
}
