//! Email over real SMTP (aiosmtpd from the test virtualenv, on loopback):
//! the reset email arrives as multipart text + HTML, and a dead mail server
//! changes nothing about the answer.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::net::free_port;
use common::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::json;

/// An aiosmtpd server storing what it receives in a maildir; killed on drop.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    async fn start() -> Self {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        assert!(
            python.exists(),
            "run scripts/setup-test-env.sh first (it installs aiosmtpd)"
        );
        let maildir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            port,
            maildir,
        }
    }

    /// The first delivered message whose subject starts with `subject`.
    async fn wait_for_mail(&self, subject: &str) -> Vec<u8> {
        use mailparse::MailHeaderMap;
        let new = self.maildir.path().join("mail/new");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let delivered = std::fs::read_dir(&new)
                .into_iter()
                .flatten()
                .filter_map(|entry| std::fs::read(entry.ok()?.path()).ok());
            for raw in delivered {
                let headers = mailparse::parse_headers(&raw).unwrap().0;
                if headers
                    .get_first_value("Subject")
                    .is_some_and(|s| s.starts_with(subject))
                {
                    return raw;
                }
            }
            assert!(Instant::now() < deadline, "no mail arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_email_goes_out_over_smtp() {
    let smtp = SmtpServer::start().await;
    let port = smtp.port.to_string();
    let app = TestApp::with_jane(
        Backend::Sqlite,
        &[
            ("MAIL_SERVER", "127.0.0.1"),
            ("MAIL_PORT", &port),
            ("MAIL_TLS", "False"),
            ("MAIL_FROM", "Northside Clinic <no-reply@clinic.example>"),
            ("APP_NAME", "Northside Clinic"),
        ],
    )
    .await;
    let res = app
        .post_json(
            "/api/auth/forgot-password",
            json!({"email": "jane@example.com"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    let raw = smtp.wait_for_mail("Reset your").await;
    use mailparse::MailHeaderMap;
    let mail = mailparse::parse_mail(&raw).unwrap();
    assert!(mail
        .headers
        .get_first_value("From")
        .unwrap()
        .contains("no-reply@clinic.example"));
    assert!(mail
        .headers
        .get_first_value("To")
        .unwrap()
        .contains("jane@example.com"));
    assert!(mail
        .headers
        .get_first_value("Subject")
        .unwrap()
        .contains("Northside Clinic"));
    assert_eq!(mail.ctype.mimetype, "multipart/alternative");
    let kinds: Vec<&str> = mail
        .subparts
        .iter()
        .map(|p| p.ctype.mimetype.as_str())
        .collect();
    assert_eq!(kinds, ["text/plain", "text/html"]);
    let text = mail.subparts[0].get_body().unwrap();
    assert!(
        text.contains("http://localhost:8000/reset-password?token="),
        "{text}"
    );
    assert!(
        !app.outbox().exists(),
        "SMTP configured: nothing in the outbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_mail_server_changes_nothing_for_the_client() {
    let port = free_port().to_string();
    let app = TestApp::with_jane(
        Backend::Sqlite,
        &[
            ("MAIL_SERVER", "127.0.0.1"),
            ("MAIL_PORT", &port),
            ("MAIL_TLS", "False"),
        ],
    )
    .await;
    let started = Instant::now();
    let res = app
        .post_json(
            "/api/auth/forgot-password",
            json!({"email": "jane@example.com"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "sending is off the request path"
    );
    // The service stays healthy after the failed delivery.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
}
