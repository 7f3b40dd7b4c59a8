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

/// What an email-verification message says.
pub struct VerifyEmail<'a> {
    pub link: &'a str,
    pub expires_hours: u64,
}

/// What the owner of a locked account is told (ASVS 6.3.1): someone kept
/// guessing, and how to get back in.
pub struct LockedEmail<'a> {
    pub when: &'a str,
    pub minutes: u64,
}

/// What a user is told when a replayed refresh token ended a session.
pub struct SessionEndedEmail<'a> {
    pub when: &'a str,
    /// The device the ended session was signed in on, as its user agent
    /// said (attacker-controlled text: escaped by the templates).
    pub device: &'a str,
}

/// What a user is told when one of their recovery codes was used; with
/// one or none left, the message asks for a new set.
pub struct RecoveryCodeUsedEmail<'a> {
    pub when: &'a str,
    pub left: u32,
}

/// What a user is told when two-step sign-in was turned on or off.
pub struct TwoStepChangedEmail<'a> {
    pub when: &'a str,
    pub enabled: bool,
}

/// What a user is told when a passkey was added to or removed from their
/// account.
pub struct PasskeyChangedEmail<'a> {
    pub when: &'a str,
    pub name: &'a str,
    pub added: bool,
}

/// What every administrator is told when someone starts emergency access.
pub struct EmergencyStartedEmail<'a> {
    pub when: &'a str,
    pub until: &'a str,
    pub user_name: &'a str,
    pub user_email: &'a str,
}

/// What an invitation says (issue 19): the link to choose a password, the
/// role the account will have, and how long the link works.
pub struct InvitationEmail<'a> {
    pub link: &'a str,
    pub role: &'a str,
    pub expires_hours: u64,
}

/// Declares the plain-text and HTML template pair of one email kind.
macro_rules! email_templates {
    ($text:ident, $text_path:literal, $html:ident, $html_path:literal, $email:ident) => {
        #[derive(Template)]
        #[template(path = $text_path)]
        struct $text<'a> {
            brand: &'a Brand<'a>,
            email: &'a $email<'a>,
        }

        #[derive(Template)]
        #[template(path = $html_path)]
        struct $html<'a> {
            brand: &'a Brand<'a>,
            email: &'a $email<'a>,
        }
    };
}

email_templates!(
    ResetText,
    "email/password_reset.txt",
    ResetHtml,
    "email/password_reset.html",
    ResetEmail
);
email_templates!(
    ChangedText,
    "email/password_changed.txt",
    ChangedHtml,
    "email/password_changed.html",
    ChangedEmail
);
email_templates!(
    VerifyText,
    "email/verify_email.txt",
    VerifyHtml,
    "email/verify_email.html",
    VerifyEmail
);
email_templates!(
    LockedText,
    "email/account_locked.txt",
    LockedHtml,
    "email/account_locked.html",
    LockedEmail
);
email_templates!(
    EndedText,
    "email/session_ended.txt",
    EndedHtml,
    "email/session_ended.html",
    SessionEndedEmail
);

email_templates!(
    RecoveryUsedText,
    "email/recovery_code_used.txt",
    RecoveryUsedHtml,
    "email/recovery_code_used.html",
    RecoveryCodeUsedEmail
);

email_templates!(
    TwoStepText,
    "email/two_step_changed.txt",
    TwoStepHtml,
    "email/two_step_changed.html",
    TwoStepChangedEmail
);
email_templates!(
    PasskeyText,
    "email/passkey_changed.txt",
    PasskeyHtml,
    "email/passkey_changed.html",
    PasskeyChangedEmail
);
email_templates!(
    EmergencyText,
    "email/emergency_access_started.txt",
    EmergencyHtml,
    "email/emergency_access_started.html",
    EmergencyStartedEmail
);

/// What the owner (`account` None) and every administrator (`account` the
/// owner's address) are told when an admin reset a second factor.
pub struct MfaResetEmail<'a> {
    pub when: &'a str,
    pub account: Option<&'a str>,
}

