//! Access-token signing keys (issue 20), end to end: what
//! `/.well-known/jwks.json` publishes verifies the tokens the API issues
//! (checked with jsonwebtoken's own JWK support, as a Rust resource server
//! would), HS256 publishes nothing, and forged kids or algorithms are
//! refused.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clinic_auth::domain::signing_key::{encoding_key, AccessAlgorithm, GeneratedKey};
use common::{jwt_claims, Backend, TestApp, PASSWORD};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::StatusCode;
use serde_json::Value;

backend_tests!(
    the_jwks_verifies_a_fresh_es256_token,
    the_jwks_verifies_a_fresh_eddsa_token,
    hs256_publishes_no_key,
    forged_kids_and_swapped_algorithms_are_refused,
    rotation_signs_nobody_out_and_prune_removes_the_old_key,
    two_instances_agree_on_the_key_after_a_rotation,
    a_token_seen_before_still_expires_and_dies_with_its_key,
);

const BIN: &str = env!("CARGO_BIN_EXE_clinic-auth");
/// Given explicitly so that the test can open the stored keys, and two
/// instances share it.
const MFA_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// An app whose access tokens are signed with a key pair: the harness's
/// JWT_ACCESS_SECRET removed, so ES256 by default, or `alg` when given.
pub async fn keyed_app(backend: Backend, alg: Option<&str>) -> TestApp {
    let mut overrides = vec![("JWT_ACCESS_SECRET", ""), ("MFA_ENCRYPTION_KEY", MFA_KEY)];
    if let Some(alg) = alg {
        overrides.push(("JWT_ACCESS_ALGORITHM", alg));
    }
    let app = TestApp::spawn_with(backend, &overrides).await;
    app.register("jane@example.com").await;
    app
}

pub fn header_of(token: &str) -> Header {
    jsonwebtoken::decode_header(token).unwrap()
}

pub async fn jwks(app: &TestApp) -> JwkSet {
    let res = app.get("/.well-known/jwks.json").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["cache-control"].to_str().unwrap(),
        "public, max-age=300"
    );
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = res.json().await.unwrap();
    for key in body["keys"].as_array().unwrap() {
        // Public members only: no private `d` (EC, OKP) ever.
        let mut names: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        names.sort_unstable();
        let expected: &[&str] = if key["kty"] == "EC" {
            &["alg", "crv", "kid", "kty", "use", "x", "y"]
        } else {
            &["alg", "crv", "kid", "kty", "use", "x"]
        };
        assert_eq!(names, expected, "{key}");
        assert_eq!(key["use"], "sig");
    }
    serde_json::from_value(body).unwrap()
}

/// Verifies `token` as a resource server would: the key the header's kid
/// names in the JWKS, the algorithm that key names, issuer, audience.
pub fn verify_with_jwks(set: &JwkSet, token: &str) -> jsonwebtoken::errors::Result<Value> {
    let kid = header_of(token).kid.expect("a kid in the header");
    let jwk: &Jwk = set.find(&kid).expect("the kid is published");
    let alg = match jwk.common.key_algorithm.expect("the JWK names its alg") {
        jsonwebtoken::jwk::KeyAlgorithm::ES256 => Algorithm::ES256,
        jsonwebtoken::jwk::KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        other => panic!("unexpected algorithm {other:?}"),
    };
    let mut validation = Validation::new(alg);
    validation.set_issuer(&["http://localhost:8000"]);
    validation.set_audience(&["Clinic Auth"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk)?, &validation)
        .map(|data| data.claims)
}

async fn a_fresh_token_verifies_with_the_jwks(
    backend: Backend,
    alg: Option<&str>,
    expected: Algorithm,
) {
    let app = keyed_app(backend, alg).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let header = header_of(&access);
    assert_eq!(header.alg, expected);
    let set = jwks(&app).await;
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.keys[0].common.key_id, header.kid);
    let claims = verify_with_jwks(&set, &access).unwrap();
    assert_eq!(claims["typ"], "access");
    assert!(
        claims["sid"].is_string() && claims["auth_time"].is_i64(),
        "{claims}"
    );
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    // And the service itself takes it.
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    // The same key after a restart: it lives in the store.
    let mut app = app;
    app.restart().await;
    assert_eq!(jwks(&app).await.keys[0].common.key_id, header.kid);
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
}

async fn the_jwks_verifies_a_fresh_es256_token(backend: Backend) {
    a_fresh_token_verifies_with_the_jwks(backend, None, Algorithm::ES256).await;
}

