//! Two-step sign-in over the API (issue 18), on every backend, with the
//! test clock moved, never slept: nothing is signed in before the second
//! step, the challenge token dies after use, expiry or five wrong codes and
//! belongs to its user, codes work once, a password reset does not skip the
//! code, the management routes need a recent sign-in, and access tokens say
//! how the sign-in was proven.

mod common;

use std::time::Duration;

use chrono::DateTime;
use clinic_auth::domain::mfa::{TimeStep, TotpSecret};
use clinic_auth::domain::AuditEvent;
use common::{
    expect_error, expect_unauthorized, jwt_claims as claims, refresh_cookie, send_bearer as send,
    TestApp, PASSWORD,
};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    no_token_or_cookie_before_the_second_step,
    a_code_finishes_the_sign_in_with_amr_and_auth_time,
    five_wrong_codes_kill_the_challenge,
    wrong_codes_count_towards_the_account_lock,
    an_expired_challenge_is_refused,
    a_challenge_is_bound_to_its_user_and_attempt,
    a_used_totp_code_is_refused,
    a_recovery_code_works_once_and_is_emailed,
    a_password_reset_does_not_skip_the_code,
    management_needs_a_recent_sign_in,
    turning_off_needs_password_and_code,
);

/// A whole number of 30-second steps, plus 5 s: no test's few requests
/// straddle a step by accident.
const START: i64 = 1_800_000_000 + 5;

async fn app_on(backend: common::Backend) -> TestApp {
    app_with(backend, &[]).await
}

async fn app_with(backend: common::Backend, overrides: &[(&str, &str)]) -> TestApp {
    let app = TestApp::with_jane(backend, overrides).await;
    app.clock.set(DateTime::from_timestamp(START, 0).unwrap());
    app
}

/// The code Jane's app shows now.
fn code_now(app: &TestApp, secret: &TotpSecret) -> String {
    use clinic_auth::clock::Clock;
    secret.code_at(TimeStep::at(app.clock.now()).unwrap())
}