email_templates!(
    MfaResetText,
    "email/mfa_reset.txt",
    MfaResetHtml,
    "email/mfa_reset.html",
    MfaResetEmail
);

email_templates!(
    InvitationText,
    "email/invitation.txt",
    InvitationHtml,
    "email/invitation.html",
    InvitationEmail
);

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
        message_id: None,
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

pub fn verify_email(
    to: Mailbox,
    brand: &Brand<'_>,
    email: &VerifyEmail<'_>,
) -> anyhow::Result<OutgoingEmail> {
    compose(
        to,
        format!("Confirm your email address for {}", brand.app_name),
        &VerifyText { brand, email },
        &VerifyHtml { brand, email },
        Some(email.link),
    )
}

pub fn account_locked(
    to: Mailbox,
    brand: &Brand<'_>,
    email: &LockedEmail<'_>,
) -> anyhow::Result<OutgoingEmail> {
    compose(
        to,
        format!("Sign-in to {} paused after failed attempts", brand.app_name),
        &LockedText { brand, email },
        &LockedHtml { brand, email },
        None,
    )
}

pub fn session_ended(
    to: Mailbox,
    brand: &Brand<'_>,
    email: &SessionEndedEmail<'_>,
) -> anyhow::Result<OutgoingEmail> {
    compose(
        to,
        format!("A {} session was ended for your safety", brand.app_name),
        &EndedText { brand, email },
        &EndedHtml { brand, email },
        None,
    )
}

pub fn recovery_code_used(
    to: Mailbox,
    brand: &Brand<'_>,
    email: &RecoveryCodeUsedEmail<'_>,
) -> anyhow::Result<OutgoingEmail> {
    compose(
        to,
        format!("A {} recovery code was used", brand.app_name),
        &RecoveryUsedText { brand, email },
        &RecoveryUsedHtml { brand, email },
        None,
    )
}

pub fn two_step_changed(
    to: Mailbox,
    brand: &Brand<'_>,
    email: &TwoStepChangedEmail<'_>,
) -> anyhow::Result<OutgoingEmail> {
    let state = if email.enabled { "on" } else { "off" };
    compose(
        to,
        format!(
            "Two-step sign-in was turned {state} for your {} account",
            brand.app_name
        ),
        &TwoStepText { brand, email },
        &TwoStepHtml { brand, email },
        None,
    )
}

pub fn passkey_changed(
    to: Mailbox,
    brand: &Brand<'_>,
    email: &PasskeyChangedEmail<'_>,
) -> anyhow::Result<OutgoingEmail> {
    let what = if email.added {
        "added to"
    } else {
        "removed from"
    };
    compose(
        to,
        format!("A passkey was {what} your {} account", brand.app_name),
        &PasskeyText { brand, email },
        &PasskeyHtml { brand, email },
        None,
    )
}

pub fn emergency_access_started(
    to: Mailbox,
    brand: &Brand<'_>,
    email: &EmergencyStartedEmail<'_>,
) -> anyhow::Result<OutgoingEmail> {
    compose(
        to,
        format!(
            "Emergency access started by {} on {}",
            email.user_name, brand.app_name
        ),
        &EmergencyText { brand, email },
        &EmergencyHtml { brand, email },
        None,
    )
}

pub fn mfa_reset(
    to: Mailbox,
    brand: &Brand<'_>,
    email: &MfaResetEmail<'_>,
) -> anyhow::Result<OutgoingEmail> {
    let subject = match email.account {
        None => format!(
            "Your {} two-step sign-in was reset by an administrator",
            brand.app_name
        ),
        Some(account) => format!("Two-step sign-in of {account} was reset"),
    };
    compose(
        to,
        subject,
        &MfaResetText { brand, email },
        &MfaResetHtml { brand, email },
        None,
    )
}

pub fn invitation(
    to: Mailbox,
    brand: &Brand<'_>,
    email: &InvitationEmail<'_>,
) -> anyhow::Result<OutgoingEmail> {
    compose(
        to,
        format!("You are invited to {}", brand.app_name),
        &InvitationText { brand, email },
        &InvitationHtml { brand, email },
        Some(email.link),
    )
}