async fn the_jwks_verifies_a_fresh_eddsa_token(backend: Backend) {
    a_fresh_token_verifies_with_the_jwks(backend, Some("EdDSA"), Algorithm::EdDSA).await;
}

/// The harness sets the original's JWT_ACCESS_SECRET and no algorithm:
/// tokens stay HS256, exactly as before, and the secret is not published.
async fn hs256_publishes_no_key(backend: Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let header = header_of(&access);
    assert_eq!((header.alg, header.kid), (Algorithm::HS256, None));
    let res = app.get("/.well-known/jwks.json").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), r#"{"keys":[]}"#);
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let op = &doc["paths"]["/.well-known/jwks.json"]["get"];
    assert_eq!(op["tags"], serde_json::json!(["keys"]), "{op}");
    assert!(op.get("security").is_none(), "public: {op}");
    // Still verifiable with the shared secret, as the original's consumers do.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&["Clinic Auth"]);
    jsonwebtoken::decode::<Value>(
        &access,
        &DecodingKey::from_secret(common::ACCESS_SECRET.as_bytes()),
        &validation,
    )
    .unwrap();
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

async fn forged_kids_and_swapped_algorithms_are_refused(backend: Backend) {
    let app = keyed_app(backend, None).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let claims = jwt_claims(&access);
    let kid = header_of(&access).kid.unwrap();
    let set = jwks(&app).await;
    let published = serde_json::to_value(set.find(&kid).unwrap()).unwrap();

    // A key of the attacker's own, under the real kid and under its own.
    let theirs = GeneratedKey::generate(AccessAlgorithm::Es256).unwrap();
    let their_key = encoding_key(AccessAlgorithm::Es256, &theirs.private_pkcs8).unwrap();
    for named in [kid.clone(), theirs.kid.clone()] {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(named);
        let forged = jsonwebtoken::encode(&header, &claims, &their_key).unwrap();
        app.access_refused(&forged).await;
    }
    // No kid at all.
    let unnamed =
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &their_key).unwrap();
    app.access_refused(&unnamed).await;

    // HS256 "signed" with what is public: the JWK's text, its x, the
    // uncompressed point.
    let x = URL_SAFE_NO_PAD
        .decode(published["x"].as_str().unwrap())
        .unwrap();
    let y = URL_SAFE_NO_PAD
        .decode(published["y"].as_str().unwrap())
        .unwrap();
    let point = [&[4u8][..], &x, &y].concat();
    for secret in [published.to_string().into_bytes(), x.clone(), point] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let swapped =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
        app.access_refused(&swapped).await;
    }

    // `none`, with the real kid and the real claims.
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid})),
        access.split('.').nth(1).unwrap()
    );
    app.access_refused(&none).await;
    // The real signature under a header that names another algorithm.
    let parts: Vec<&str> = access.split('.').collect();
    let relabelled = format!(
        "{}.{}.{}",
        b64(&serde_json::json!({"alg": "ES384", "typ": "JWT", "kid": kid})),
        parts[1],
        parts[2]
    );
    app.access_refused(&relabelled).await;
    // The genuine token still works.
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
}

/// Runs the real binary against `app`'s database, configured as an
/// operator's shell would be (no JWT_ACCESS_SECRET: ES256).
async fn run(app: &TestApp, args: &[&str]) -> std::process::Output {
    let (key, value) = app.database_env();
    let data_dir = app.dir.path().join("data");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        std::process::Command::new(BIN)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(key, value)
            .env("DATA_DIR", data_dir)
            .env("JWT_REFRESH_SECRET", common::REFRESH_SECRET)
            .env("MFA_ENCRYPTION_KEY", MFA_KEY)
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `clinic-auth keys rotate`: the new current key's kid.
async fn rotate(app: &TestApp) -> String {
    let rotated = stdout(&run(app, &["keys", "rotate"]).await);
    assert!(rotated.starts_with("new current signing key "), "{rotated}");
    rotated
        .trim_start_matches("new current signing key ")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn published_kids(set: &JwkSet) -> Vec<String> {
    set.keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect()
}

/// The stored private key of `kid` (PKCS#8), opened as the service does.
async fn private_key(app: &TestApp, kid: &str) -> Vec<u8> {
    let record = app
        .store()
        .await
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.kid == kid)
        .expect("the key is stored");
    clinic_auth::domain::mfa::MfaKey::from_hex(MFA_KEY)
        .unwrap()
        .open_signing_key(&record.private_sealed, kid)
        .unwrap()
        .to_vec()
}

/// `claims` signed with `der` under `kid`, with a fresh `exp` by the
/// app's clock: what only the holder of that key could make.
fn signed_with(app: &TestApp, der: &[u8], kid: &str, claims: &Value) -> String {
    use clinic_auth::clock::Clock;
    let now = app.clock.now().timestamp();
    let mut claims = claims.clone();
    claims["iat"] = now.into();
    claims["exp"] = (now + 600).into();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &encoding_key(AccessAlgorithm::Es256, der).unwrap(),
    )
    .unwrap()
}

