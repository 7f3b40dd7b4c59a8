//! What a queued email says, and how it is kept unreadable at rest.
//!
//! A queued message is stored as a [`Letter`]: the recipient and what to
//! say (the link, the time of the event), not the rendered text, so a row
//! stays small and is rendered with the templates of whichever instance
//! sends it. The letter is sealed with XChaCha20-Poly1305 under a key
//! derived from JWT_REFRESH_SECRET (HKDF-SHA256 with a label of its own):
//! a reset link in the queue is as good as a password, so a copy of the
//! database (a backup, a replica) must not hand one out, and every instance
//! already shares that secret. Random 192-bit nonces cannot collide however
//! many messages one key seals. The sealed bytes are bound to their row
//! (the associated data is the queue id and the link's token hash), so a
//! payload copied into another row does not open.

use anyhow::Context;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{templates, Brand, OutgoingEmail};

/// HKDF `info`: keys derived from the same secret for other uses differ.
const KEY_LABEL: &[u8] = b"clinic-auth email-queue v1";
const NONCE_LEN: usize = 24;

/// What one message says. The variant is the template.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    PasswordReset {
        link: String,
        expires_minutes: u64,
    },
    VerifyEmail {
        link: String,
        expires_hours: u64,
    },
    PasswordChanged {
        when: String,
    },
    AccountLocked {
        when: String,
        minutes: u64,
    },
    SessionEnded {
        when: String,
        device: String,
    },
    RecoveryCodeUsed {
        when: String,
        left: u32,
    },
    TwoStepChanged {
        when: String,
        enabled: bool,
    },
    PasskeyChanged {
        when: String,
        name: String,
        added: bool,
    },
    /// To every administrator: someone broke the glass. The reason stays
    /// out of the email (it may name a patient); the review page shows it.
    EmergencyAccessStarted {
        when: String,
        until: String,
        user_name: String,
        user_email: String,
    },
    /// An administrator removed an account's second factors (issue 19):
    /// to its owner (`account` None) and to every admin (`account` the
    /// owner's address).
    MfaReset {
        when: String,
        account: Option<String>,
    },
    /// Issue 19: an administrator invited the recipient.
    Invitation {
        link: String,
        role: String,
        expires_hours: u64,
    },
}

impl Content {
    /// A name for logs, metrics and the queue's `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Content::PasswordReset { .. } => "password_reset",
            Content::VerifyEmail { .. } => "verify_email",
            Content::PasswordChanged { .. } => "password_changed",
            Content::AccountLocked { .. } => "account_locked",
            Content::SessionEnded { .. } => "session_ended",
            Content::RecoveryCodeUsed { .. } => "recovery_code_used",
            Content::TwoStepChanged { .. } => "two_step_changed",
            Content::PasskeyChanged { .. } => "passkey_changed",
            Content::EmergencyAccessStarted { .. } => "emergency_access_started",
            Content::MfaReset { .. } => "mfa_reset",
            Content::Invitation { .. } => "invitation",
        }
    }

    /// The link the message exists to deliver, if any.
    fn link(&self) -> Option<&str> {
        match self {
            Content::PasswordReset { link, .. }
            | Content::VerifyEmail { link, .. }
            | Content::Invitation { link, .. } => Some(link),
            _ => None,
        }
    }
}

/// A message as queued: who it is for and what it says. No `Debug`: it
/// holds the address and, for links, a live token.
#[derive(Serialize, Deserialize)]
pub struct Letter {
    pub name: String,
    pub address: String,
    pub content: Content,
}

