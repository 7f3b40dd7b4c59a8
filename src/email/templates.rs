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
