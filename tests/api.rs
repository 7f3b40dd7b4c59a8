//! The JSON API, end to end over HTTP, against every backend.

mod common;

use std::time::Instant;

use base64::Engine;
use common::{expect_error, plain_client, refresh_cookie, set_cookie, Backend, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};

backend_tests!(
    health_reports_database_state,
    register_creates_a_doctor_and_validates,
    register_rejects_duplicates_and_privilege_fields,
    login_sets_access_token_and_refresh_cookie,
    login_failures_look_identical,
    me_requires_a_valid_access_token,
    access_tokens_expire_by_the_apps_clock,
    forged_and_mismatched_tokens_are_rejected,
    refresh_rotates_and_old_token_dies,
    concurrent_refresh_has_one_winner,
    bad_refresh_cookies_are_rejected,
    logout_revokes_and_clears_cookie,
    forgot_and_reset_password_end_to_end,
    reset_token_is_single_use_and_checked,
    weak_new_password_keeps_the_reset_link,
    errors_use_one_format,
    cors_only_for_configured_origins,
    security_headers_on_every_response,
    every_api_answer_is_no_store,
    auth_rate_limit_answers_429,
    global_rate_limit_answers_429,
    restart_keeps_users_and_sessions,
    https_app_url_hardens_cookies,
    openapi_documents_every_route,
    logout_all_ends_everything_and_kills_access_tokens,
    change_password_keeps_only_the_callers_sign_in,
    sessions_api_lists_and_ends_sessions,
    forwarded_for_is_believed_only_from_trusted_proxies,
    names_with_invisible_or_direction_characters_are_refused,
);

async fn health_reports_database_state(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.get("/health").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"status": "ok", "database": "ok"})
    );
    let head = app.client.head(app.url("/health")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.bytes().await.unwrap().is_empty());
}

async fn register_creates_a_doctor_and_validates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .post_json("/api/auth/register", json!({"name": "  Dr Jane Smith ", "email": " Jane@Example.COM ", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["email"], "jane@example.com");
    assert_eq!(user["name"], "Dr Jane Smith");
    assert_eq!(user["role"], "doctor");
    assert_eq!(user["verified"], false);
    let keys: Vec<&str> = user
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
    for key in [
        "id",
        "name",
        "email",
        "role",
        "verified",
        "created_at",
        "updated_at",
    ] {
        assert!(user.get(key).is_some(), "missing {key}");
    }
    assert!(!user.to_string().contains("argon2"));

    let res = app
        .post_json(
            "/api/auth/register",
            json!({"name": "", "email": "not-an-email", "password": "short"}),
        )
        .await;
    let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields = body["error"]["fields"].as_object().unwrap();
    for field in ["name", "email", "password"] {
        assert!(
            fields[field].as_array().is_some_and(|m| !m.is_empty()),
            "{field}: {body}"
        );
    }

    for (password, email) in [
        ("password1234", "doc@example.com"),
        ("123456789012", "doc@example.com"),
        ("pediatrics-2024!", "pediatrics@example.com"),
        (&"Ab1!".repeat(33), "doc@example.com"),
    ] {
        let res = app
            .post_json(
                "/api/auth/register",
                json!({"name": "Doc", "email": email, "password": password}),
            )
            .await;
        let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(
            body["error"]["fields"]["password"].is_array(),
            "{password}: {body}"
        );
    }
}

async fn register_rejects_duplicates_and_privilege_fields(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let res = app
        .post_json(
            "/api/auth/register",
            json!({"name": "Other", "email": "JANE@example.com", "password": "An0ther!Passphrase"}),
        )
        .await;
    expect_error(res, StatusCode::CONFLICT, "email_taken").await;

    for extra in [json!({"role": "admin"}), json!({"verified": true})] {
        let mut body =
            json!({"name": "Mallory", "email": "mallory@example.com", "password": PASSWORD});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let res = app.post_json("/api/auth/register", body).await;
        expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    // Nothing was created by the refused attempts.
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "mallory@example.com", "password": PASSWORD}),
        )
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

