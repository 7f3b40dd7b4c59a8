//! Outgoing email: composing messages from templates and handing them to a
//! transport (SMTP via lettre, or `.eml` files in an outbox directory).
//!
//! Sending is never on a request's critical path: the services spawn it and
//! a failure is logged, so a slow or broken mail server cannot change an
//! answer or reveal whether an account exists.

mod templates;

use std::path::PathBuf;

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
            builder = builder
                .port(*port)
                .timeout(Some(std::time::Duration::from_secs(15)));
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

struct OutboxMailer {
    from: Mailbox,
    dir: PathBuf,
    log_links: bool,
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: OutgoingEmail) -> anyhow::Result<()> {
        let message = build_message(&self.from, &email)?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .with_context(|| format!("cannot create outbox {}", self.dir.display()))?;
        let name = format!(
            "{}-{}.eml",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            uuid::Uuid::new_v4().simple()
        );
        // Write then rename, so a reader never sees half a message.
        let partial = self.dir.join(format!(".{name}.part"));
        let path = self.dir.join(&name);
        tokio::fs::write(&partial, message.formatted())
            .await
            .with_context(|| format!("cannot write {}", partial.display()))?;
        tokio::fs::rename(&partial, &path).await?;
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
