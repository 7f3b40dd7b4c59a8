//! Access tokens verified by libraries nobody here wrote (issue 20), from
//! the running binary's `/.well-known/jwks.json` over HTTP: PyJWT's `PyJWKClient`
//! (Python) and the `jose` package's `createRemoteJWKSet` (Node), as a
//! clinic's resource servers would use them. Before and after a rotation
//! both take the old and the new token; once the old key is pruned, a
//! token it signed (not expired) is refused for want of its key.
//!
//! PyJWT lives in `.venv` (`scripts/setup-test-env.sh`), jose in
//! `node_modules` (`npm ci`, `scripts/setup-browser.sh`); scripts/test.sh
//! installs both.

#[path = "support/net.rs"]
mod net;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clinic_auth::clock::TestClock;
use clinic_auth::config::Config;
use clinic_auth::domain::mfa::MfaKey;
use clinic_auth::domain::signing_key::AccessAlgorithm;
use clinic_auth::services::key_rotation::KeyRotation;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_clinic-auth");
const PASSWORD: &str = "Str0ng!Pass123";
const REFRESH_SECRET: &str = "test-refresh-secret-0123456789abcdef012345678";

const MFA_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const ISSUER: &str = "http://localhost:8000";
const AUDIENCE: &str = "Clinic Auth";

/// Prints the verified `sub`, or `REFUSED <error class>: <message>`.
const PYTHON: &str = r#"
import sys, jwt
url, token, issuer, audience = sys.argv[1:5]
try:
    client = jwt.PyJWKClient(url)
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["ES256", "EdDSA"],
                        issuer=issuer, audience=audience,
                        options={"require": ["exp", "iat", "sub", "iss", "aud"]})
    assert claims["typ"] == "access", claims
    print(claims["sub"])
except (jwt.PyJWTError, jwt.PyJWKClientError) as e:
    print("REFUSED", type(e).__name__ + ":", e)
"#;

/// The same with jose.
const NODE: &str = r#"
import { createRemoteJWKSet, jwtVerify } from "jose";
const [url, token, issuer, audience] = process.argv.slice(1);
try {
  const jwks = createRemoteJWKSet(new URL(url));
  const { payload } = await jwtVerify(token, jwks, {
    issuer, audience, algorithms: ["ES256", "EdDSA"], typ: "JWT",
  });
  if (payload.typ !== "access") throw new Error("typ " + payload.typ);
  console.log(payload.sub);
} catch (e) {
  console.log("REFUSED", e.code ?? e.name, e.message);
}
"#;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let path = repo().join(".venv/bin/python");
    let ok = path.exists()
        && Command::new(&path)
            .args(["-c", "import jwt, cryptography"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} has no PyJWT/cryptography: run `bash scripts/setup-test-env.sh` (scripts/test.sh does)",
        path.display()
    );
    path
}

fn node() {
    assert!(
        repo().join("node_modules/jose/package.json").exists(),
        "node_modules/jose is missing: run `npm ci` (scripts/setup-browser.sh; scripts/test.sh does)"
    );
}

