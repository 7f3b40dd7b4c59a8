//! Access tokens verified by libraries nobody here wrote (issue 20), from
//! the service's `/.well-known/jwks.json` over HTTP: PyJWT's `PyJWKClient`
//! (Python) and the `jose` package's `createRemoteJWKSet` (Node), as a
//! clinic's resource servers would use them. Before and after a rotation
//! both take the old and the new token; once the old key is pruned, a
//! token it signed (not expired) is refused for want of its key.
//!
//! PyJWT lives in `.venv` (`scripts/setup-test-env.sh`), jose in
//! `node_modules` (`npm ci`, `scripts/setup-browser.sh`); scripts/test.sh
//! installs both.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use clinic_auth::domain::mfa::MfaKey;
use clinic_auth::domain::signing_key::AccessAlgorithm;
use clinic_auth::services::key_rotation::KeyRotation;
use common::{Backend, TestApp, PASSWORD};

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

/// What each library says about `token`: (PyJWT, jose).
async fn verdicts(app: &TestApp, token: &str) -> (String, String) {
    let url = app.url("/.well-known/jwks.json");
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

async fn both_accept(app: &TestApp, token: &str, sub: &str) {
    let (py, js) = verdicts(app, token).await;
    assert_eq!(py, sub, "PyJWT");
    assert_eq!(js, sub, "jose");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_and_jose_verify_tokens_across_a_rotation_and_refuse_a_pruned_key() {
    python();
    node();
    let mut app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("JWT_ACCESS_SECRET", ""), ("MFA_ENCRYPTION_KEY", MFA_KEY)],
    )
    .await;
    let jane = app.register("jane@example.com").await;
    let sub = jane["id"].as_str().unwrap().to_owned();
    let (old_token, _) = app.login("jane@example.com", PASSWORD).await;
    both_accept(&app, &old_token, &sub).await;

    let rotation = KeyRotation::new(
        app.store().await,
        MfaKey::from_hex(MFA_KEY).unwrap(),
        AccessAlgorithm::Es256,
        Duration::from_secs(15 * 60),
        app.clock.clone(),
    );
    let new_kid = rotation.rotate().await.unwrap();
    app.restart().await;
    let (new_token, _) = app.login("jane@example.com", PASSWORD).await;
    assert_eq!(
        jsonwebtoken::decode_header(&new_token).unwrap().kid,
        Some(new_kid)
    );
    both_accept(&app, &old_token, &sub).await;
    both_accept(&app, &new_token, &sub).await;

    // Pruned once its tokens are over by the service's clock; the
    // libraries judge `exp` by the real one, so to them the old token is
    // still unexpired: only the missing key refuses it.
    app.clock
        .advance(rotation.keep_retired() + Duration::from_secs(1));
    assert_eq!(rotation.prune().await.unwrap().len(), 1);
    app.restart().await;
    let (py, js) = verdicts(&app, &old_token).await;
    assert!(
        py.starts_with("REFUSED PyJWKClientError: Unable to find a signing key"),
        "PyJWT: {py}"
    );
    assert!(
        js.starts_with("REFUSED ERR_JWKS_NO_MATCHING_KEY"),
        "jose: {js}"
    );
    // The current key still works for both.
    let (py, js) = verdicts(&app, &new_token).await;
    assert_eq!((py.as_str(), js.as_str()), (sub.as_str(), sub.as_str()));
}