async fn rotation_signs_nobody_out_and_prune_removes_the_old_key(backend: Backend) {
    let mut app = keyed_app(backend, None).await;
    let (old_token, _) = app.login("jane@example.com", PASSWORD).await;
    let old_kid = header_of(&old_token).kid.unwrap();

    let new_kid = rotate(&app).await;
    assert_ne!(new_kid, old_kid);
    // Recorded as an operator action, with the kids.
    let records = app
        .store()
        .await
        .query_audit_events(&clinic_auth::storage::AuditQuery {
            user_id: None,
            event: Some(clinic_auth::domain::audit::AuditEvent::SigningKeyRotated),
            since: None,
            until: None,
            before_seq: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].detail.as_deref(),
        Some(format!("by=cli kid={new_kid} alg=ES256 retired=1").as_str())
    );
    assert_eq!(
        records[0].user_agent.as_deref(),
        Some("clinic-auth keys rotate")
    );
    let listed = stdout(&run(&app, &["keys", "list"]).await);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines[0].starts_with(&old_kid) && lines[0].ends_with("retired"),
        "{listed}"
    );
    assert!(
        lines[1].starts_with(&new_kid) && lines[1].ends_with("current"),
        "{listed}"
    );
    assert!(lines[1].contains("ES256"), "{listed}");

    // The service picks the new key up (here: at its restart; running, at
    // its next minute's reload or the first token that names it).
    app.restart().await;
    let (new_token, _) = app.login("jane@example.com", PASSWORD).await;
    assert_eq!(header_of(&new_token).kid.as_deref(), Some(new_kid.as_str()));
    let set = jwks(&app).await;
    assert_eq!(published_kids(&set), [new_kid.clone(), old_kid.clone()]);
    for token in [&old_token, &new_token] {
        verify_with_jwks(&set, token).unwrap();
        assert_eq!(app.me(token).await.status(), StatusCode::OK);
    }
    // Nothing to prune while the old key's tokens may be valid.
    assert_eq!(
        stdout(&run(&app, &["keys", "prune"]).await),
        "no signing key to prune\n"
    );

    // A token only the old key could sign is still taken before pruning...
    let claims = jwt_claims(&new_token);
    let old_der = private_key(&app, &old_kid).await;
    let by_old_key = signed_with(&app, &old_der, &old_kid, &claims);
    assert_eq!(app.me(&by_old_key).await.status(), StatusCode::OK);
    // ... and refused once the key is pruned: JWT_ACCESS_EXPIRES (15m),
    // the reload minute and the leeway after the rotation.
    let rotation = clinic_auth::services::key_rotation::KeyRotation::new(
        app.store().await,
        clinic_auth::domain::mfa::MfaKey::from_hex(MFA_KEY).unwrap(),
        AccessAlgorithm::Es256,
        std::time::Duration::from_secs(15 * 60),
        app.clock.clone(),
    );
    app.clock
        .advance(std::time::Duration::from_secs(15 * 60 + 60));
    assert!(
        rotation.prune().await.unwrap().is_empty(),
        "not before the leeway"
    );
    app.clock.advance(std::time::Duration::from_secs(10));
    assert_eq!(rotation.prune().await.unwrap(), [old_kid.as_str()]);
    app.restart().await;
    let set = jwks(&app).await;
    assert_eq!(published_kids(&set), [new_kid.as_str()]);
    assert!(set.find(&old_kid).is_none());
    // The session is still alive, the claims fresh: only the key is gone.
    let by_pruned_key = signed_with(&app, &old_der, &old_kid, &claims);
    app.access_refused(&by_pruned_key).await;
    let fresh = app.login("jane@example.com", PASSWORD).await.0;
    assert_eq!(header_of(&fresh).kid.as_deref(), Some(new_kid.as_str()));
}

