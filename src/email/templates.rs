//! Email bodies rendered from `templates/email/` (plain text + HTML, the
//! HTML sharing `email/base.html` so every message looks like the portal).

use askama::Template;
use lettre::message::Mailbox;
use secrecy::SecretString;

use super::OutgoingEmail;

/// Who the message is from and for: the parts every email shows.
pub struct Brand<'a> {
    pub app_name: &'a str,
    pub app_url: &'a str,
    /// The recipient's name, for the greeting.
    pub name: &'a str,
}

/// What a password-reset email says.
pub struct ResetEmail<'a> {
    pub link: &'a str,
    pub expires_minutes: u64,
}

/// What a "your password was changed" notice says (ASVS 6.3.7).
pub struct ChangedEmail<'a> {
    /// When, for people: "24 Nov 2026, 09:15 UTC".
    pub when: &'a str,
}

#[derive(Template)]
#[template(path = "email/password_reset.txt")]
struct ResetText<'a> {
    brand: &'a Brand<'a>,
    email: &'a ResetEmail<'a>,
}

#[derive(Template)]
#[template(path = "email/password_reset.html")]
struct ResetHtml<'a> {
    brand: &'a Brand<'a>,
    email: &'a ResetEmail<'a>,
}

#[derive(Template)]
#[template(path = "email/password_changed.txt")]
struct ChangedText<'a> {
    brand: &'a Brand<'a>,
    email: &'a ChangedEmail<'a>,
}

#[derive(Template)]
#[template(path = "email/password_changed.html")]
struct ChangedHtml<'a> {
    brand: &'a Brand<'a>,
    email: &'a ChangedEmail<'a>,
}

/// Renders both parts into one message.
fn compose(
    to: Mailbox,
    subject: String,
    text: &impl Template,
    html: &impl Template,
    action_url: Option<&str>,
) -> anyhow::Result<OutgoingEmail> {
    Ok(OutgoingEmail {
        to,
        subject,
        text: text.render()?,
        html: html.render()?,
        action_url: action_url.map(|url| SecretString::from(url.to_owned())),
    })
}

pub fn password_reset(
    to: Mailbox,
    brand: &Brand<'_>,
    email: &ResetEmail<'_>,
) -> anyhow::Result<OutgoingEmail> {
    compose(
        to,
        format!("Reset your {} password", brand.app_name),
        &ResetText { brand, email },
        &ResetHtml { brand, email },
        Some(email.link),
    )
}

pub fn password_changed(
    to: Mailbox,
    brand: &Brand<'_>,
    email: &ChangedEmail<'_>,
) -> anyhow::Result<OutgoingEmail> {
    compose(
        to,
        format!("Your {} password was changed", brand.app_name),
        &ChangedText { brand, email },
        &ChangedHtml { brand, email },
        None,
    )
}
