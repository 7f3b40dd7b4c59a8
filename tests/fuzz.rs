//! Property-based fuzzing of the real binary with schemathesis, driven by
//! the service's own /openapi.json: every documented operation (whatever
//! routes exist when this runs) gets generated valid and invalid requests,
//! and every answer must be a non-5xx, with a documented status, content
//! type, headers and body schema. So the OpenAPI document has to be complete
//! and true, and the server must not fail on any input.
//!
//! schemathesis lives in `.venv` (`scripts/setup-test-env.sh`). Run alone:
//! `cargo test --test fuzz -- --nocapture`; `FUZZ_EXAMPLES` (default 100 per
//! operation) and `FUZZ_SEED` (to replay a run; the output prints its seed)
//! tune it.

#[path = "support/net.rs"]
mod net;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use net::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_clinic-auth");
/// The account the fuzzer signs in with. The same email and password as the
/// OpenAPI examples, so the example requests reach the success paths too
/// (login 200, register 409) rather than only the failures.
const EMAIL: &str = "jane@example.com";
const PASSWORD: &str = "Str0ng!Pass123";

/// What every answer is held to. (`positive_data_acceptance` and
/// `negative_data_rejection` are left out: a schema cannot say "not a
/// guessable password" or "a reset token we issued", so they would fail on
/// the service being right.)
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance,\
                      ignored_auth,use_after_free,unsupported_method";

/// Warnings that would make a green run mean nothing: the Bearer token never
/// worked (authenticated routes saw only 401s), or the rate limiter
/// answered instead of the routes.
const CONFIG: &str = r#"
[warnings]
fail-on = ["missing_auth", "rate_limited"]

# A refresh cookie works once (rotation), so a fixed one is bound to be
# answered 401 nearly every time: that is the route working.
[[operations]]
include-path = "/api/auth/refresh"
warnings = { fail-on = ["rate_limited"] }

# Likewise an mfa_token: only a sign-in to an account with an authenticator
# issues one, and the fuzzer's account has none, so 401 is the route working.
[[operations]]
include-path = "/api/auth/mfa/verify"
warnings = { fail-on = ["rate_limited"] }

# And a passkey ceremony: only register/options issues one, single use and
# answerable only by an authenticator, so 401 is the route working.
[[operations]]
include-path = "/api/auth/passkeys/register/verify"
warnings = { fail-on = ["rate_limited"] }
"#;

/// Operations whose success ends the fuzzer's own session (every access
/// token issued so far stops working). Each gets a run of its own on a fresh
/// sign-in after everything else has been fuzzed; its first success is
/// the OpenAPI example, the rest must be the documented 401s.
/// change-password comes last: it changes the password to its example.
/// Ending one session counts: the stateful phase follows the link from the
/// session list to `DELETE /api/auth/sessions/{id}` and ends the fuzzer's
/// own sign-in, after which every later request of the run got 401.
/// Likewise the admin actions that end a user's sessions: the stateful
/// phase follows the ids of GET /api/admin/users to them, the fuzzer's own
/// admin account included.
const SESSION_ENDERS: [&str; 5] = [
    "/api/auth/sessions/{id}",
    "/api/auth/logout-all",
    "/api/admin/users/{id}/sessions/revoke",
    "/api/admin/users/{id}/mfa-reset",
    "/api/auth/change-password",
];