impl Letter {
    /// Renders the message for sending.
    pub fn compose(&self, app_name: &str, app_url: &str) -> anyhow::Result<OutgoingEmail> {
        let to = Mailbox::new(
            Some(self.name.clone()),
            self.address
                .parse()
                .context("the queued address is not valid")?,
        );
        let brand = Brand {
            app_name,
            app_url,
            name: &self.name,
        };
        let mut email = match &self.content {
            Content::PasswordReset {
                link,
                expires_minutes,
            } => templates::password_reset(
                to,
                &brand,
                &templates::ResetEmail {
                    link,
                    expires_minutes: *expires_minutes,
                },
            ),
            Content::VerifyEmail {
                link,
                expires_hours,
            } => templates::verify_email(
                to,
                &brand,
                &templates::VerifyEmail {
                    link,
                    expires_hours: *expires_hours,
                },
            ),
            Content::PasswordChanged { when } => {
                templates::password_changed(to, &brand, &templates::ChangedEmail { when })
            }
            Content::AccountLocked { when, minutes } => templates::account_locked(
                to,
                &brand,
                &templates::LockedEmail {
                    when,
                    minutes: *minutes,
                },
            ),
            Content::SessionEnded { when, device } => {
                templates::session_ended(to, &brand, &templates::SessionEndedEmail { when, device })
            }
            Content::RecoveryCodeUsed { when, left } => templates::recovery_code_used(
                to,
                &brand,
                &templates::RecoveryCodeUsedEmail { when, left: *left },
            ),
            Content::TwoStepChanged { when, enabled } => templates::two_step_changed(
                to,
                &brand,
                &templates::TwoStepChangedEmail {
                    when,
                    enabled: *enabled,
                },
            ),
            Content::PasskeyChanged { when, name, added } => templates::passkey_changed(
                to,
                &brand,
                &templates::PasskeyChangedEmail {
                    when,
                    name,
                    added: *added,
                },
            ),
            Content::EmergencyAccessStarted {
                when,
                until,
                user_name,
                user_email,
            } => templates::emergency_access_started(
                to,
                &brand,
                &templates::EmergencyStartedEmail {
                    when,
                    until,
                    user_name,
                    user_email,
                },
            ),
            Content::MfaReset { when, account } => templates::mfa_reset(
                to,
                &brand,
                &templates::MfaResetEmail {
                    when,
                    account: account.as_deref(),
                },
            ),
            Content::Invitation {
                link,
                role,
                expires_hours,
            } => templates::invitation(
                to,
                &brand,
                &templates::InvitationEmail {
                    link,
                    role,
                    expires_hours: *expires_hours,
                },
            ),
        }?;
        email.action_url = self
            .content
            .link()
            .map(|url| SecretString::from(url.to_owned()));
        Ok(email)
    }
}

/// Seals and opens letters with the queue's key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// The key is HKDF-SHA256 of `secret` (JWT_REFRESH_SECRET). Changing
    /// that secret makes messages still queued unreadable: they are dropped
    /// (logged and counted), like links signed with the old secret.
    pub fn derive_from(secret: &SecretString) -> Self {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, secret.expose_secret().as_bytes());
        let mut key = [0u8; 32];
        hkdf.expand(KEY_LABEL, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Nonce, then ciphertext and tag. `bound_to` is authenticated but not
    /// stored: the same bytes must be given to [`Sealer::open`].
    pub fn seal(&self, letter: &Letter, bound_to: &[u8]) -> anyhow::Result<Vec<u8>> {
        let plain = serde_json::to_vec(letter).context("cannot encode the letter")?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: bound_to,
                },
            )
            .map_err(|_| anyhow::anyhow!("cannot seal the letter"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The letter in `sealed`, when it was sealed with this key for
    /// `bound_to` and not altered since.
    pub fn open(&self, sealed: &[u8], bound_to: &[u8]) -> anyhow::Result<Letter> {
        anyhow::ensure!(sealed.len() > NONCE_LEN, "sealed letter too short");
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().context("sealed letter too short")?;
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: body,
                    aad: bound_to,
                },
            )
            .map_err(|_| {
                anyhow::anyhow!("the letter does not open with this key (JWT_REFRESH_SECRET changed?) or was altered")
            })?;
        serde_json::from_slice(&plain).context("the opened letter is not one this version reads")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter() -> Letter {
        Letter {
            name: "Dr Jane Smith".into(),
            address: "jane@example.com".into(),
            content: Content::PasswordReset {
                link: "http://localhost:8000/reset-password?token=secret-token".into(),
                expires_minutes: 30,
            },
        }
    }

    #[test]
    fn sealed_letters_hide_the_address_and_link_and_open_only_where_bound() {
        let sealer = Sealer::derive_from(&SecretString::from("a".repeat(40)));
        let sealed = sealer.seal(&letter(), b"row-1").unwrap();
        let raw = String::from_utf8_lossy(&sealed);
        assert!(!raw.contains("jane@example.com") && !raw.contains("secret-token"));
        let opened = sealer.open(&sealed, b"row-1").unwrap();
        assert_eq!(opened.address, "jane@example.com");
        assert!(
            sealer.open(&sealed, b"row-2").is_err(),
            "moved to another row"
        );
        let other = Sealer::derive_from(&SecretString::from("b".repeat(40)));
        assert!(other.open(&sealed, b"row-1").is_err(), "another key");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(&altered, b"row-1").is_err(), "altered");
        assert!(sealer.open(&sealed[..10], b"row-1").is_err(), "truncated");
        // Two seals of the same letter differ (fresh nonces).
        assert_ne!(sealed, sealer.seal(&letter(), b"row-1").unwrap());
    }

    #[test]
    fn an_opened_letter_renders_with_its_link() {
        let email = letter()
            .compose("Clinic Auth", "http://localhost:8000")
            .unwrap();
        assert!(email.text.contains("reset-password?token=secret-token"));
        assert!(email.action_url.is_some());
        assert_eq!(email.to.email.to_string(), "jane@example.com");
    }
}
