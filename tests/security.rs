//! Issue 5 behaviours over HTTP, on every backend: refresh-token families
//! and reuse detection, per-account lockout, email verification.

mod common;

use std::time::Duration;

use common::{expect_error, read_emails, wait_for_subject, Backend, Email, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};

backend_tests!(
    replay_after_the_grace_window_ends_the_family,
    replay_within_the_grace_window_gets_a_sibling,
    strict_mode_revokes_on_any_replay,
    repeated_failures_lock_the_email_and_locks_double,
    unknown_emails_lock_the_same_way,
    a_completed_reset_lifts_the_lock,
    registration_sends_a_verification_link,
    resend_replaces_the_link_and_refuses_when_verified,
    required_verification_blocks_sign_in_until_verified,
    verification_page_confirms_the_address,
    signing_out_of_a_session_ends_its_access_tokens,
    an_idle_api_sign_in_is_signed_out,
    wrong_current_passwords_count_towards_the_lock,
    a_replaced_token_is_reuse_even_after_the_idle_timeout,
    a_second_replay_within_the_grace_window_ends_the_family,
    logging_out_an_ended_sign_in_records_nothing_and_is_rate_limited,
    reset_and_verification_mail_is_capped_per_account,
    a_completed_reset_verifies_the_address,
);

const SESSION_ENDED: &str = "A Clinic Auth session was ended";
const LOCKED: &str = "Sign-in to Clinic Auth paused";
const VERIFY: &str = "Confirm your email address";

/// The audit records of one kind, after flushing the recorder.
async fn recorded(app: &TestApp, event: &str) -> Vec<clinic_auth::domain::AuditRecord> {
    app.flush_audit().await;
    let store = app.store().await;
    store
        .audit_events_after(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.as_str() == event)
        .collect()
}

/// Exactly one email with that subject went out, to `to`, saying `says`.
async fn one_email(app: &TestApp, subject: &str, to: &str, says: &str) {
    let emails = wait_for_subject(&app.outbox(), subject, 1).await;
    assert_eq!(emails.len(), 1, "{subject}");
    assert!(emails[0].to.contains(to), "{}", emails[0].to);
    assert!(emails[0].text.contains(says), "{}", emails[0].text);
}

/// Jane got exactly one "session ended for your safety" email.
async fn owner_told_of_ended_session(app: &TestApp) {
    one_email(
        app,
        SESSION_ENDED,
        "jane@example.com",
        "ended that session for your safety",
    )
    .await;
}

fn link_token(email: &Email, page: &str) -> String {
    let marker = format!("http://localhost:8000/{page}?token=");
    let start = email.text.find(&marker).expect("the link is in the text") + marker.len();
    let token: String = email.text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert!(email.html.contains(&format!("{marker}{token}")));
    token
}

async fn refresh_ok(app: &TestApp, token: &str) -> String {
    let res = app.refresh_with(token).await;
    assert_eq!(res.status(), StatusCode::OK);
    common::refresh_cookie(res.headers()).expect("a new refresh cookie")
}

async fn replay_after_the_grace_window_ends_the_family(backend: Backend) {
    let app = TestApp::with_jane(backend, &[("REFRESH_REUSE_GRACE", "1s")]).await;
    let (access, first) = app.login("jane@example.com", PASSWORD).await;
    // A second sign-in (another device) is another family and survives.
    let (_, other_device) = app.login("jane@example.com", PASSWORD).await;
    let second = refresh_ok(&app, &first).await;
    let third = refresh_ok(&app, &second).await;
    app.clock.advance(Duration::from_millis(1300));

    // The thief replays the first token long after it was replaced.
    app.refresh_refused(&first).await;
    // Every descendant is dead, and so are the access tokens issued so far.
    app.refresh_refused(&third).await;
    app.refresh_refused(&second).await;
    app.access_refused(&access).await;
    // The owner is told, once.
    owner_told_of_ended_session(&app).await;
    // The other device's family is untouched.
    refresh_ok(&app, &other_device).await;
    // The audit trail has the replay, with who and what it ended (the
    // second replay found the family already dead).
    let replays = recorded(&app, "refresh_reuse_detected").await;
    assert_eq!(replays.len(), 2);
    assert!(replays[0].detail.as_deref().unwrap().ends_with("revoked=1"));
    assert!(replays[1].detail.as_deref().unwrap().ends_with("revoked=0"));
    assert_eq!(replays[0].outcome.as_str(), "failure");
    assert!(replays[0].user_id.is_some() && replays[0].ip.is_some());
}