fn printed(output: Output) -> String {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The binary in `dir` on `port` (development settings: ES256, SQLite in
/// `dir/data`), killed when dropped.
struct Service {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", "data")
        .env("JWT_REFRESH_SECRET", REFRESH_SECRET)
        .env("MFA_ENCRYPTION_KEY", MFA_KEY)
        .env("MFA_REQUIRED_ROLES", "")
        // The issuer the verifiers are told to expect.
        .env("APP_URL", ISSUER)
        .env("RUST_LOG", "warn");
    cmd
}

impl Service {
    async fn start(dir: &Path) -> Self {
        let port = net::free_port();
        let child = command(dir)
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut service = Self {
            child,
            dir: dir.to_owned(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(service.url("/health")).await.is_err() {
            assert!(Instant::now() < deadline, "the binary never became healthy");
            assert!(
                service.child.try_wait().unwrap().is_none(),
                "the binary exited early"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        service
    }

    async fn restart(self) -> Self {
        let dir = self.dir.clone();
        drop(self);
        Self::start(&dir).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn login(&self) -> String {
        let res = self
            .post(
                "/api/auth/login",
                json!({"email": "jane@example.com", "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }
}

/// What each library says about `token`: (PyJWT, jose).
async fn verdicts(service: &Service, token: &str) -> (String, String) {
    let url = service.url("/.well-known/jwks.json");
    let args = [
        url,
        token.to_owned(),
        ISSUER.to_owned(),
        AUDIENCE.to_owned(),
    ];
    let py_args = args.clone();
    let py = tokio::task::spawn_blocking(move || {
        printed(
            Command::new(python())
                .arg("-c")
                .arg(PYTHON)
                .args(&py_args)
                .output()
                .unwrap(),
        )
    });
    let js = tokio::task::spawn_blocking(move || {
        node();
        // `-e` resolves "jose" from the working directory's node_modules.
        printed(
            Command::new("node")
                .current_dir(repo())
                .args(["--input-type=module", "-e", NODE])
                .args(&args)
                .output()
                .expect("node runs (apt-get install nodejs)"),
        )
    });
    (py.await.unwrap(), js.await.unwrap())
}

async fn both_accept(service: &Service, token: &str, sub: &str) {
    let (py, js) = verdicts(service, token).await;
    assert_eq!(py, sub, "PyJWT");
    assert_eq!(js, sub, "jose");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_and_jose_verify_tokens_across_a_rotation_and_refuse_a_pruned_key() {
    python();
    node();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path()).await;
    let res = service
        .post(
            "/api/auth/register",
            json!({"name": "Dr Jane Smith", "email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let jane: Value = res.json().await.unwrap();
    let sub = jane["id"].as_str().unwrap().to_owned();
    let old_token = service.login().await;
    both_accept(&service, &old_token, &sub).await;

    // `clinic-auth keys rotate`, then the service signs with the new key
    // (here after a restart; running, within its minute's reload).
    let rotated = command(dir.path())
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{rotated:?}");
    let service = service.restart().await;
    let new_token = service.login().await;
    let (old_kid, new_kid) = (
        jsonwebtoken::decode_header(&old_token)
            .unwrap()
            .kid
            .unwrap(),
        jsonwebtoken::decode_header(&new_token)
            .unwrap()
            .kid
            .unwrap(),
    );
    assert_ne!(old_kid, new_kid);
    assert!(String::from_utf8_lossy(&rotated.stdout).contains(&new_kid));
    both_accept(&service, &old_token, &sub).await;
    both_accept(&service, &new_token, &sub).await;

    // Pruned (what `keys prune` does) with a clock past the old key's
    // tokens; by the real clock the libraries use, the old token is still
    // unexpired: only the missing key refuses it.
    drop(service);
    let config = Config::from_pairs(&[(
        "DATABASE_URL",
        format!("sqlite://{}/data/clinic-auth.db", dir.path().display()).as_str(),
    )])
    .unwrap();
    let clock = Arc::new(TestClock::new());
    let rotation = KeyRotation::new(
        clinic_auth::app::open_store(&config).await.unwrap(),
        MfaKey::from_hex(MFA_KEY).unwrap(),
        AccessAlgorithm::Es256,
        Duration::from_secs(15 * 60),
        clock.clone(),
    );
    clock.advance(rotation.keep_retired() + Duration::from_secs(1));
    assert_eq!(rotation.prune().await.unwrap(), [old_kid.as_str()]);
    drop(rotation);
    let service = Service::start(dir.path()).await;
    let (py, js) = verdicts(&service, &old_token).await;
    assert!(
        py.starts_with("REFUSED PyJWKClientError: Unable to find a signing key"),
        "PyJWT: {py}"
    );
    assert!(
        js.starts_with("REFUSED ERR_JWKS_NO_MATCHING_KEY"),
        "jose: {js}"
    );
    // The current key still works for both.
    both_accept(&service, &new_token, &sub).await;
}
