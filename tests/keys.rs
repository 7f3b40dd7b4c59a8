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
);

/// An app whose access tokens are signed with a key pair: the harness's
/// JWT_ACCESS_SECRET removed, so ES256 by default, or `alg` when given.
pub async fn keyed_app(backend: Backend, alg: Option<&str>) -> TestApp {
    let mut overrides = vec![("JWT_ACCESS_SECRET", "")];
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
