//! The real `clinic-auth` binary as a process of its own, for tests that
//! run several instances on one store (two processes on one SQLite file
//! behave unlike two apps in one test process: each has its own writer
//! connection, and SQLite's file locks decide between them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_clinic-auth");

pub const ACCESS_SECRET: &str = "instances-access-secret-0123456789abcdef0123";
pub const REFRESH_SECRET: &str = "instances-refresh-secret-0123456789abcdef012";
pub const AUDIT_KEY: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// One running instance; killed (and reaped) when dropped.
pub struct Instance {
    child: Child,
    pub base: String,
    /// Its working directory, where its log (`instance.log`) and data go.
    pub dir: PathBuf,
}

/// What every instance of one deployment shares: the secrets, the signing
/// and audit keys and the public URL (README, "Several instances"). Rate
/// limits are out of the way unless a test sets them.
pub fn shared_vars(database: (&str, &str)) -> Vec<(String, String)> {
    [
        database,
        ("HOST", "127.0.0.1"),
        ("APP_URL", "http://localhost:8000"),
        ("JWT_ACCESS_SECRET", ACCESS_SECRET),
        ("JWT_REFRESH_SECRET", REFRESH_SECRET),
        ("AUDIT_KEY", AUDIT_KEY),
        ("RATE_LIMIT_AUTH_PER_MIN", "100000"),
        ("RATE_LIMIT_GLOBAL_PER_MIN", "100000"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

impl Instance {
    /// Starts the binary in `dir` (created if needed) with exactly `vars`
    /// (plus PATH and a free PORT) and waits until `/health` answers;
    /// panics with its log when it exits instead. Output goes to
    /// `dir/instance.log`: a pipe nobody reads would fill up and stop the
    /// process mid-test.
    pub async fn start(dir: &Path, vars: &[(String, String)]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let port = super::net::free_port();
        let log = std::fs::File::create(dir.join("instance.log")).unwrap();
        let child = Command::new(BIN)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PORT", port.to_string())
            .env("DATA_DIR", dir.join("data"))
            .env("MAIL_OUTBOX_DIR", dir.join("outbox"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut instance = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir: dir.to_owned(),
        };
        instance.wait_healthy().await;
        instance
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(res) = client.get(self.url("/health")).send().await {
                assert_eq!(res.status(), 200, "{}", self.log());
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the binary exited ({status}): {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the binary never became healthy: {}", self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("instance.log")).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
