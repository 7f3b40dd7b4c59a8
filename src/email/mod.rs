//! Outgoing email: composing messages from templates and handing them to a
//! transport (SMTP via lettre, or `.eml` files in an outbox directory).
//!
//! Sending is never on a request's critical path: requests queue a sealed
//! [`sealed::Letter`] in the database and the outbox sender
//! (`services::outbox`) delivers it through a [`Mailer`], with a deadline
//! per attempt and retries, so a slow or broken mail server cannot change
//! an answer, reveal whether an account exists, or lose a message.

pub mod sealed;
mod templates;

use std::path::{Path, PathBuf};

use anyhow::Context;
use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{MailConfig, MailTransport};
pub use templates::{
    account_locked, password_changed, password_reset, session_ended, verify_email, Brand,
    ChangedEmail, LockedEmail, ResetEmail, SessionEndedEmail, VerifyEmail,
};

/// A composed message. Its `Debug` leaves out the bodies, which carry links
/// with tokens.
pub struct OutgoingEmail {
    pub to: Mailbox,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The link the message exists to deliver; the outbox logs it in
    /// development so the flow can be followed without a mail client.
    pub action_url: Option<SecretString>,
    /// The same for every attempt at one queued message, so a receiving
    /// system can tell a retry after an unconfirmed delivery from a new
    /// message.
    pub message_id: Option<String>,
}

impl std::fmt::Debug for OutgoingEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingEmail")
            .field("to", &self.to.email.to_string())
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, email: OutgoingEmail) -> anyhow::Result<()>;
}

/// Builds the configured transport.
pub fn from_config(config: &MailConfig, log_links: bool) -> anyhow::Result<Box<dyn Mailer>> {
    let from: Mailbox = config
        .from
        .parse()
        .context("MAIL_FROM is not a valid mailbox")?;
    Ok(match &config.transport {
        MailTransport::Outbox { dir } => Box::new(OutboxMailer {
            from,
            dir: dir.clone(),
            log_links,
        }),
        MailTransport::Smtp {
            server,
            port,
            username,
            password,
            starttls,
        } => {
            let mut builder = if !starttls {
                // Plain SMTP, e.g. a relay on localhost or a test server.
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server)
            } else if *port == 465 {
                AsyncSmtpTransport::<Tokio1Executor>::relay(server)?
            } else {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(server)?
            };
            // lettre applies this to the connect only; the outbox sender
            // bounds each whole attempt with the same MAIL_TIMEOUT.
            builder = builder.port(*port).timeout(Some(config.timeout));
            if let Some(user) = username {
                let password = password
                    .as_ref()
                    .map(|p| p.expose_secret().to_owned())
                    .unwrap_or_default();
                builder = builder.credentials(Credentials::new(user.clone(), password));
            }
            Box::new(SmtpMailer {
                from,
                transport: builder.build(),
            })
        }
    })
}

fn build_message(from: &Mailbox, email: &OutgoingEmail) -> anyhow::Result<Message> {
    Message::builder()
        .message_id(email.message_id.clone())
        .from(from.clone())
        .to(email.to.clone())
        .subject(email.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .context("cannot build email message")
}

struct SmtpMailer {
    from: Mailbox,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: OutgoingEmail) -> anyhow::Result<()> {
        let message = build_message(&self.from, &email)?;
        self.transport
            .send(message)
            .await
            .context("SMTP delivery failed")?;
        Ok(())
    }
}

/// Writes one message into the outbox as `<time>-<uuid>.eml`: first under a
/// hidden `.part` name, then renamed, so a reader never sees half a
/// message. The directory is created only when missing (it may be removed
/// while the service runs), not checked on every send.
fn write_eml(dir: &Path, message: &[u8]) -> anyhow::Result<PathBuf> {
    let name = format!(
        "{}-{}.eml",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        uuid::Uuid::new_v4().simple()
    );
    let partial = dir.join(format!(".{name}.part"));
    let path = dir.join(&name);
    let written = match std::fs::write(&partial, message) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create outbox {}", dir.display()))
            .and_then(|()| std::fs::write(&partial, message).map_err(Into::into)),
        other => other.map_err(Into::into),
    };
    written.with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("cannot rename {}", partial.display()))?;
    Ok(path)
}

struct OutboxMailer {
    from: Mailbox,
    dir: PathBuf,
    log_links: bool,
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: OutgoingEmail) -> anyhow::Result<()> {
        let message = build_message(&self.from, &email)?.formatted();
        let dir = self.dir.clone();
        // One trip to the blocking pool for the whole write: each tokio::fs
        // call would be a trip of its own (a registration flood spent more
        // CPU on those hand-offs than on composing the message).
        let path = tokio::task::spawn_blocking(move || write_eml(&dir, &message))
            .await
            .context("outbox writer stopped")??;
        match (&email.action_url, self.log_links) {
            (Some(url), true) => tracing::info!(
                to = %email.to.email, file = %path.display(), link = %url.expose_secret(),
                "email written to outbox (development: link shown here)"
            ),
            _ => {
                tracing::info!(to = %email.to.email, file = %path.display(), "email written to outbox")
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn outbox_is_created_when_missing_and_keeps_no_partial_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox");
        let first = write_eml(&dir, b"Subject: one\r\n\r\nbody").unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), b"Subject: one\r\n\r\nbody");
        // Removed while the service runs (an operator clearing it): the
        // next message brings it back instead of failing.
        std::fs::remove_dir_all(&dir).unwrap();
        let second = write_eml(&dir, b"Subject: two\r\n\r\nbody").unwrap();
        let names = entries(&dir);
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].ends_with(".eml") && !names[0].starts_with('.'));
        assert_eq!(second.file_name().unwrap().to_string_lossy(), names[0]);
    }

    #[test]
    fn an_unwritable_outbox_is_an_error_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        // A file where the directory should be: neither write nor create works.
        let dir = root.path().join("outbox");
        std::fs::write(&dir, b"not a directory").unwrap();
        let err = format!("{:#}", write_eml(&dir, b"x").unwrap_err());
        assert!(err.contains("outbox"), "{err}");
    }
}