async fn replay_within_the_grace_window_gets_a_sibling(backend: Backend) {
    // Default grace (5s): two tabs refreshing with the same cookie.
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let (_, first) = app.login("jane@example.com", PASSWORD).await;
    let tab_a = refresh_ok(&app, &first).await;
    let tab_b = refresh_ok(&app, &first).await;
    assert_ne!(tab_a, tab_b);
    // Both children are live members of the family.
    refresh_ok(&app, &tab_a).await;
    refresh_ok(&app, &tab_b).await;
    // A family that was signed out gives nothing back, grace or not.
    let (_, ended) = app.login("jane@example.com", PASSWORD).await;
    let child = refresh_ok(&app, &ended).await;
    let res = app.logout_with(&child).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.refresh_refused(&ended).await;
    assert!(read_emails(&app.outbox())
        .iter()
        .all(|e| !e.subject.starts_with(SESSION_ENDED)));
}

async fn strict_mode_revokes_on_any_replay(backend: Backend) {
    let app = TestApp::with_jane(backend, &[("REFRESH_REUSE_GRACE", "0s")]).await;
    let (_, first) = app.login("jane@example.com", PASSWORD).await;
    let second = refresh_ok(&app, &first).await;
    app.refresh_refused(&first).await;
    app.refresh_refused(&second).await;
    wait_for_subject(&app.outbox(), SESSION_ENDED, 1).await;
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post_json(
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
    .await
}

/// Fails `n` sign-ins for `email`, each answered 401.
async fn fail(app: &TestApp, email: &str, n: usize) {
    for _ in 0..n {
        expect_error(
            login(app, email, "Wr0ng!Password99").await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;
    }
}

/// Expects `account_locked`; returns Retry-After in seconds.
async fn expect_locked(res: reqwest::Response) -> u64 {
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    retry
}

const LOCKOUT: &[(&str, &str)] = &[
    ("LOGIN_MAX_FAILURES", "3"),
    ("LOGIN_LOCKOUT", "2s"),
    ("LOGIN_LOCKOUT_MAX", "4s"),
];

/// Fails `LOCKOUT`'s three sign-ins, sees the lock, and moves the clock
/// past its end (going by its Retry-After, which must be within `1..=max`).
async fn lock_and_wait_out(app: &TestApp, email: &str, max: u64) {
    fail(app, email, 3).await;
    let retry = expect_locked(login(app, email, PASSWORD).await).await;
    assert!((1..=max).contains(&retry), "Retry-After {retry}, max {max}");
    app.clock
        .advance(Duration::from_secs(retry) + Duration::from_millis(300));
}

async fn repeated_failures_lock_the_email_and_locks_double(backend: Backend) {
    let app = TestApp::with_jane(backend, LOCKOUT).await;
    app.register("john@example.com").await;
    fail(&app, "jane@example.com", 3).await;
    // Locked: even the right password is refused, before any hashing; the
    // same email in another spelling shares the lock; others are not
    // affected.
    let retry = expect_locked(login(&app, "jane@example.com", PASSWORD).await).await;
    assert!((1..=2).contains(&retry), "{retry}");
    expect_locked(login(&app, " JANE@example.com ", PASSWORD).await).await;
    app.login("john@example.com", PASSWORD).await;
    app.clock
        .advance(Duration::from_secs(retry) + Duration::from_millis(300));

    // The owner hears about the lock once, with the way out.
    one_email(
        &app,
        LOCKED,
        "jane@example.com",
        "http://localhost:8000/forgot-password",
    )
    .await;

    // The second lock lasts twice as long; the third is capped at the max.
    lock_and_wait_out(&app, "jane@example.com", 4).await;
    lock_and_wait_out(&app, "jane@example.com", 4).await;
    assert_eq!(wait_for_subject(&app.outbox(), LOCKED, 3).await.len(), 3);
    let locks = recorded(&app, "account_locked").await;
    let lengths: Vec<&str> = locks.iter().filter_map(|r| r.detail.as_deref()).collect();
    assert_eq!(
        lengths,
        ["lock_seconds=2", "lock_seconds=4", "lock_seconds=4"]
    );
    assert!(locks
        .iter()
        .all(|r| r.email.as_deref() == Some("jane@example.com") && r.user_id.is_some()));
    // Attempts refused by a lock are failures too, marked as such.
    let refused = recorded(&app, "login_failure").await;
    assert!(refused
        .iter()
        .any(|r| r.detail.as_deref() == Some("account_locked")));

    // After the lock, a success resets everything: 2 failures do not lock.
    app.login("jane@example.com", PASSWORD).await;
    fail(&app, "jane@example.com", 2).await;
    app.login("jane@example.com", PASSWORD).await;
}

async fn unknown_emails_lock_the_same_way(backend: Backend) {
    let app = TestApp::with_jane(
        backend,
        &[("LOGIN_MAX_FAILURES", "3"), ("LOGIN_LOCKOUT", "1m")],
    )
    .await;
    fail(&app, "nobody@example.com", 3).await;
    fail(&app, "jane@example.com", 3).await;
    let unknown = login(&app, "nobody@example.com", PASSWORD).await;
    let known = login(&app, "jane@example.com", PASSWORD).await;
    let (unknown_retry, known_retry) = (
        unknown.headers()["retry-after"].clone(),
        known.headers()["retry-after"].clone(),
    );
    let unknown: Value = unknown.json().await.unwrap();
    let known: Value = known.json().await.unwrap();
    // Same status, body and wait: nothing tells the two apart.
    assert_eq!(unknown, known);
    assert_eq!(unknown_retry, known_retry);
    assert_eq!(unknown["error"]["code"], "account_locked");
    // Not even a malformed address is treated differently.
    fail(&app, "not an email", 3).await;
    expect_locked(login(&app, "not an email", PASSWORD).await).await;
    // Only the real account's owner got a notice.
    app.settle_email().await;
    let notices = wait_for_subject(&app.outbox(), LOCKED, 1).await;
    assert_eq!(notices.len(), 1);
    assert!(notices[0].to.contains("jane@example.com"));
    // The trail records every lock, with the email as typed.
    let locks = recorded(&app, "account_locked").await;
    let emails: Vec<&str> = locks.iter().filter_map(|r| r.email.as_deref()).collect();
    assert_eq!(
        emails,
        ["nobody@example.com", "jane@example.com", "not an email"]
    );
}

async fn a_completed_reset_lifts_the_lock(backend: Backend) {
    let app = TestApp::with_jane(
        backend,
        &[("LOGIN_MAX_FAILURES", "2"), ("LOGIN_LOCKOUT", "10m")],
    )
    .await;
    fail(&app, "jane@example.com", 2).await;
    assert_eq!(
        expect_locked(login(&app, "jane@example.com", PASSWORD).await).await,
        600
    );
    let token = app.reset_token_for("jane@example.com").await;
    let res = app.reset_password(&token, "N3w!Passphrase-2026").await;
    assert_eq!(res.status(), StatusCode::OK);
    app.login("jane@example.com", "N3w!Passphrase-2026").await;
}

async fn registration_sends_a_verification_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.register("jane@example.com").await;
    assert_eq!(user["verified"], false);
    let emails = wait_for_subject(&app.outbox(), VERIFY, 1).await;
    assert!(emails[0].to.contains("jane@example.com"));
    assert!(emails[0].text.contains("within 24 hours"));
    let token = link_token(&emails[0], "verify-email");

    // Only the hash is stored.
    let store = app.store().await;
    let id = clinic_auth::domain::UserId::new(user["id"].as_str().unwrap().to_owned());
    assert_eq!(
        store
            .find_one_time_token(
                clinic_auth::storage::TokenPurpose::EmailVerification,
                &clinic_auth::domain::TokenHash::of(&token),
                chrono::Utc::now(),
            )
            .await
            .unwrap(),
        Some(id)
    );

    let res = app
        .post_json("/api/auth/verify-email", json!({"token": token}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["verified"], true);
    assert_eq!(body["email"], "jane@example.com");
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["verified"], true);
    let verified = recorded(&app, "email_verified").await;
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].user_id.as_deref(), user["id"].as_str());

    // Single use; junk is refused the same way, never a 500.
    for token in [token.as_str(), "", "nonsense", &"x".repeat(5000)] {
        verify_refused(&app, token).await;
    }
    expect_error(
        app.post_json("/api/auth/verify-email", json!({"tok": "x"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    // A reset link is not a verification link.
    app.register("john@example.com").await;
    let reset = app.reset_token_for("john@example.com").await;
    verify_refused(&app, &reset).await;
}

async fn verify_refused(app: &TestApp, token: &str) {
    let res = app
        .post_json("/api/auth/verify-email", json!({"token": token}))
        .await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_token").await;
}

async fn resend_replaces_the_link_and_refuses_when_verified(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let first = link_token(
        &wait_for_subject(&app.outbox(), VERIFY, 1).await[0],
        "verify-email",
    );
    let (access, _) = app.login("jane@example.com", PASSWORD).await;

    expect_error(
        app.post_json("/api/auth/resend-verification", json!({}))
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let res = app
        .client
        .post(app.url("/api/auth/resend-verification"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let emails = wait_for_subject(&app.outbox(), VERIFY, 2).await;
    let second = link_token(&emails[1], "verify-email");
    assert_ne!(first, second);
    // Only the newest link works.
    verify_refused(&app, &first).await;
    let res = app
        .post_json("/api/auth/verify-email", json!({"token": second}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .client
        .post(app.url("/api/auth/resend-verification"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::CONFLICT, "already_verified").await;
}

async fn required_verification_blocks_sign_in_until_verified(backend: Backend) {
    let app = TestApp::with_jane(backend, &[("REQUIRE_VERIFIED_EMAIL", "true")]).await;
    wait_for_subject(&app.outbox(), VERIFY, 1).await;
    let res = login(&app, "jane@example.com", PASSWORD).await;
    assert!(common::refresh_cookie(res.headers()).is_none());
    expect_error(res, StatusCode::FORBIDDEN, "email_unverified").await;
    // A wrong password is still just wrong: 403 only follows the right one.
    fail(&app, "jane@example.com", 1).await;
    // The refusal sent a fresh link (the first no longer works).
    let emails = wait_for_subject(&app.outbox(), VERIFY, 2).await;
    let token = link_token(&emails[1], "verify-email");
    let res = app
        .post_json("/api/auth/verify-email", json!({"token": token}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    app.login("jane@example.com", PASSWORD).await;
}

async fn verification_page_confirms_the_address(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let token = link_token(
        &wait_for_subject(&app.outbox(), VERIFY, 1).await[0],
        "verify-email",
    );
    let res = app.get(&format!("/verify-email?token={token}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(html.contains("Email address confirmed"), "{html}");
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["verified"], true);
    // Used, or missing: a friendly 400 page.
    for path in [
        format!("/verify-email?token={token}"),
        "/verify-email".into(),
    ] {
        let res = app.get(&path).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(res.text().await.unwrap().contains("This link is not valid"));
    }
}

async fn signing_out_of_a_session_ends_its_access_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;
    let (other_access, _) = app.login("jane@example.com", PASSWORD).await;
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    let res = app.logout_with(&refresh).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Not in up to 15 minutes: now. Other sign-ins are untouched.
    app.access_refused(&access).await;
    assert_eq!(app.me(&other_access).await.status(), StatusCode::OK);

    // Ending a session from another device ends its access tokens too.
    let (third_access, _) = app.login("jane@example.com", PASSWORD).await;
    let sessions = app.sessions(&other_access).await;
    let third = sessions
        .iter()
        .find(|s| s["current"] == false)
        .expect("the third sign-in is listed");
    let res = app
        .client
        .delete(app.url(&format!(
            "/api/auth/sessions/{}",
            third["id"].as_str().unwrap()
        )))
        .bearer_auth(&other_access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.access_refused(&third_access).await;
}

async fn an_idle_api_sign_in_is_signed_out(backend: Backend) {
    let app = TestApp::with_jane(
        backend,
        &[("JWT_ACCESS_EXPIRES", "1s"), ("REFRESH_IDLE_TIMEOUT", "2s")],
    )
    .await;
    let (_, idle) = app.login("jane@example.com", PASSWORD).await;
    let (_, active) = app.login("jane@example.com", PASSWORD).await;
    // In use: each refresh restarts the idle clock.
    let mut active = active;
    for _ in 0..3 {
        app.clock.advance(Duration::from_millis(1100));
        active = refresh_ok(&app, &active).await;
    }
    // Unused for longer than REFRESH_IDLE_TIMEOUT: over, and ended for good.
    app.refresh_refused(&idle).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let sessions = app.sessions(&access).await;
    assert_eq!(sessions.len(), 2, "the idle sign-in is gone: {sessions:?}");
    let ended = recorded(&app, "session_revoked").await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].detail.as_deref(), Some("idle_timeout"));
}

async fn wrong_current_passwords_count_towards_the_lock(backend: Backend) {
    let app = TestApp::with_jane(backend, &[("LOGIN_MAX_FAILURES", "2")]).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let change = |current: &'static str| {
        app.client
            .post(app.url("/api/auth/change-password"))
            .bearer_auth(&access)
            .json(&json!({"current_password": current, "new_password": "N3w!Passphrase-2026"}))
            .send()
    };
    // A stolen access token cannot be used to guess the password.
    for _ in 0..2 {
        let res = change("Wr0ng!Password99").await.unwrap();
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let res = change(PASSWORD).await.unwrap();
    assert!(res.headers().contains_key("retry-after"));
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    // It is the account's lock: sign-in is paused too, and the owner told.
    expect_locked(login(&app, "jane@example.com", PASSWORD).await).await;
    wait_for_subject(&app.outbox(), LOCKED, 1).await;
    let failures = recorded(&app, "login_failure").await;
    assert_eq!(
        failures
            .iter()
            .filter(|r| r.detail.as_deref() == Some("change_password"))
            .count(),
        2
    );
}

/// The claims of a JWT, unverified.
fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

async fn a_replaced_token_is_reuse_even_after_the_idle_timeout(backend: Backend) {
    use chrono::{Duration as Span, Utc};
    use clinic_auth::domain::{TokenHash, UserId};
    use clinic_auth::storage::{NewRefreshToken, Rotation};

    let app = TestApp::with_jane(backend, &[("REFRESH_IDLE_TIMEOUT", "30m")]).await;
    let (access, current) = app.login("jane@example.com", PASSWORD).await;
    // A token of this sign-in issued an hour ago, copied by a thief, and
    // rotated away by the owner's app a minute later: made here with the
    // test's refresh secret and stored as the app would have, rather than
    // waiting out an idle timeout.
    let mut claims = claims_of(&current);
    let issued = Utc::now() - Span::hours(1);
    claims["iat"] = json!(issued.timestamp());
    claims["jti"] = json!("copied-an-hour-ago");
    let copied = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(common::REFRESH_SECRET.as_bytes()),
    )
    .unwrap();
    let record = |jti: &str, hash: TokenHash, at| NewRefreshToken {
        user_id: UserId::new(claims["sub"].as_str().unwrap().to_owned()),
        jti: jti.to_owned(),
        token_hash: hash,
        family_id: claims["fam"].as_str().unwrap().to_owned(),
        user_agent: None,
        ip_address: None,
        expires_at: Utc::now() + Span::days(1),
        created_at: at,
    };
    let store = app.store().await;
    let copied_hash = TokenHash::of(&copied);
    store
        .insert_refresh_token(&record("copied-an-hour-ago", copied_hash.clone(), issued))
        .await
        .unwrap();
    let rotated_at = issued + Span::minutes(1);
    let child = record("its-child", TokenHash::of("its-child"), rotated_at);
    let rotation = store
        .rotate_refresh_token(&copied_hash, rotated_at, Span::seconds(5), &child)
        .await
        .unwrap();
    assert!(matches!(rotation, Rotation::Rotated(_)), "{rotation:?}");

    // Replayed now, long past REFRESH_IDLE_TIMEOUT: still a replay of a
    // replaced token, and handled as one.
    app.refresh_refused(&copied).await;
    app.refresh_refused(&current).await;
    app.access_refused(&access).await;
    owner_told_of_ended_session(&app).await;
    let replays = recorded(&app, "refresh_reuse_detected").await;
    assert_eq!(replays.len(), 1);
    assert!(replays[0].detail.as_deref().unwrap().ends_with("revoked=2"));
    assert!(recorded(&app, "session_revoked").await.is_empty());
}

async fn a_second_replay_within_the_grace_window_ends_the_family(backend: Backend) {
    // Default grace (5s).
    let app = TestApp::with_jane(backend, &[]).await;
    let (access, first) = app.login("jane@example.com", PASSWORD).await;
    let tab_a = refresh_ok(&app, &first).await;
    let tab_b = refresh_ok(&app, &first).await;
    // A third presentation of the same retired token, even seconds later,
    // is not a second tab: the family ends and the owner is told.
    app.refresh_refused(&first).await;
    app.refresh_refused(&tab_a).await;
    app.refresh_refused(&tab_b).await;
    app.access_refused(&access).await;
    wait_for_subject(&app.outbox(), SESSION_ENDED, 1).await;
    assert_eq!(recorded(&app, "refresh_reuse_detected").await.len(), 1);
    let refreshes = recorded(&app, "refresh").await;
    let details: Vec<Option<&str>> = refreshes.iter().map(|r| r.detail.as_deref()).collect();
    assert_eq!(details, [None, Some("grace_sibling")]);

    // Several tabs at once: one rotation and one sibling, then the family
    // is over for all of them.
    let (_, shared) = app.login("jane@example.com", PASSWORD).await;
    let attempts = (0..6).map(|_| app.refresh_with(&shared));
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(reqwest::Response::status)
        .collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 2, "{statuses:?}");
}

async fn logging_out_an_ended_sign_in_records_nothing_and_is_rate_limited(backend: Backend) {
    let app = TestApp::with_jane(backend, &[("RATE_LIMIT_AUTH_PER_MIN", "3")]).await;
    let (_, refresh) = app.login("jane@example.com", PASSWORD).await;
    for _ in 0..3 {
        let res = app.logout_with(&refresh).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
    // Ending an ended sign-in ended nothing, so nothing was recorded.
    assert_eq!(recorded(&app, "logout").await.len(), 1);
    // And logout has the per-IP limit of the other auth routes.
    let res = app.logout_with(&refresh).await;
    assert!(res.headers().contains_key("retry-after"));
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(recorded(&app, "logout").await.len(), 1);
}

async fn reset_and_verification_mail_is_capped_per_account(backend: Backend) {
    let app = TestApp::with_jane(
        backend,
        &[
            ("TRUSTED_PROXIES", "127.0.0.1"),
            // One request per IP: the cap must hold across IPs.
            ("RATE_LIMIT_AUTH_PER_MIN", "1"),
        ],
    )
    .await;
    let res = app
        .client
        .post(app.url("/api/auth/register"))
        .header("x-forwarded-for", "198.51.100.1")
        .json(&json!({"name": "Dr John Smith", "email": "john@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let forgot = |n: usize| {
        app.client
            .post(app.url("/api/auth/forgot-password"))
            .header("x-forwarded-for", format!("203.0.113.{n}"))
            .json(&json!({"email": "jane@example.com"}))
            .send()
    };
    let mut answers = Vec::new();
    for n in 1..=5 {
        let res = forgot(n).await.unwrap();
        answers.push((res.status(), res.text().await.unwrap()));
        if n <= 3 {
            // One at a time, so the emails arrive in the order asked for.
            common::wait_for_reset_emails(&app.outbox(), n).await;
        }
    }
    assert_eq!(answers[0].0, StatusCode::ACCEPTED);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    // Every request is recorded; the two over the cap say so (and are
    // recorded only once the decision not to send is taken).
    let mut requested = Vec::new();
    for _ in 0..100 {
        requested = recorded(&app, "password_reset_requested").await;
        if requested.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(requested.len(), 5);
    let over_cap = requested
        .iter()
        .filter(|r| r.detail.as_deref() == Some("mail_limit"))
        .count();
    assert_eq!(over_cap, 2);
    let emails = common::wait_for_reset_emails(&app.outbox(), 3).await;
    assert_eq!(emails.len(), 3);
    // The last link sent still works: the suppressed requests replaced
    // nothing.
    let res = app
        .reset_password(&emails[2].reset_token(), "N3w!Passphrase-2026")
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    // The verification email has a budget of the same size per account.
    let (access, _) = app.login("john@example.com", PASSWORD).await;
    let verify_emails = || -> Vec<Email> {
        common::read_subject(&app.outbox(), VERIFY)
            .into_iter()
            .filter(|e| e.to.contains("john@example.com"))
            .collect()
    };
    let mut answers = Vec::new();
    for n in 1..=5 {
        let res = app
            .client
            .post(app.url("/api/auth/resend-verification"))
            .header("x-forwarded-for", format!("198.51.100.{n}"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        answers.push((res.status(), res.text().await.unwrap()));
        // Registration's link, then one per resend within the cap.
        for _ in 0..100 {
            if n > 3 || verify_emails().len() > n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(answers[0].0, StatusCode::ACCEPTED);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    let sent = verify_emails();
    assert_eq!(sent.len(), 4);
    // The newest link sent works: the suppressed resends replaced nothing.
    let token = link_token(&sent[3], "verify-email");
    let res = app
        .post_json("/api/auth/verify-email", json!({"token": token}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn a_completed_reset_verifies_the_address(backend: Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let token = app.reset_token_for("jane@example.com").await;
    let res = app.reset_password(&token, "N3w!Passphrase-2026").await;
    assert_eq!(res.status(), StatusCode::OK);
    let (access, _) = app.login("jane@example.com", "N3w!Passphrase-2026").await;
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["verified"], true, "the reset link proved the mailbox");
    let verified = recorded(&app, "email_verified").await;
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].detail.as_deref(), Some("password_reset"));
    assert_eq!(verified[0].user_id.as_deref(), me["id"].as_str());
}
