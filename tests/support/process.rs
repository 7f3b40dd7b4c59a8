//! The real `clinic-auth` binary as a child process, for tests whose fault
//! is done to the process or its machine: kill -9, a disk that fills up.
//! It runs with a fixed configuration (secrets, AUDIT_KEY, generous rate
//! limits, quiet logs) in its own working directory, its output going to a
//! file there (a pipe nobody reads would fill up and stall it).

// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::common::net::free_port;
use super::common::{ACCESS_SECRET, REFRESH_SECRET};

/// The binary under test: this build's, or the one `CLINIC_AUTH_TEST_BIN`
/// names (a release build, or an older one to watch a fault test fail).
pub fn bin() -> String {
    std::env::var("CLINIC_AUTH_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_clinic-auth").to_owned())
}
/// The AUDIT_KEY every process (service and CLI) of a test shares.
pub const AUDIT_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
/// The debug binary on a 2-core machine busy compiling: migrations and the
/// first connections can take a while.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The configuration of a service in `dir`, on the database `database`
/// (`DATABASE_URL` or `MONGO_URI`, as `common::database_pair` gives it).
pub fn configuration(dir: &Path, database: (String, String)) -> Vec<(String, String)> {
    let path = |p: &str| dir.join(p).display().to_string();
    let mut vars: Vec<(String, String)> = [
        ("HOST", "127.0.0.1".to_owned()),
        ("APP_URL", "http://localhost:8000".to_owned()),
        ("JWT_ACCESS_SECRET", ACCESS_SECRET.to_owned()),
        ("JWT_REFRESH_SECRET", REFRESH_SECRET.to_owned()),
        ("AUDIT_KEY", AUDIT_KEY.to_owned()),
        ("DATA_DIR", path("data")),
        ("MAIL_OUTBOX_DIR", path("outbox")),
        ("RATE_LIMIT_AUTH_PER_MIN", "100000000".to_owned()),
        ("RATE_LIMIT_GLOBAL_PER_MIN", "100000000".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    vars.push(database);
    vars
}

/// A running service.
pub struct Service {
    pub base: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts the binary in `dir` with `vars` on a free port and waits
    /// until `/health` answers 200.
    pub async fn start(dir: &Path, vars: &[(String, String)]) -> Self {
        let port = free_port();
        let log = dir.join(format!("service-{port}.log"));
        let out = File::create(&log).unwrap();
        let child = command(dir, vars)
            .env("PORT", port.to_string())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut service = Self {
            base: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            log,
        };
        service.wait_healthy().await;
        service
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(res) = client.get(self.url("/health")).send().await {
                if res.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("the service exited with {status}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "the service was not healthy within {START_TIMEOUT:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// What it wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no flush, nothing after the signal.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then waits (bounded) for it to exit.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the service is running");
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("did not exit within {limit:?} of SIGTERM:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the binary's command line (e.g. `audit verify`) with `vars` in
/// `dir`, bounded in time.
pub async fn cli(dir: &Path, vars: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = command(dir, vars);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let run = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the command finished within a minute")
        .unwrap()
}

/// `audit verify` on the service's database must pass.
pub async fn assert_audit_verifies(dir: &Path, vars: &[(String, String)]) {
    let output = cli(dir, vars, &["audit", "verify"]).await;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "audit verify failed: {text}");
    assert!(text.contains("audit chain OK"), "{text}");
}

/// The binary with only `vars` (plus PATH) in `dir`, so no `.env` and no
/// variable of the test's own environment leaks in.
fn command(dir: &Path, vars: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    cmd
}