fn schemathesis() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis");
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/setup-test-env.sh` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The service, killed when the test ends however it ends.
struct Service {
    child: Child,
    log: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The service's environment: a fresh SQLite database, secrets and outbox
/// under the working directory.
fn service_command(dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("PORT", port.to_string().as_str()),
            ("DATA_DIR", "data"),
            // The fuzzer sends thousands of requests a minute from one IP;
            // 429s would answer in place of the routes under test.
            ("RATE_LIMIT_AUTH_PER_MIN", "1000000"),
            ("RATE_LIMIT_GLOBAL_PER_MIN", "1000000"),
            // Likewise the per-email lockout: the examples fail sign-ins as
            // the fuzzer's own user thousands of times.
            ("LOGIN_MAX_FAILURES", "1000000"),
            // The fuzzer replays one refresh cookie: inside the grace it
            // gets siblings; after it, reuse detection would end every
            // access token of the user, the fuzzer's Bearer token included.
            ("REFRESH_REUSE_GRACE", "60s"),
            // Set but empty: no role must have a second factor, so the
            // fuzzer's admin signs in with the password (the enrolment
            // gate has its own tests, tests/mfa_policy.rs).
            ("MFA_REQUIRED_ROLES", ""),
            ("RUST_LOG", "warn"),
        ]);
    cmd
}

fn start(dir: &Path, port: u16) -> Service {
    let log = dir.join("service.log");
    let out = File::create(&log).unwrap();
    let child = service_command(dir, port)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    Service { child, log }
}

async fn wait_healthy(base: &str, service: &mut Service) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(res) = reqwest::get(format!("{base}/health")).await {
            assert_eq!(res.status(), 200);
            return;
        }
        assert!(
            service.child.try_wait().unwrap().is_none(),
            "the binary exited early:\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the binary never became healthy:\n{}", service.log_tail());
}

/// Registers `email` and makes it an admin (CLI `user set-role`), so the
/// admin routes answer the fuzzer with more than 403.
async fn admin_account(base: &str, dir: &Path, port: u16, email: &str) {
    let res = reqwest::Client::new()
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"name": "Dr Jane Smith", "email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let promoted = service_command(dir, port)
        .args(["user", "set-role", email, "admin"])
        .output()
        .unwrap();
    assert!(promoted.status.success(), "{promoted:?}");
}

/// A fresh sign-in of `email`: (access token, `refresh_token=...` cookie
/// pair).
async fn sign_in(base: &str, email: &str) -> (String, String) {
    let res = reqwest::Client::new()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("refresh_token="))
        .and_then(|v| v.split(';').next())
        .expect("login sets the refresh cookie")
        .to_owned();
    let body: serde_json::Value = res.json().await.unwrap();
    (body["access_token"].as_str().unwrap().to_owned(), cookie)
}

/// Runs schemathesis with the given operation filter and credentials.
fn fuzz(dir: &Path, base: &str, filter: &[&str], access: &str, cookie: &str) -> Output {
    let examples = std::env::var("FUZZ_EXAMPLES").unwrap_or_else(|_| "100".into());
    let mut cmd = Command::new(schemathesis());
    // Its caches and reports land in the temp dir, not the repository.
    cmd.current_dir(dir)
        .args(["--config-file", "schemathesis.toml", "--no-color", "run"])
        .arg(format!("{base}/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples])
        .args(["--workers", "2"])
        .args(["--request-timeout", "30"])
        // Generation-speed health checks depend on how busy the machine is,
        // not on the API.
        .args(["--suppress-health-check", "all"])
        .args(["--generation-database", "none"])
        .arg("--continue-on-failure")
        .args(filter)
        .args(["--header", &format!("Authorization: Bearer {access}")])
        .args(["--header", &format!("Cookie: {cookie}")]);
    if let Ok(seed) = std::env::var("FUZZ_SEED") {
        cmd.args(["--seed", &seed]);
    }
    cmd.output().expect("schemathesis runs")
}

fn assert_passed(what: &str, output: &Output, service: &Service) {
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    println!("{what}:\n{text}");
    assert!(
        output.status.success(),
        "schemathesis found problems ({what}); its report is above.\n\
         Service log (last lines):\n{}",
        service.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_survives_schemathesis() {
    let st = schemathesis();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("schemathesis.toml"), CONFIG).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut service = start(dir.path(), port);
    wait_healthy(&base, &mut service).await;
    assert!(st.exists());

    admin_account(&base, dir.path(), port, EMAIL).await;

    // Everything else first. The Bearer token and the refresh cookie come
    // from different sign-ins, so refreshing (or logging out) with the
    // cookie does not end the token's session.
    let (access, _) = sign_in(&base, EMAIL).await;
    let (_, cookie) = sign_in(&base, EMAIL).await;
    let started = Instant::now();
    let mut filter: Vec<&str> = Vec::new();
    for path in SESSION_ENDERS {
        filter.extend(["--exclude-path", path]);
    }
    let output = fuzz(dir.path(), &base, &filter, &access, &cookie);
    assert_passed("every operation but the session enders", &output, &service);

    for (run, path) in SESSION_ENDERS.into_iter().enumerate() {
        // An admin account of its own: the main run's stateful phase
        // follows the ids GET /api/admin/users lists to the admin actions,
        // so once it has promoted another account it may demote, disable
        // or even erase the fuzzer's first one (seen: every admin route
        // answering 403, then the sign-in itself refused).
        let email = format!("ender{run}@example.com");
        admin_account(&base, dir.path(), port, &email).await;
        let (access, cookie) = sign_in(&base, &email).await;
        let output = fuzz(
            dir.path(),
            &base,
            &["--include-path", path],
            &access,
            &cookie,
        );
        assert_passed(path, &output, &service);
    }
    println!("fuzzing took {:?}", started.elapsed());
    assert!(
        service.child.try_wait().unwrap().is_none(),
        "the service died during fuzzing:\n{}",
        service.log_tail()
    );
}