/// Turns on Jane's authenticator through the API; returns its secret (as
/// the app would scan it) and the recovery codes.
async fn enrol(app: &TestApp, access: &str) -> (TotpSecret, Vec<String>) {
    let res = send(
        app,
        reqwest::Method::POST,
        "/api/auth/mfa/totp/setup",
        access,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let setup: Value = res.json().await.unwrap();
    assert!(setup["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/"));
    assert!(setup["qr_svg"].as_str().unwrap().contains("<svg"));
    let secret =
        TotpSecret::from_manual_entry_key(setup["manual_entry_key"].as_str().unwrap()).unwrap();
    let code = code_now(app, &secret);
    let res = send(
        app,
        reqwest::Method::POST,
        "/api/auth/mfa/totp/confirm",
        access,
        Some(json!({ "code": code })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    // The confirming code is used up; later sign-ins need the next step's.
    app.clock.advance(Duration::from_secs(30));
    (secret, codes)
}

/// Jane signed in and enrolled.
async fn enrolled(app: &TestApp) -> (TotpSecret, Vec<String>) {
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    enrol(app, &access).await
}

/// The password step: returns the answer's body, asserting that it holds
/// no token and sets no cookie.
async fn password_step(app: &TestApp) -> Value {
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(refresh_cookie(res.headers()), None, "no refresh cookie yet");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    body
}

async fn verify(app: &TestApp, token: &str, method: &str, code: &str) -> Response {
    app.post_json(
        "/api/auth/mfa/verify",
        json!({"mfa_token": token, "method": method, "code": code}),
    )
    .await
}

/// Answers the challenge in `login` with the code `secret` shows now.
async fn totp_now(app: &TestApp, login: &Value, secret: &TotpSecret) -> Response {
    let token = login["mfa_token"].as_str().unwrap();
    verify(app, token, "totp", &code_now(app, secret)).await
}

fn wrong(code: &str) -> String {
    // Another 6-digit code: the next digit of each, so never the same.
    code.chars()
        .map(|c| char::from_digit((c.to_digit(10).unwrap() + 1) % 10, 10).unwrap())
        .collect()
}

async fn events(app: &TestApp, event: AuditEvent) -> Vec<clinic_auth::domain::AuditRecord> {
    app.flush_audit().await;
    let store = app.store().await;
    store
        .audit_events_after(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == event)
        .collect()
}

async fn no_token_or_cookie_before_the_second_step(backend: common::Backend) {
    let app = app_on(backend).await;
    enrolled(&app).await;
    let body = password_step(&app).await;
    assert_eq!(body["methods"], json!(["totp", "recovery_code"]));
    assert_eq!(body["expires_in"], 300);
    let token = body["mfa_token"].as_str().unwrap();
    assert!(token.len() >= 40, "random, not guessable: {token}");
    // The challenge token is no access token.
    common::expect_unauthorized(app.me(token).await, "invalid_token").await;
}

async fn a_code_finishes_the_sign_in_with_amr_and_auth_time(backend: common::Backend) {
    let app = app_on(backend).await;
    // Password only: amr pwd.
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let before = claims(&access);
    assert_eq!(before["amr"], json!(["pwd"]));
    assert_eq!(before["auth_time"], START);
    let (secret, _) = enrol(&app, &access).await;

    let body = password_step(&app).await;
    let res = totp_now(&app, &body, &secret).await;
    assert_eq!(res.status(), StatusCode::OK);
    let refresh = refresh_cookie(res.headers()).expect("the refresh cookie comes with the code");
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["user"]["email"], "jane@example.com");
    let access = answer["access_token"].as_str().unwrap();
    let after = claims(access);
    assert_eq!(after["amr"], json!(["pwd", "otp", "mfa"]));
    let signed_in_at = after["auth_time"].as_i64().unwrap();
    assert!((START + 30..START + 35).contains(&signed_in_at), "{after}");
    assert_eq!(app.me(access).await.status(), StatusCode::OK);

    // A refresh carries how and when the sign-in was proven; it proves
    // nothing new.
    app.clock.advance(Duration::from_secs(120));
    let res = app.refresh_with(&refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.unwrap();
    let rotated = claims(rotated["access_token"].as_str().unwrap());
    assert_eq!(rotated["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(rotated["auth_time"], signed_in_at);

    let successes = events(&app, AuditEvent::LoginSuccess).await;
    let last = successes.last().unwrap();
    assert_eq!(last.detail.as_deref(), Some("factors=pwd,otp,mfa"));
    assert_eq!(successes[0].detail.as_deref(), Some("factors=pwd"));

    // The challenge is single use.
    let res = totp_now(&app, &body, &secret).await;
    expect_unauthorized(res, "mfa_token_invalid").await;
}

async fn five_wrong_codes_kill_the_challenge(backend: common::Backend) {
    // The account lock (5 by default) would end the test first.
    let app = app_with(backend, &[("LOGIN_MAX_FAILURES", "50")]).await;
    let (secret, _) = enrolled(&app).await;
    let body = password_step(&app).await;
    let token = body["mfa_token"].as_str().unwrap();
    let bad = wrong(&code_now(&app, &secret));
    for _ in 0..4 {
        expect_unauthorized(verify(&app, token, "totp", &bad).await, "invalid_code").await;
    }
    // The fifth wrong code ends it ...
    expect_unauthorized(verify(&app, token, "totp", &bad).await, "invalid_code").await;
    // ... so even the right one no longer works with it.
    let res = verify(&app, token, "totp", &code_now(&app, &secret)).await;
    expect_unauthorized(res, "mfa_token_invalid").await;
    assert_eq!(events(&app, AuditEvent::MfaChallengeFailed).await.len(), 5);

    // Four wrong codes leave a challenge alive.
    let body = password_step(&app).await;
    let token = body["mfa_token"].as_str().unwrap();
    for _ in 0..4 {
        expect_unauthorized(verify(&app, token, "totp", &bad).await, "invalid_code").await;
    }
    let res = verify(&app, token, "totp", &code_now(&app, &secret)).await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn wrong_codes_count_towards_the_account_lock(backend: common::Backend) {
    let app = app_with(backend, &[("LOGIN_MAX_FAILURES", "3")]).await;
    let (secret, _) = enrolled(&app).await;
    let bad = wrong(&code_now(&app, &secret));
    // Each round: the right password (which must not clear the count) and
    // one wrong code.
    for _ in 0..3 {
        let body = password_step(&app).await;
        let token = body["mfa_token"].as_str().unwrap();
        expect_unauthorized(verify(&app, token, "totp", &bad).await, "invalid_code").await;
    }
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
}

async fn an_expired_challenge_is_refused(backend: common::Backend) {
    let app = app_on(backend).await;
    let (secret, _) = enrolled(&app).await;
    let body = password_step(&app).await;
    app.clock.advance(Duration::from_secs(301));
    let res = totp_now(&app, &body, &secret).await;
    expect_unauthorized(res, "mfa_token_invalid").await;
    // Just inside the five minutes, it works.
    let body = password_step(&app).await;
    app.clock.advance(Duration::from_secs(290));
    let res = totp_now(&app, &body, &secret).await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn a_challenge_is_bound_to_its_user_and_attempt(backend: common::Backend) {
    let app = app_on(backend).await;
    let (jane_secret, _) = enrolled(&app).await;
    // Bob, with his own authenticator.
    app.register("bob@example.com").await;
    let (bob_access, _) = app.login("bob@example.com", PASSWORD).await;
    let (bob_secret, _) = enrol(&app, &bob_access).await;
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "bob@example.com", "password": PASSWORD}),
        )
        .await;
    let bob: Value = res.json().await.unwrap();
    let bob_token = bob["mfa_token"].as_str().unwrap();
    // Jane's code does not finish Bob's sign-in: the code is checked
    // against the challenge's user.
    let res = verify(&app, bob_token, "totp", &code_now(&app, &jane_secret)).await;
    expect_unauthorized(res, "invalid_code").await;
    // A second attempt replaces the first: the older token is dead.
    let first = password_step(&app).await;
    let second = password_step(&app).await;
    let res = totp_now(&app, &first, &jane_secret).await;
    expect_unauthorized(res, "mfa_token_invalid").await;
    let res = totp_now(&app, &second, &jane_secret).await;
    assert_eq!(res.status(), StatusCode::OK);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["user"]["email"], "jane@example.com");
    // Bob's challenge still signs in Bob only.
    let res = verify(&app, bob_token, "totp", &code_now(&app, &bob_secret)).await;
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["user"]["email"], "bob@example.com");
}

async fn a_used_totp_code_is_refused(backend: common::Backend) {
    let app = app_on(backend).await;
    let (secret, _) = enrolled(&app).await;
    let code = code_now(&app, &secret);
    let body = password_step(&app).await;
    assert_eq!(
        verify(&app, body["mfa_token"].as_str().unwrap(), "totp", &code)
            .await
            .status(),
        StatusCode::OK
    );
    // The same code, within its window, on a fresh challenge: refused.
    let body = password_step(&app).await;
    let res = verify(&app, body["mfa_token"].as_str().unwrap(), "totp", &code).await;
    expect_unauthorized(res, "invalid_code").await;
    // The next step's code works.
    app.clock.advance(Duration::from_secs(30));
    let res = totp_now(&app, &body, &secret).await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn a_recovery_code_works_once_and_is_emailed(backend: common::Backend) {
    let app = app_on(backend).await;
    let (_, codes) = enrolled(&app).await;
    let body = password_step(&app).await;
    let res = verify(
        &app,
        body["mfa_token"].as_str().unwrap(),
        "recovery_code",
        &codes[0],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let answer: Value = res.json().await.unwrap();
    let access = answer["access_token"].as_str().unwrap();
    assert_eq!(claims(access)["amr"], json!(["pwd", "otp", "mfa"]));
    let used = events(&app, AuditEvent::RecoveryCodeUsed).await;
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].detail.as_deref(), Some("left=9"));
    let mail =
        common::wait_for_subject(&app.outbox(), "A Clinic Auth recovery code was used", 1).await;
    assert!(mail[0].text.contains("you have 9 left"), "{}", mail[0].text);
    assert!(!mail[0].text.contains("about to run out"));

    let res = send(&app, reqwest::Method::GET, "/api/auth/mfa", access, None).await;
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        status,
        json!({"totp_enabled": true, "recovery_codes_left": 9, "passkeys": 0})
    );

    // Used once, refused after.
    let body = password_step(&app).await;
    let res = verify(
        &app,
        body["mfa_token"].as_str().unwrap(),
        "recovery_code",
        &codes[0],
    )
    .await;
    expect_unauthorized(res, "invalid_code").await;
}

async fn a_password_reset_does_not_skip_the_code(backend: common::Backend) {
    let app = app_on(backend).await;
    let (secret, _) = enrolled(&app).await;
    let token = app.reset_token_for("jane@example.com").await;
    let new_password = "N3w!Passphrase-2026";
    assert_eq!(
        app.reset_password(&token, new_password).await.status(),
        StatusCode::OK
    );
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": new_password}),
        )
        .await;
    assert_eq!(refresh_cookie(res.headers()), None);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true, "{body}");
    // The authenticator is still the one enrolled before the reset.
    let res = totp_now(&app, &body, &secret).await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn management_needs_a_recent_sign_in(backend: common::Backend) {
    let app = app_on(backend).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    // Ten minutes and a bit later the same sign-in (its access token still
    // valid) may read, but not change, how the account signs in.
    app.clock.advance(Duration::from_secs(601));
    let res = send(
        &app,
        reqwest::Method::POST,
        "/api/auth/mfa/totp/setup",
        &access,
        None,
    )
    .await;
    expect_unauthorized(res, "reauthentication_required").await;
    let res = send(
        &app,
        reqwest::Method::POST,
        "/api/auth/mfa/recovery-codes",
        &access,
        None,
    )
    .await;
    expect_unauthorized(res, "reauthentication_required").await;
    assert_eq!(
        send(&app, reqwest::Method::GET, "/api/auth/mfa", &access, None)
            .await
            .status(),
        StatusCode::OK
    );
    // Signing in again opens the window.
    let (fresh, _) = app.login("jane@example.com", PASSWORD).await;
    let (_, _) = enrol(&app, &fresh).await;
    assert_eq!(events(&app, AuditEvent::MfaEnabled).await.len(), 1);
    common::wait_for_subject(&app.outbox(), "Two-step sign-in was turned on", 1).await;
    let res = send(
        &app,
        reqwest::Method::POST,
        "/api/auth/mfa/recovery-codes",
        &fresh,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        events(&app, AuditEvent::RecoveryCodesRegenerated)
            .await
            .len(),
        1
    );
}

