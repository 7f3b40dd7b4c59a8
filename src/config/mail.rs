//! Outgoing email: the sender, the transport (SMTP, or `.eml` files when no
//! MAIL_SERVER is set) and how hard the outbox tries to deliver.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::{err, values, ConfigError, Vars};

/// How outgoing email leaves the process.
#[derive(Debug, Clone)]
pub enum MailTransport {
    Smtp {
        server: String,
        port: u16,
        username: Option<String>,
        password: Option<SecretString>,
        starttls: bool,
    },
    /// Each message becomes an `.eml` file: lets a newcomer follow the reset
    /// flow with no mail server at all.
    Outbox { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub from: String,
    pub transport: MailTransport,
    /// The whole of one delivery attempt, connect, TLS and every SMTP reply
    /// included (MAIL_TIMEOUT).
    pub timeout: Duration,
    /// How long after it was queued a message is still retried
    /// (MAIL_RETRY_FOR).
    pub retry_for: Duration,
    /// Delivery attempts in flight at once per instance (MAIL_CONCURRENCY).
    pub concurrency: usize,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct MailVars {
    mail_from: Option<String>,
    mail_server: Option<String>,
    mail_outbox_dir: Option<String>,
    #[serde(deserialize_with = "values::timeout")]
    mail_timeout: Option<Duration>,
    #[serde(deserialize_with = "values::duration")]
    mail_retry_for: Option<Duration>,
    #[serde(deserialize_with = "values::number")]
    mail_concurrency: Option<usize>,
}

/// Read only when MAIL_SERVER is set: without a server they mean nothing,
/// so a stale value left in `.env` stops nothing.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct SmtpVars {
    #[serde(deserialize_with = "values::number")]
    mail_port: Option<u16>,
    mail_username: Option<String>,
    mail_password: Option<String>,
    #[serde(deserialize_with = "values::flag")]
    mail_tls: Option<bool>,
}

impl MailConfig {
    pub(super) fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let v: MailVars = vars.read()?;
        let transport = match v.mail_server {
            Some(server) => {
                let smtp: SmtpVars = vars.read()?;
                MailTransport::Smtp {
                    server,
                    port: smtp.mail_port.unwrap_or(587),
                    username: smtp.mail_username,
                    password: smtp.mail_password.map(SecretString::from),
                    starttls: smtp.mail_tls.unwrap_or(true),
                }
            }
            None => MailTransport::Outbox {
                dir: PathBuf::from(v.mail_outbox_dir.unwrap_or_else(|| "data/outbox".into())),
            },
        };
        let mail = Self {
            from: v
                .mail_from
                .unwrap_or_else(|| "Clinic Auth <no-reply@localhost>".into()),
            transport,
            timeout: v.mail_timeout.unwrap_or(Duration::from_secs(15)),
            retry_for: v.mail_retry_for.unwrap_or(Duration::from_secs(86_400)),
            concurrency: v.mail_concurrency.unwrap_or(4),
        };
        if mail.retry_for.is_zero() {
            // Zero would give up on every message at its first failure.
            return Err(err("MAIL_RETRY_FOR", "must be above zero, e.g. 24h"));
        }
        if !(1..=64).contains(&mail.concurrency) {
            return Err(err("MAIL_CONCURRENCY", "must be between 1 and 64"));
        }
        if let Err(e) = mail.from.parse::<lettre::message::Mailbox>() {
            return Err(err("MAIL_FROM", format!("not a valid mailbox ({e})")));
        }
        Ok(mail)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn smtp_settings_are_read_only_with_a_server() {
        // Without MAIL_SERVER a stale MAIL_PORT or MAIL_TLS stops nothing.
        let c = Config::from_pairs(&[("MAIL_PORT", "smtp"), ("MAIL_TLS", "maybe")]).unwrap();
        assert!(matches!(c.mail.transport, MailTransport::Outbox { .. }));
        let c = Config::from_pairs(&[
            ("MAIL_SERVER", "smtp.example.com"),
            ("MAIL_USERNAME", "mailer"),
            ("MAIL_PASSWORD", "pw"),
        ])
        .unwrap();
        match c.mail.transport {
            MailTransport::Smtp {
                port,
                starttls,
                username,
                password,
                ..
            } => {
                assert_eq!((port, starttls), (587, true));
                assert_eq!(username.as_deref(), Some("mailer"));
                assert!(password.is_some());
            }
            other => panic!("{other:?}"),
        }
    }
}