async fn login_sets_access_token_and_refresh_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.register("jane@example.com").await;
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "Jane@Example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_, line) = set_cookie(res.headers(), "refresh_token").expect("refresh cookie");
    let lower = line.to_ascii_lowercase();
    for attr in ["httponly", "samesite=strict", "path=/api/auth", "max-age="] {
        assert!(lower.contains(attr), "{line}");
    }
    assert!(
        !lower.contains("secure"),
        "plain http in development: {line}"
    );
    let max_age: i64 = lower
        .split("max-age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((604_700..=604_800).contains(&max_age), "{max_age}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["user"], user);

    let me = app.me(body["access_token"].as_str().unwrap()).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.json::<Value>().await.unwrap(), user);
}

async fn login_failures_look_identical(backend: Backend) {
    // Many failures for one email: keep the lockout (tests/security.rs)
    // out of this comparison.
    let app = TestApp::with_jane(backend, &[("LOGIN_MAX_FAILURES", "1000")]).await;
    let attempt = |email: &'static str| {
        let app = &app;
        async move {
            let started = Instant::now();
            let res = app
                .post_json(
                    "/api/auth/login",
                    json!({"email": email, "password": "Wr0ng!Password99"}),
                )
                .await;
            let elapsed = started.elapsed();
            (res.status(), res.json::<Value>().await.unwrap(), elapsed)
        }
    };
    let (status_a, body_a, _) = attempt("jane@example.com").await;
    let (status_b, body_b, _) = attempt("nobody@example.com").await;
    assert_eq!(
        (status_a, status_b),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(body_a, body_b);
    assert_eq!(body_a["error"]["code"], "invalid_credentials");

    // Timing: an unknown email must cost a password verification too. Without
    // the dummy hash it answers ~20x faster; allow plenty for noise.
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..5 {
        known.push(attempt("jane@example.com").await.2);
        unknown.push(attempt("nobody@example.com").await.2);
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[2].as_secs_f64(), unknown[2].as_secs_f64());
    assert!(
        u > k * 0.3 && u < k * 3.0,
        "known {k:.4}s vs unknown {u:.4}s"
    );

    let res = app
        .post_json("/api/auth/login", json!({"email": "", "password": ""}))
        .await;
    let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        body["error"]["fields"]["email"].is_array()
            && body["error"]["fields"]["password"].is_array()
    );
}