async fn turning_off_needs_password_and_code(backend: common::Backend) {
    let app = app_on(backend).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let (secret, codes) = enrol(&app, &access).await;
    let remove = |password: &str, code: &str| {
        let body = json!({"password": password, "code": code});
        send(
            &app,
            reqwest::Method::DELETE,
            "/api/auth/mfa/totp",
            &access,
            Some(body),
        )
    };
    expect_unauthorized(
        remove("wrong password!", &code_now(&app, &secret)).await,
        "invalid_credentials",
    )
    .await;
    expect_unauthorized(
        remove(PASSWORD, &wrong(&code_now(&app, &secret))).await,
        "invalid_code",
    )
    .await;
    let failures = events(&app, AuditEvent::LoginFailure).await;
    assert_eq!(
        failures.last().unwrap().detail.as_deref(),
        Some("remove_totp")
    );
    // A challenge issued before the removal ...
    let pending = password_step(&app).await;
    assert_eq!(
        remove(PASSWORD, &codes[1]).await.status(),
        StatusCode::NO_CONTENT
    );
    // ... is stale after it.
    let res = totp_now(&app, &pending, &secret).await;
    expect_unauthorized(res, "mfa_token_invalid").await;
    assert_eq!(events(&app, AuditEvent::MfaDisabled).await.len(), 1);
    common::wait_for_subject(&app.outbox(), "Two-step sign-in was turned off", 1).await;
    let res = send(&app, reqwest::Method::GET, "/api/auth/mfa", &access, None).await;
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        status,
        json!({"totp_enabled": false, "recovery_codes_left": 0, "passkeys": 0})
    );
    // The password alone signs in again.
    app.login("jane@example.com", PASSWORD).await;
}
