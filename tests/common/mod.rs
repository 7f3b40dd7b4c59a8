//! Test harness: starts the real app on 127.0.0.1:0 with a fresh database
//! in a temp dir, and helpers to drive it over HTTP.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clinic_auth::app::App;
use clinic_auth::clock::TestClock;
use clinic_auth::config::Config;
use reqwest::header::HeaderMap;
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "Str0ng!Pass123";
pub const ACCESS_SECRET: &str = "test-access-secret-0123456789abcdef0123456789";
pub const REFRESH_SECRET: &str = "test-refresh-secret-0123456789abcdef012345678";

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    /// nx-27017 over the wire (or a real server when TEST_MONGO_URI is set).
    Mongo,
}

pub mod fixtures;
#[path = "../support/mongo_server.rs"]
pub mod mongo_server;
#[path = "../support/net.rs"]
pub mod net;
pub mod portal;
#[path = "../support/smtp_server.rs"]
pub mod smtp_server;

/// Defines each listed `async fn name(backend: Backend)` as a test once per
/// backend, so every backend runs the very same suite.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Mongo).await
                }
            )*
        }
    };
}

/// A running app plus what a test needs to poke at it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: Client,
    pub dir: Arc<tempfile::TempDir>,
    pub backend: Backend,
    /// The app's clock: tests move it forward instead of sleeping through
    /// a TTL. It survives `restart`, as time would.
    pub clock: Arc<TestClock>,
    pairs: Vec<(String, String)>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    audit: Option<clinic_auth::services::Audit>,
    outbox: Option<Arc<clinic_auth::services::outbox::Outbox>>,
}