async fn me_requires_a_valid_access_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.get("/api/auth/me").await;
    let www = res.headers().get("www-authenticate").cloned();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert!(www.unwrap().to_str().unwrap().starts_with("Bearer"));

    for header in ["Bearer", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt"] {
        let res = app
            .client
            .get(app.url("/api/auth/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert!(res.headers().get("www-authenticate").is_some());
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
}

/// An access token dies JWT_ACCESS_EXPIRES after issue (with 5 s of
/// leeway), by the app's clock; the sign-in's refresh token still gets a
/// fresh one.
async fn access_tokens_expire_by_the_apps_clock(backend: Backend) {
    let app = TestApp::with_jane(backend, &[("JWT_ACCESS_EXPIRES", "60s")]).await;
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;
    app.clock.advance(std::time::Duration::from_secs(60));
    assert_eq!(
        app.me(&access).await.status(),
        StatusCode::OK,
        "within the leeway"
    );
    app.clock.advance(std::time::Duration::from_secs(10));
    let body = expect_error(
        app.me(&access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert_eq!(body["error"]["message"], "The access token has expired.");
    let res = app.refresh_with(&refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let fresh: Value = res.json().await.unwrap();
    let fresh = fresh["access_token"].as_str().unwrap();
    assert_eq!(app.me(fresh).await.status(), StatusCode::OK);
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn forged_and_mismatched_tokens_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;
    let claims = claims_of(&access);
    assert_eq!(claims["typ"], "access");
    // Sanity: re-signing the same claims with the real secret is accepted.
    assert_eq!(
        app.me(&sign(&claims, common::ACCESS_SECRET)).await.status(),
        StatusCode::OK
    );

    let now = chrono::Utc::now().timestamp();
    let mut expired = claims.clone();
    expired["iat"] = json!(now - 3600);
    expired["exp"] = json!(now - 1800);
    let mut admin = claims.clone();
    admin["role"] = json!("admin");
    let parts: Vec<&str> = access.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&admin), parts[2]);
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    let mut wrong_typ = claims.clone();
    wrong_typ["typ"] = json!("refresh");
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("another-service");

    for (label, token) in [
        ("expired", sign(&expired, common::ACCESS_SECRET)),
        ("tampered", tampered),
        ("alg none", none),
        (
            "wrong secret",
            sign(&claims, "some-other-secret-of-enough-length-000"),
        ),
        ("wrong typ", sign(&wrong_typ, common::ACCESS_SECRET)),
        ("wrong aud", sign(&wrong_aud, common::ACCESS_SECRET)),
        ("refresh as access", refresh.clone()),
    ] {
        let res = app.me(&token).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{label}");
    }

    // And the reverse: an access token is not a refresh token.
    let res = app.refresh_with(&access).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    let mut refresh_claims = claims_of(&refresh);
    refresh_claims["exp"] = json!(now - 10);
    let res = app
        .refresh_with(&sign(&refresh_claims, common::REFRESH_SECRET))
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
}

async fn refresh_rotates_and_old_token_dies(backend: Backend) {
    // Strict single use; the grace window has its own tests.
    let app = TestApp::with_jane(backend, &[("REFRESH_REUSE_GRACE", "0s")]).await;
    let (_, first) = app.login("jane@example.com", PASSWORD).await;

    let res = app.refresh_with(&first).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second = refresh_cookie(res.headers()).expect("a new refresh cookie");
    assert_ne!(second, first);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(
        app.me(body["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::OK
    );
    // The family keeps its original end: rotation is not a sliding window.
    assert_eq!(claims_of(&second)["exp"], claims_of(&first)["exp"]);
    assert_eq!(claims_of(&second)["fam"], claims_of(&first)["fam"]);

    // The replaced token no longer works, and replaying it ends the
    // family: the token that replaced it dies too.
    let res = app.refresh_with(&first).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    let res = app.refresh_with(&second).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;

    // A browser-like client with a cookie jar follows the chain by itself.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let res = browser
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": "jane@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for _ in 0..3 {
        let res = browser
            .post(app.url("/api/auth/refresh"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}

async fn concurrent_refresh_has_one_winner(backend: Backend) {
    // REFRESH_REUSE_GRACE=0s is strict single use: one winner among tabs.
    let app = TestApp::with_jane(backend, &[("REFRESH_REUSE_GRACE", "0s")]).await;
    let (_, token) = app.login("jane@example.com", PASSWORD).await;
    let attempts = (0..8).map(|_| app.refresh_with(&token));
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    let wins = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(wins, 1, "{statuses:?}");
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED));
}

async fn bad_refresh_cookies_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .client
        .post(app.url("/api/auth/refresh"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    let res = app.refresh_with("garbage").await;
    let (_, line) = set_cookie(res.headers(), "refresh_token").expect("a dead cookie is cleared");
    assert!(line.contains("Max-Age=0"));
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    // Well signed but never stored (e.g. from a wiped database): unknown.
    let now = chrono::Utc::now().timestamp();
    let forged = sign(
        &json!({"sub": "nobody", "jti": "j", "fam": "f", "iat": now, "exp": now + 600, "typ": "refresh",
                "iss": "http://localhost:8000", "aud": "Clinic Auth"}),
        common::REFRESH_SECRET,
    );
    let res = app.refresh_with(&forged).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    let res = app.refresh_with(&"x".repeat(10_000)).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
}

async fn logout_revokes_and_clears_cookie(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let (_, token) = app.login("jane@example.com", PASSWORD).await;
    let res = app.logout_with(&token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (value, line) = set_cookie(res.headers(), "refresh_token").unwrap();
    assert!(
        value.is_empty() && line.contains("Max-Age=0") && line.contains("Path=/api/auth"),
        "{line}"
    );
    app.refresh_refused(&token).await;

    let res = app
        .client
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

async fn forgot_and_reset_password_end_to_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;

    let known = app
        .post_json(
            "/api/auth/forgot-password",
            json!({"email": "JANE@example.com"}),
        )
        .await;
    let unknown = app
        .post_json(
            "/api/auth/forgot-password",
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(
        (known.status(), unknown.status()),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_eq!(
        known.json::<Value>().await.unwrap(),
        unknown.json::<Value>().await.unwrap()
    );

    let emails = common::wait_for_reset_emails(&app.outbox(), 1).await;
    app.settle_email().await;
    assert_eq!(
        common::read_subject(&app.outbox(), "Reset your").len(),
        1,
        "no email for an unknown address"
    );
    let email = &emails[0];
    assert!(email.to.contains("jane@example.com"));
    assert!(email.subject.contains("Reset"));
    let token = email.reset_token();

    let new_password = "N3w!Passphrase-2026";
    let res = app.reset_password(&token, new_password).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.json::<Value>().await.unwrap()["message"].is_string());

    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    app.login("jane@example.com", new_password).await;
    app.refresh_refused(&refresh).await;
    assert_eq!(
        app.me(&access).await.status(),
        StatusCode::UNAUTHORIZED,
        "access tokens die with a reset"
    );
    let notice =
        &common::wait_for_subject(&app.outbox(), "Your Clinic Auth password was changed", 1).await
            [0];
    assert!(notice.to.contains("jane@example.com"));
    assert!(notice.text.contains("/forgot-password") && notice.html.contains("/forgot-password"));
}

async fn reset_token_is_single_use_and_checked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let token = app.reset_token_for("jane@example.com").await;
    let ok = app.reset_password(&token, "N3w!Passphrase-2026").await;
    assert_eq!(ok.status(), StatusCode::OK);
    let again = app.reset_password(&token, "An0ther!Passphrase").await;
    expect_error(again, StatusCode::BAD_REQUEST, "invalid_token").await;
    for bad in ["", "nonsense", &"a".repeat(5000)] {
        let res = app.reset_password(bad, "An0ther!Passphrase").await;
        expect_error(res, StatusCode::BAD_REQUEST, "invalid_token").await;
    }

    // A newer link replaces an older one.
    app.post_json(
        "/api/auth/forgot-password",
        json!({"email": "jane@example.com"}),
    )
    .await;
    let older = common::wait_for_reset_emails(&app.outbox(), 2).await[1].reset_token();
    app.post_json(
        "/api/auth/forgot-password",
        json!({"email": "jane@example.com"}),
    )
    .await;
    let newer = common::wait_for_reset_emails(&app.outbox(), 3).await[2].reset_token();
    let res = app.reset_password(&older, "An0ther!Passphrase").await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_token").await;
    let res = app.reset_password(&newer, "An0ther!Passphrase").await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn weak_new_password_keeps_the_reset_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let token = app.reset_token_for("jane@example.com").await;
    for weak in ["short", "password1234", "jane@example.com-x"] {
        let res = app.reset_password(&token, weak).await;
        let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(body["error"]["fields"]["password"].is_array());
    }
    let res = app.reset_password(&token, "N3w!Passphrase-2026").await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .post_json("/api/auth/forgot-password", json!({"email": "nope"}))
        .await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

async fn errors_use_one_format(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let post_raw = |ct: Option<&'static str>, body: Vec<u8>| {
        let mut req = app.client.post(app.url("/api/auth/login")).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    expect_error(
        post_raw(Some("application/json"), b"{\"email\":".to_vec())
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    expect_error(
        post_raw(Some("text/plain"), b"{}".to_vec()).await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        post_raw(None, b"{}".to_vec()).await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let huge = format!(
        "{{\"email\":\"{}\",\"password\":\"x\"}}",
        "a".repeat(100 * 1024)
    );
    expect_error(
        post_raw(Some("application/json"), huge.into_bytes())
            .await
            .unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    let body = expect_error(
        post_raw(
            Some("application/json"),
            br#"{"email":5,"password":"x"}"#.to_vec(),
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(body["error"]["fields"]["email"].is_array(), "{body}");
    expect_error(
        app.get("/api/nowhere").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.get("/api/auth/login").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let res = app.client.delete(app.url("/health")).send().await.unwrap();
    expect_error(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

async fn cors_only_for_configured_origins(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[(
            "CORS_ORIGINS",
            "http://localhost:3000,https://app.clinic.example",
        )],
    )
    .await;
    let res = app
        .client
        .get(app.url("/health"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    let res = app
        .client
        .get(app.url("/health"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/auth/login"))
        .header("origin", "https://app.clinic.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.clinic.example"
    );
    let bad_preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/auth/login"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(bad_preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

/// Nothing under /api may sit in a browser or proxy cache: not tokens, not
/// the admin's audit pages, not even errors.
async fn every_api_answer_is_no_store(backend: Backend) {
    use clinic_auth::domain::{Role, UserId};

    let app = TestApp::spawn(backend).await;
    let user = app.register("admin@example.com").await;
    let now = chrono::Utc::now();
    assert!(app
        .store()
        .await
        .set_user_role(
            &UserId::new(user["id"].as_str().unwrap().to_owned()),
            &Role::admin(),
            now,
            now
        )
        .await
        .unwrap());
    let (admin, _) = app.login("admin@example.com", PASSWORD).await;
    let get = |path: &str, token: Option<&str>| {
        let mut req = app.client.get(app.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let answers = [
        (
            "200 audit",
            get("/api/admin/audit", Some(&admin)).await.unwrap(),
        ),
        ("401 audit", get("/api/admin/audit", None).await.unwrap()),
        (
            "422 audit",
            get("/api/admin/audit?limit=0", Some(&admin)).await.unwrap(),
        ),
        ("404 api", get("/api/nothing-here", None).await.unwrap()),
        (
            "404 admin",
            get("/api/admin/nothing-here", Some(&admin)).await.unwrap(),
        ),
        ("200 me", get("/api/auth/me", Some(&admin)).await.unwrap()),
    ];
    let statuses: Vec<u16> = answers.iter().map(|(_, r)| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 401, 422, 404, 404, 200]);
    for (what, res) in answers {
        assert_eq!(
            res.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{what}"
        );
    }
}

async fn security_headers_on_every_response(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let responses = vec![
        app.get("/health").await,
        app.get("/api/auth/me").await,
        app.get("/does-not-exist").await,
        app.post_json(
            "/api/auth/login",
            json!({"email": "a@b.co", "password": "x"}),
        )
        .await,
    ];
    for res in responses {
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        // Pages send at most our origin as Referer; the API sends none.
        let page = res.url().path() == "/does-not-exist";
        let policy = if page { "strict-origin" } else { "no-referrer" };
        assert_eq!(h["referrer-policy"], policy);
        assert!(h.get("content-security-policy").is_some());
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS over plain http"
        );
        assert!(h.get("x-request-id").is_some());
        if res.url().path().starts_with("/api/auth") {
            assert_eq!(h["cache-control"], "no-store");
        }
    }
    // A sane incoming request id is echoed (ties proxy and app logs together);
    // anything else is replaced.
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "bad id\twith junk")
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "bad id\twith junk");
}

async fn auth_rate_limit_answers_429(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("RATE_LIMIT_AUTH_PER_MIN", "3")]).await;
    for _ in 0..3 {
        let res = app
            .post_json(
                "/api/auth/login",
                json!({"email": "a@b.co", "password": "whatever"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "a@b.co", "password": "whatever"}),
        )
        .await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Each route has its own budget, and unlimited routes still answer.
    let res = app
        .post_json("/api/auth/forgot-password", json!({"email": "a@b.co"}))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
}

async fn global_rate_limit_answers_429(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("RATE_LIMIT_GLOBAL_PER_MIN", "5")]).await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(app.get("/health").await.status());
    }
    assert_eq!(&statuses[..5], &[StatusCode::OK; 5]);
    let res = app.get("/api/auth/me").await;
    assert!(res.headers().get("retry-after").is_some());
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

async fn restart_keeps_users_and_sessions(backend: Backend) {
    // No secrets configured: the generated development secrets must persist
    // too, or every token would die with the process.
    let mut app = TestApp::with_jane(
        backend,
        &[("JWT_ACCESS_SECRET", ""), ("JWT_REFRESH_SECRET", "")],
    )
    .await;
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;
    app.restart().await;
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    let res = app.refresh_with(&refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.login("jane@example.com", PASSWORD).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let secrets = app.dir.path().join("data/jwt-secrets");
        if backend == Backend::Sqlite {
            let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

async fn https_app_url_hardens_cookies(backend: Backend) {
    let app = TestApp::with_jane(backend, &[("APP_URL", "https://auth.clinic.example")]).await;
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    assert!(res.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .contains("max-age="));
    let (token, line) =
        set_cookie(res.headers(), "__Secure-refresh_token").expect("prefixed cookie");
    assert!(
        line.contains("Secure") && line.contains("HttpOnly"),
        "{line}"
    );
    let res = app
        .client
        .post(app.url("/api/auth/refresh"))
        .header("cookie", format!("__Secure-refresh_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

async fn openapi_documents_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api/auth/register", "post"),
        ("/api/auth/login", "post"),
        ("/api/auth/refresh", "post"),
        ("/api/auth/logout", "post"),
        ("/api/auth/me", "get"),
        ("/api/auth/forgot-password", "post"),
        ("/api/auth/reset-password", "post"),
        ("/health", "get"),
        ("/api/auth/change-password", "post"),
        ("/api/auth/sessions", "get"),
        ("/api/auth/sessions/{id}", "delete"),
        ("/api/auth/logout-all", "post"),
        ("/api/auth/mfa/verify", "post"),
        ("/api/auth/mfa", "get"),
        ("/api/auth/mfa/totp/setup", "post"),
        ("/api/auth/mfa/totp/confirm", "post"),
        ("/api/auth/mfa/totp", "delete"),
        ("/api/auth/mfa/recovery-codes", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    let ui = plain_client().get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    let html = ui.text().await.unwrap();
    assert!(html.contains("swagger"), "Swagger UI page");
    assert!(
        !html.contains("https://"),
        "no CDN: assets are served locally"
    );
    let js = plain_client()
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
}

async fn logout_all_ends_everything_and_kills_access_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let (access_a, refresh_a) = app.login("jane@example.com", PASSWORD).await;
    let (access_b, refresh_b) = app.login("jane@example.com", PASSWORD).await;
    let res = app
        .client
        .post(app.url("/api/auth/logout-all"))
        .bearer_auth(&access_a)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(set_cookie(res.headers(), "refresh_token")
        .unwrap()
        .1
        .contains("Max-Age=0"));
    for token in [&access_a, &access_b] {
        assert_eq!(
            app.me(token).await.status(),
            StatusCode::UNAUTHORIZED,
            "access tokens die at once"
        );
    }
    for token in [&refresh_a, &refresh_b] {
        app.refresh_refused(token).await;
    }
    // Signing in again works straight away.
    let (fresh, _) = app.login("jane@example.com", PASSWORD).await;
    assert_eq!(app.me(&fresh).await.status(), StatusCode::OK);
    let res = app
        .client
        .post(app.url("/api/auth/logout-all"))
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

async fn change_password_keeps_only_the_callers_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;
    let (other_access, other_refresh) = app.login("jane@example.com", PASSWORD).await;
    let change = |current: &str, new: &str| {
        app.client
            .post(app.url("/api/auth/change-password"))
            .bearer_auth(&access)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let new_password = "N3w!Passphrase-2026";
    expect_error(
        change("Wr0ng!Password99", new_password).await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let body = expect_error(
        change(PASSWORD, "password1234").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(body["error"]["fields"]["new_password"].is_array());
    assert_eq!(
        app.me(&access).await.status(),
        StatusCode::OK,
        "failed attempts change nothing"
    );

    let res = change(PASSWORD, new_password).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let fresh = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.me(&fresh).await.status(),
        StatusCode::OK,
        "the answer carries a working token"
    );
    assert_eq!(app.me(&access).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.me(&other_access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh_with(&refresh).await.status(),
        StatusCode::OK,
        "the caller's sign-in stays"
    );
    app.refresh_refused(&other_refresh).await;
    app.login("jane@example.com", new_password).await;
    common::wait_for_subject(&app.outbox(), "Your Clinic Auth password was changed", 1).await;
    assert_eq!(
        common::read_emails(&app.outbox())
            .iter()
            .filter(|e| !e.subject.starts_with(common::VERIFY_SUBJECT))
            .count(),
        1,
        "one notice, no other mail"
    );
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

async fn sessions_api_lists_and_ends_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    app.register("john@example.com").await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let (_, other_refresh) = app.login("jane@example.com", PASSWORD).await;
    let (johns_access, _) = app.login("john@example.com", PASSWORD).await;
    let list = |token: String| {
        let app = &app;
        async move { app.sessions(&token).await }
    };
    let sessions = list(access.clone()).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    for s in &sessions {
        for key in [
            "id",
            "kind",
            "user_agent",
            "ip_address",
            "created_at",
            "last_used_at",
            "current",
        ] {
            assert!(s.get(key).is_some(), "{key} in {s}");
        }
        assert_eq!(s["kind"], "api");
        assert_eq!(s["ip_address"], "127.0.0.1");
    }
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let other = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let delete = |token: String, id: String| {
        let app = &app;
        async move {
            app.client
                .delete(app.url(&format!("/api/auth/sessions/{id}")))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    // Someone else's session id is not found, and stays alive.
    expect_error(
        delete(johns_access, other.clone()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(
        delete(access.clone(), other.clone()).await.status(),
        StatusCode::NO_CONTENT
    );
    app.refresh_refused(&other_refresh).await;
    expect_error(
        delete(access.clone(), other).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        delete(access.clone(), "web_nothing".into()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(list(access).await.len(), 1);
}

async fn forwarded_for_is_believed_only_from_trusted_proxies(backend: Backend) {
    for (trusted, expect_forwarded) in [("", false), ("127.0.0.1/32", true)] {
        let app = TestApp::with_jane(
            backend,
            &[
                ("TRUSTED_PROXIES", trusted),
                ("RATE_LIMIT_AUTH_PER_MIN", "2"),
            ],
        )
        .await;
        let login_from = |ip: &'static str| {
            app.client
                .post(app.url("/api/auth/login"))
                .header("x-forwarded-for", format!("6.6.6.6, {ip}"))
                .json(&json!({"email": "jane@example.com", "password": PASSWORD}))
                .send()
        };
        let first = login_from("198.51.100.7").await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let access = first.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let sessions = app.sessions(&access).await;
        let recorded = sessions[0]["ip_address"].as_str().unwrap();
        assert_eq!(
            recorded,
            if expect_forwarded {
                "198.51.100.7"
            } else {
                "127.0.0.1"
            },
            "trusted={trusted:?}"
        );
        assert_ne!(
            recorded, "6.6.6.6",
            "the client-written part is never believed"
        );

        assert_eq!(
            login_from("198.51.100.7").await.unwrap().status(),
            StatusCode::OK
        );
        assert_eq!(
            login_from("198.51.100.7").await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        // Another client behind the proxy has its own budget, but only when
        // the proxy is trusted; otherwise everyone is the proxy's address.
        let other = login_from("192.0.2.44").await.unwrap().status();
        let expected = if expect_forwarded {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(other, expected, "trusted={trusted:?}");
    }
}

async fn names_with_invisible_or_direction_characters_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let register = |name: &str, email: String| {
        app.post_json(
            "/api/auth/register",
            json!({"name": name, "email": email, "password": PASSWORD}),
        )
    };
    // A right-to-left override shows "Dr Jane Smith" for a name stored as
    // something else; zero-width characters make two names look the same.
    for (n, name) in [
        "Dr \u{202E}htimS enaJ",
        "Dr Jane\u{2066} Smith",
        "Dr Ja\u{200B}ne Smith",
        "Dr Jane\u{200D}Smith",
        "\u{FEFF}Dr Jane Smith",
        "Dr Jane\u{2060}Smith",
    ]
    .into_iter()
    .enumerate()
    {
        let res = register(name, format!("doc{n}@example.com")).await;
        let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let fields = body["error"]["fields"].as_object().unwrap();
        assert_eq!(
            fields.keys().collect::<Vec<_>>(),
            ["name"],
            "{name:?}: {body}"
        );
    }
    // Letters of any script, right-to-left ones included, and accents stay
    // welcome: only the invisible controls are refused.
    for (n, name) in ["Dr Zoë Ångström-Núñez", "د. نور الهدى", "ד\"ר שרה לוי"]
        .into_iter()
        .enumerate()
    {
        let res = register(name, format!("ok{n}@example.com")).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{name}");
    }
}