/// The Bearer path remembers tokens whose signature it checked
/// (`services/verified_tokens.rs`); what it remembers must never outlive
/// what makes the token good. A token used again is still refused once the
/// clock passes its `exp`, and once its key is deleted from the store (the
/// leaked-key procedure in SECURITY.md) and the instance has reloaded.
async fn a_token_seen_before_still_expires_and_dies_with_its_key(backend: Backend) {
    let app = keyed_app(backend, None).await;
    let (token, _) = app.login("jane@example.com", PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(app.me(&token).await.status(), StatusCode::OK);
    }
    // 15 minutes and the 5 s leeway later (the sign-in itself lives on).
    app.clock
        .advance(std::time::Duration::from_secs(15 * 60 + 6));
    let refused = common::expect_unauthorized(app.me(&token).await, "invalid_token").await;
    assert_eq!(refused["error"]["message"], "The access token has expired.");

    let (token, _) = app.login("jane@example.com", PASSWORD).await;
    assert_eq!(app.me(&token).await.status(), StatusCode::OK);
    let old_kid = header_of(&token).kid.unwrap();
    // The key leaks: a new one is made and the old row deleted at once.
    let new_kid = rotate(&app).await;
    use clinic_auth::clock::Clock;
    let removed = app
        .store()
        .await
        .delete_signing_keys_retired_before(app.clock.now() + chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(removed, [old_kid]);
    // Until this instance reloads, the old key is still loaded and its
    // token taken. A token naming the new kid makes it reload now (as its
    // minute's reload would).
    assert_eq!(app.me(&token).await.status(), StatusCode::OK);
    let new_der = private_key(&app, &new_kid).await;
    let by_new_key = signed_with(&app, &new_der, &new_kid, &jwt_claims(&token));
    assert_eq!(app.me(&by_new_key).await.status(), StatusCode::OK);
    app.access_refused(&token).await;
}

/// Two instances on one store (and one MFA_ENCRYPTION_KEY) start on the
/// same key; after a rotation, a token of the instance that already signs
/// with the new key is taken at once by the other (an unknown kid makes it
/// reload), which then signs with the new key too.
async fn two_instances_agree_on_the_key_after_a_rotation(backend: Backend) {
    let mut a = keyed_app(backend, None).await;
    let (var, value) = a.database_env();
    let b = TestApp::spawn_with(
        backend,
        &[
            ("JWT_ACCESS_SECRET", ""),
            ("MFA_ENCRYPTION_KEY", MFA_KEY),
            (var.as_str(), value.as_str()),
        ],
    )
    .await;
    let (from_a, _) = a.login("jane@example.com", PASSWORD).await;
    let (from_b, _) = b.login("jane@example.com", PASSWORD).await;
    let first = header_of(&from_a).kid.unwrap();
    assert_eq!(header_of(&from_b).kid.as_deref(), Some(first.as_str()));
    assert_eq!(published_kids(&jwks(&b).await), [first.as_str()]);

    let second = rotate(&a).await;
    assert_ne!(second, first);
    a.restart().await;
    let (new_from_a, _) = a.login("jane@example.com", PASSWORD).await;
    assert_eq!(header_of(&new_from_a).kid.as_deref(), Some(second.as_str()));
    // B has not reloaded yet, but takes the new kid at once.
    assert_eq!(b.me(&new_from_a).await.status(), StatusCode::OK);
    let (new_from_b, _) = b.login("jane@example.com", PASSWORD).await;
    assert_eq!(header_of(&new_from_b).kid.as_deref(), Some(second.as_str()));
    for app in [&a, &b] {
        assert_eq!(
            published_kids(&jwks(app).await),
            [second.clone(), first.clone()]
        );
        for token in [&from_a, &from_b, &new_from_b] {
            assert_eq!(app.me(token).await.status(), StatusCode::OK);
        }
    }
}

/// The service starts while MongoDB is down, as it did before signing
/// keys: it publishes nothing until the database answers, then loads (or
/// makes) its key within seconds and signs with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_mongo_is_down_and_loads_its_key_when_it_is_up() {
    use std::time::{Duration, Instant};
    let mut server = common::mongo_server::MongoServer::start().await;
    let uri = server.uri("late_keys");
    server.stop().await;
    let app = TestApp::spawn_with(
        Backend::Mongo,
        &[
            ("MONGO_URI", uri.as_str()),
            ("JWT_ACCESS_SECRET", ""),
            ("MFA_ENCRYPTION_KEY", MFA_KEY),
        ],
    )
    .await;
    let res = app.get("/.well-known/jwks.json").await;
    assert_eq!(res.text().await.unwrap(), r#"{"keys":[]}"#);
    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while jwks(&app).await.keys.is_empty() {
        assert!(Instant::now() < deadline, "the key never loaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.register("jane@example.com").await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    verify_with_jwks(&jwks(&app).await, &access).unwrap();
}