/// A client that keeps no cookies: tests set the Cookie header themselves
/// so they can present exactly the token they mean.
pub fn plain_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, &[]).await
    }

    /// `spawn_with`, then registers jane@example.com (password `PASSWORD`):
    /// the start of most single-user tests.
    pub async fn with_jane(backend: Backend, overrides: &[(&str, &str)]) -> Self {
        let app = Self::spawn_with(backend, overrides).await;
        app.register("jane@example.com").await;
        app
    }

    /// Starts an app; `overrides` replace or add configuration variables
    /// (an empty value removes a default).
    pub async fn spawn_with(backend: Backend, overrides: &[(&str, &str)]) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut pairs: Vec<(String, String)> = vec![
            ("HOST".into(), "127.0.0.1".into()),
            ("PORT".into(), "0".into()),
            ("APP_URL".into(), "http://localhost:8000".into()),
            ("JWT_ACCESS_SECRET".into(), ACCESS_SECRET.into()),
            ("JWT_REFRESH_SECRET".into(), REFRESH_SECRET.into()),
            (
                "MAIL_OUTBOX_DIR".into(),
                dir.path().join("outbox").display().to_string(),
            ),
            (
                "DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            // Generous limits: only the rate-limit tests lower them.
            ("RATE_LIMIT_AUTH_PER_MIN".into(), "100000".into()),
            ("RATE_LIMIT_GLOBAL_PER_MIN".into(), "100000".into()),
            // Set but blank: no role must have a second factor, so the
            // suites' admins sign in with the password alone. The policy
            // (default `admin`) is tested in mfa_policy.rs.
            ("MFA_REQUIRED_ROLES".into(), " ".into()),
        ];
        pairs.push(database_pair(backend, dir.path()).await);
        for (key, value) in overrides {
            pairs.retain(|(k, _)| k != key);
            if !value.is_empty() {
                pairs.push(((*key).into(), (*value).into()));
            }
        }
        let mut app = Self {
            addr: "127.0.0.1:0".parse().unwrap(),
            base: String::new(),
            client: plain_client(),
            dir,
            backend,
            clock: Arc::new(TestClock::new()),
            pairs,
            shutdown: None,
            handle: None,
            audit: None,
            outbox: None,
        };
        app.start().await;
        app
    }

    async fn start(&mut self) {
        let refs: Vec<(&str, &str)> = self
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let config = Config::from_pairs(&refs).expect("test configuration is valid");
        let app = App::build_with_clock(config, self.clock.clone())
            .await
            .expect("app builds");
        self.addr = app.local_addr();
        self.audit = Some(app.audit());
        self.outbox = Some(app.outbox());
        self.base = format!("http://{}", self.addr);
        let (tx, rx) = oneshot::channel();
        self.shutdown = Some(tx);
        self.handle = Some(tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        })));
    }

    /// Restarts on the same data with `key` set to `value` (blank sets it
    /// blank), as an operator changing one setting would.
    pub async fn restart_with(&mut self, key: &str, value: &str) {
        self.pairs.retain(|(k, _)| k != key);
        self.pairs.push((key.into(), value.into()));
        self.restart().await;
    }

    /// Stops the app gracefully and starts it again on the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn register(&self, email: &str) -> Value {
        let res = self
            .post_json(
                "/api/auth/register",
                json!({"name": "Dr Jane Smith", "email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "register {email}");
        res.json().await.unwrap()
    }

    /// Logs in; returns (access token, refresh token from the cookie).
    pub async fn login(&self, email: &str, password: &str) -> (String, String) {
        let res = self
            .post_json(
                "/api/auth/login",
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK, "login {email}");
        let refresh = refresh_cookie(res.headers()).expect("login sets the refresh cookie");
        let body: Value = res.json().await.unwrap();
        (body["access_token"].as_str().unwrap().to_owned(), refresh)
    }

    /// POST `path` with `token` as the refresh cookie.
    async fn post_with_refresh_cookie(&self, path: &str, token: &str) -> Response {
        self.client
            .post(self.url(path))
            .header("cookie", format!("refresh_token={token}"))
            .send()
            .await
            .unwrap()
    }

    pub async fn refresh_with(&self, token: &str) -> Response {
        self.post_with_refresh_cookie("/api/auth/refresh", token)
            .await
    }

    /// Expects `token` to be refused by POST /api/auth/refresh.
    pub async fn refresh_refused(&self, token: &str) {
        expect_unauthorized(self.refresh_with(token).await, "invalid_refresh_token").await;
    }

    /// Expects the access token to be refused by GET /api/auth/me.
    pub async fn access_refused(&self, access: &str) {
        expect_unauthorized(self.me(access).await, "invalid_token").await;
    }

    /// GET /api/auth/sessions with `access`, expecting 200.
    pub async fn sessions(&self, access: &str) -> Vec<Value> {
        let res = self
            .client
            .get(self.url("/api/auth/sessions"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "GET /api/auth/sessions");
        res.json().await.unwrap()
    }

    /// Asks for a password reset for `email` (an account with no reset
    /// link out yet) and returns the token from the emailed link.
    pub async fn reset_token_for(&self, email: &str) -> String {
        let res = self
            .post_json("/api/auth/forgot-password", json!({"email": email}))
            .await;
        assert_eq!(
            res.status(),
            StatusCode::ACCEPTED,
            "forgot-password {email}"
        );
        let emails = wait_for_reset_emails(&self.outbox(), 1).await;
        emails
            .iter()
            .rev()
            .find(|e| e.to.contains(email))
            .expect("a reset email to that address")
            .reset_token()
    }

    /// POST /api/auth/reset-password with the emailed token.
    pub async fn reset_password(&self, token: &str, password: &str) -> Response {
        self.post_json(
            "/api/auth/reset-password",
            json!({"token": token, "password": password}),
        )
        .await
    }

    /// POST /api/auth/logout with `token` as the refresh cookie.
    pub async fn logout_with(&self, token: &str) -> Response {
        self.post_with_refresh_cookie("/api/auth/logout", token)
            .await
    }

    pub async fn me(&self, access: &str) -> Response {
        self.client
            .get(self.url("/api/auth/me"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
    }

    /// A second handle on the app's own database, for tests that set up or
    /// inspect state the API cannot reach.
    pub async fn store(&self) -> Arc<dyn clinic_auth::storage::Store> {
        let refs: Vec<(&str, &str)> = self
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let config = Config::from_pairs(&refs).unwrap();
        clinic_auth::app::open_store(&config).await.unwrap()
    }

    /// Waits until every audit event recorded so far is in the database.
    pub async fn flush_audit(&self) {
        if let Some(audit) = &self.audit {
            audit.flush().await;
        }
    }

    /// The audit records of `event`, newest first, as the admin API lists
    /// them to `admin` (an administrator's access token), once every record
    /// written so far is stored.
    pub async fn audit_events(&self, admin: &str, event: &str) -> Vec<Value> {
        self.flush_audit().await;
        let res = self
            .client
            .get(self.url(&format!("/api/admin/audit?event={event}")))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "the admin audit API");
        let page: Value = res.json().await.unwrap();
        page["events"].as_array().expect("events").clone()
    }

    /// Waits until the email outbox has nothing left to do now: every email
    /// requested so far is queued and sent (or waits for a retry, or was
    /// dropped). Lets a test check that an email was *not* sent without
    /// sleeping.
    pub async fn settle_email(&self) {
        if let Some(outbox) = &self.outbox {
            outbox.settled().await;
        }
    }

    /// The variable (`DATABASE_URL` or `MONGO_URI`) and value naming this
    /// app's database, e.g. to point the CLI binary at it.
    pub fn database_env(&self) -> (String, String) {
        self.pairs
            .iter()
            .find(|(k, _)| k == "DATABASE_URL" || k == "MONGO_URI")
            .cloned()
            .expect("a database is configured")
    }

    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The value of the refresh cookie in a response, if it sets one.
/// `method path` with `token` as the Bearer token and `body` as JSON.
pub async fn send_bearer(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

/// A JWT's claims, read without checking it (what a client can see).
pub fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    set_cookie(headers, "refresh_token").map(|(value, _)| value)
}

/// (value, full header line) of the named cookie set by a response.
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers.get_all("set-cookie").iter().find_map(|v| {
        let line = v.to_str().ok()?;
        let (pair, _) = line.split_once(';').unwrap_or((line, ""));
        let (n, value) = pair.split_once('=')?;
        (n.trim() == name).then(|| (value.to_owned(), line.to_owned()))
    })
}

/// Asserts the API error shape and returns the body.
/// A 401 in the documented error format, with `code`.
pub async fn expect_unauthorized(res: Response, code: &str) -> Value {
    expect_error(res, StatusCode::UNAUTHORIZED, code).await
}

pub async fn expect_error(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "status for expected {code}");
    assert!(res.headers().get("x-request-id").is_some());
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// Emails in the outbox, oldest first, waiting up to 5 s for `count`.
pub async fn wait_for_emails(dir: &Path, count: usize) -> Vec<Email> {
    for _ in 0..100 {
        let emails = read_emails(dir);
        if emails.len() >= count {
            return emails;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {count} emails in {}", dir.display());
}

/// The password-reset emails only, waiting up to 5 s for `count`.
pub async fn wait_for_reset_emails(dir: &Path, count: usize) -> Vec<Email> {
    wait_for_subject(dir, "Reset your", count).await
}

/// Subject of the verification email every registration sends.
pub const VERIFY_SUBJECT: &str = "Confirm your email address";

/// Emails whose subject starts with `prefix`, oldest first.
pub fn read_subject(dir: &Path, prefix: &str) -> Vec<Email> {
    read_emails(dir)
        .into_iter()
        .filter(|e| e.subject.starts_with(prefix))
        .collect()
}

/// Emails whose subject starts with `prefix`, waiting up to 5 s for `count`.
pub async fn wait_for_subject(dir: &Path, prefix: &str, count: usize) -> Vec<Email> {
    for _ in 0..100 {
        let emails = read_subject(dir, prefix);
        if emails.len() >= count {
            return emails;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "expected {count} emails starting {prefix:?} in {}",
        dir.display()
    );
}

pub fn read_emails(dir: &Path) -> Vec<Email> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| Email::parse(&std::fs::read(p).unwrap()))
        .collect()
}

/// A decoded email from the outbox.
#[derive(Debug)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Email {
    fn parse(raw: &[u8]) -> Self {
        use mailparse::MailHeaderMap;
        let mail = mailparse::parse_mail(raw).unwrap();
        let header = |name: &str| mail.headers.get_first_value(name).unwrap_or_default();
        let mut text = String::new();
        let mut html = String::new();
        for part in &mail.subparts {
            match part.ctype.mimetype.as_str() {
                "text/plain" => text = part.get_body().unwrap(),
                "text/html" => html = part.get_body().unwrap(),
                _ => {}
            }
        }
        Email {
            to: header("To"),
            subject: header("Subject"),
            text,
            html,
        }
    }

    /// The token in the reset link, checking the link's shape on the way.
    pub fn reset_token(&self) -> String {
        let marker = "http://localhost:8000/reset-password?token=";
        let start = self
            .text
            .find(marker)
            .expect("text part has the reset link")
            + marker.len();
        let token: String = self.text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        assert!(
            self.html.contains(&format!("{marker}{token}")),
            "HTML part has the same link"
        );
        token
    }
}

/// A fresh, empty store of the given backend, opened the way the app opens
/// it (the temp dir lives as long as the returned guard).
pub async fn fresh_store(
    backend: Backend,
) -> (Arc<dyn clinic_auth::storage::Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (key, value) = database_pair(backend, dir.path()).await;
    let config = Config::from_pairs(&[(key.as_str(), value.as_str())]).unwrap();
    (clinic_auth::app::open_store(&config).await.unwrap(), dir)
}

/// The configuration variable that points a fresh app at a fresh database.
pub async fn database_pair(backend: Backend, dir: &Path) -> (String, String) {
    match backend {
        Backend::Sqlite => (
            "DATABASE_URL".into(),
            format!("sqlite://{}", dir.join("data/clinic-auth.db").display()),
        ),
        Backend::Mongo => ("MONGO_URI".into(), mongo_server::test_mongo_uri().await),
    }
}

/// Runs `n` calls of `attempt` at once, each on a task of its own, and
/// counts those that answered true: the winners of a race that must have
/// exactly one (a code presented by several requests at the same moment).
pub async fn winners<F, Fut>(n: usize, attempt: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(attempt())).collect();
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    wins
}

/// Registers `email`, makes it an administrator in the store and signs it
/// in: its id and a fresh access token (a recent sign-in, for step-up).
pub async fn admin_in(app: &TestApp, email: &str) -> (String, String) {
    let user = app.register(email).await;
    let id = user["id"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now();
    assert!(app
        .store()
        .await
        .set_user_role(
            &clinic_auth::domain::UserId::new(id.clone()),
            &clinic_auth::domain::Role::admin(),
            now,
            now
        )
        .await
        .unwrap());
    let (access, _) = app.login(email, PASSWORD).await;
    (id, access)
}
