//! Mail servers for the email tests: aiosmtpd from the test virtualenv (a
//! real SMTP server storing what it receives in a maildir), and a server
//! that accepts connections and never says a word. Both are processes of
//! their own, killed on drop, so their sockets never count as the tested
//! process's descriptors.

// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "run scripts/setup-test-env.sh first (it installs aiosmtpd)"
    );
    python
}

/// Waits until something accepts connections on `port`.
async fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A delivered message, decoded.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub to: String,
    pub subject: String,
    pub message_id: String,
    pub text: String,
    pub raw: Vec<u8>,
}

/// An aiosmtpd server storing what it receives in a maildir.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    pub async fn start() -> Self {
        Self::start_on(super::net::free_port()).await
    }

    /// On a given port: e.g. the one the app was told about while nothing
    /// listened there.
    pub async fn start_on(port: u16) -> Self {
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new(python())
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
        wait_listening(port, "aiosmtpd").await;
        Self {
            child,
            port,
            maildir,
        }
    }

    /// Every message delivered so far.
    pub fn delivered(&self) -> Vec<Delivered> {
        use mailparse::MailHeaderMap;
        let new = self.maildir.path().join("mail/new");
        std::fs::read_dir(&new)
            .into_iter()
            .flatten()
            .filter_map(|entry| std::fs::read(entry.ok()?.path()).ok())
            .map(|raw| {
                let mail = mailparse::parse_mail(&raw).unwrap();
                let header = |name: &str| mail.headers.get_first_value(name).unwrap_or_default();
                let text = mail
                    .subparts
                    .iter()
                    .find(|p| p.ctype.mimetype == "text/plain")
                    .map(|p| p.get_body().unwrap())
                    .unwrap_or_default();
                Delivered {
                    to: header("To"),
                    subject: header("Subject"),
                    message_id: header("Message-ID"),
                    text,
                    raw: raw.clone(),
                }
            })
            .collect()
    }

    /// Waits (up to 30 s) until `want` holds for the delivered messages,
    /// and returns them.
    pub async fn wait_until(
        &self,
        what: &str,
        want: impl Fn(&[Delivered]) -> bool,
    ) -> Vec<Delivered> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let delivered = self.delivered();
            if want(&delivered) {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: delivered only {:?}",
                delivered
                    .iter()
                    .map(|d| (&d.to, &d.subject))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first delivered message whose subject starts with `subject`.
    pub async fn wait_for_mail(&self, subject: &str) -> Vec<u8> {
        let delivered = self
            .wait_until(subject, |d| {
                d.iter().any(|m| m.subject.starts_with(subject))
            })
            .await;
        delivered
            .into_iter()
            .find(|m| m.subject.starts_with(subject))
            .unwrap()
            .raw
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Accepts every connection and then says nothing, ever: no greeting, no
/// reply (a mail server wedged behind a firewall that drops its answers).
pub struct SilentServer {
    child: Child,
    pub port: u16,
}

impl SilentServer {
    pub async fn start() -> Self {
        let port = super::net::free_port();
        let script = "import socket, sys\n\
                      s = socket.socket()\n\
                      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                      s.bind(('127.0.0.1', int(sys.argv[1])))\n\
                      s.listen(4096)\n\
                      held = []\n\
                      while True:\n\
                      \x20   held.append(s.accept()[0])\n";
        let child = Command::new(python())
            .args(["-c", script, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(port, "the silent server").await;
        Self { child, port }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
