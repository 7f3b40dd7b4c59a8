//! The second-factor policy (MFA_REQUIRED_ROLES, MFA_REQUIRED_FOR_ALL) on
//! every backend, with the test clock moved: a user who must have a factor
//! and has none signs in to enrolment only (an enrolment token that only
//! the enrolment routes take; an "enrolment only" portal session), enrolling
//! completes the sign-in, a passkey counts, turning the policy on locks
//! nobody out, and changing the password needs a recent sign-in.

mod common;

use std::time::Duration;

use chrono::DateTime;
use clinic_auth::clock::Clock;
use clinic_auth::domain::mfa::{TimeStep, TotpSecret};
use clinic_auth::domain::{Role, UserId};
use clinic_auth::storage::Passkey;
use common::portal::{self, location};
use common::{
    expect_unauthorized, jwt_claims as claims, refresh_cookie, send_bearer as send, Backend,
    TestApp, PASSWORD,
};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    the_enrolment_token_reaches_only_the_enrolment_routes,
    confirming_with_the_enrolment_token_completes_the_sign_in,
    the_policy_follows_roles_and_for_all,
    a_passkey_counts_as_enrolled,
    turning_the_policy_on_locks_nobody_out,
    changing_the_password_needs_a_recent_sign_in,
    the_portal_sends_an_enrolment_only_session_to_two_step,
);

/// A whole number of 30-second steps, plus 5 s (see mfa_api.rs).
const START: i64 = 1_800_000_000 + 5;

async fn app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let app = TestApp::with_jane(backend, overrides).await;
    app.clock.set(DateTime::from_timestamp(START, 0).unwrap());
    app
}

/// The policy's default (admins), which the shared harness turns off.
async fn admins_must_enrol(backend: Backend) -> TestApp {
    app_with(backend, &[("MFA_REQUIRED_ROLES", "admin")]).await
}

async fn make_admin(app: &TestApp) -> UserId {
    let store = app.store().await;
    let email = clinic_auth::domain::EmailAddress::parse("jane@example.com").unwrap();
    let jane = store.find_user_by_email(&email).await.unwrap().unwrap();
    let now = app.clock.now();
    assert!(store
        .set_user_role(&jane.id, &Role::admin(), now, now)
        .await
        .unwrap());
    jane.id
}

/// `POST /api/auth/login` with `email` and the right password.
async fn password_only(app: &TestApp, email: &str) -> Response {
    app.post_json(
        "/api/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await
}

/// The password step of a user who must enrol: the enrolment token, and
/// no session (no access token, no cookie).
async fn enrolment_token(app: &TestApp) -> String {
    let res = password_only(app, "jane@example.com").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(refresh_cookie(res.headers()), None, "no refresh cookie");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_enrolment_required"], true, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert!(body.get("access_token").is_none(), "{body}");
    body["enrolment_token"].as_str().unwrap().to_owned()
}

/// Sets up an authenticator with `token`; returns its secret.
async fn setup(app: &TestApp, token: &str) -> TotpSecret {
    let res = send(app, Method::POST, "/api/auth/mfa/totp/setup", token, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    TotpSecret::from_manual_entry_key(body["manual_entry_key"].as_str().unwrap()).unwrap()
}

async fn confirm(app: &TestApp, token: &str, secret: &TotpSecret) -> Response {
    let code = secret.code_at(TimeStep::at(app.clock.now()).unwrap());
    send(
        app,
        Method::POST,
        "/api/auth/mfa/totp/confirm",
        token,
        Some(json!({ "code": code })),
    )
    .await
}

/// A passkey for `user`, as registering one (i18-passkeys) will store it.
async fn add_passkey(app: &TestApp, user: UserId) {
    let store = app.store().await;
    store
        .add_passkey(&Passkey {
            id: "pk1".into(),
            user_id: user,
            credential_id: "Y3JlZA".into(),
            name: "Work laptop".into(),
            credential: "{}".into(),
            counter: 0,
            created_at: app.clock.now(),
            last_used_at: None,
        })
        .await
        .unwrap();
}

async fn the_enrolment_token_reaches_only_the_enrolment_routes(backend: Backend) {
    let app = admins_must_enrol(backend).await;
    make_admin(&app).await;
    let token = enrolment_token(&app).await;
    assert_eq!(claims(&token)["typ"], "mfa_enrolment");
    // Every other Bearer route refuses it, with a code that says why.
    for (method, path, body) in [
        (Method::GET, "/api/auth/me", None),
        (Method::GET, "/api/auth/sessions", None),
        (Method::POST, "/api/auth/logout-all", None),
        (Method::GET, "/api/admin/audit", None),
        (Method::POST, "/api/auth/mfa/recovery-codes", None),
        (
            Method::POST,
            "/api/auth/change-password",
            Some(json!({"current_password": PASSWORD, "new_password": "N3w!Passphrase-2026"})),
        ),
        (
            Method::DELETE,
            "/api/auth/mfa/totp",
            Some(json!({"password": PASSWORD, "code": "123456"})),
        ),
    ] {
        let res = send(&app, method.clone(), path, &token, body).await;
        let body = expect_unauthorized(res, "mfa_enrolment_required").await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("two-step sign-in"),
            "{method} {path}: {body}"
        );
    }
    // The enrolment routes take it.
    let res = send(&app, Method::GET, "/api/auth/mfa", &token, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let status: Value = res.json().await.unwrap();
    assert_eq!(status["totp_enabled"], false);
    setup(&app, &token).await;
    // It dies with its lifetime like any token.
    app.clock.advance(Duration::from_secs(11 * 60));
    let res = send(&app, Method::GET, "/api/auth/mfa", &token, None).await;
    expect_unauthorized(res, "invalid_token").await;
}

async fn confirming_with_the_enrolment_token_completes_the_sign_in(backend: Backend) {
    let app = admins_must_enrol(backend).await;
    make_admin(&app).await;
    let token = enrolment_token(&app).await;
    let secret = setup(&app, &token).await;
    let res = confirm(&app, &token, &secret).await;
    assert_eq!(res.status(), StatusCode::OK);
    let refresh = refresh_cookie(res.headers()).expect("a full sign-in sets the refresh cookie");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["recovery_codes"].as_array().unwrap().len(), 10);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["user"]["email"], "jane@example.com");
    let access = body["access_token"].as_str().unwrap();
    let c = claims(access);
    assert_eq!(c["typ"], "access");
    assert_eq!(c["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(c["auth_time"], START, "the password's time, not the code's");
    assert_eq!(app.me(access).await.status(), StatusCode::OK);
    let res = send(&app, Method::GET, "/api/admin/audit", access, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.refresh_with(&refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let refreshed: Value = res.json().await.unwrap();
    assert!(refreshed["access_token"].is_string(), "{refreshed}");
    // From now on the password leads to the ordinary second step.
    let res = password_only(&app, "jane@example.com").await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true, "{body}");
    // The ordinary second step, and a full access token: a second
    // authenticator is refused as before (one per account).
    app.clock.advance(Duration::from_secs(30));
    let code = secret.code_at(TimeStep::at(app.clock.now()).unwrap());
    let res = app
        .post_json(
            "/api/auth/mfa/verify",
            json!({"mfa_token": body["mfa_token"], "method": "totp", "code": code}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let signed_in: Value = res.json().await.unwrap();
    let access = signed_in["access_token"].as_str().unwrap();
    let res = send(&app, Method::POST, "/api/auth/mfa/totp/setup", access, None).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
}

async fn the_policy_follows_roles_and_for_all(backend: Backend) {
    // The default asks admins only: a doctor signs in with the password.
    let mut app = admins_must_enrol(backend).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    // Empty: no role, admins included.
    make_admin(&app).await;
    app.restart_with("MFA_REQUIRED_ROLES", " ").await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    // For all: whatever the role.
    app.restart_with("MFA_REQUIRED_FOR_ALL", "true").await;
    enrolment_token(&app).await;
    app.restart_with("MFA_REQUIRED_FOR_ALL", "false").await;
    app.login("jane@example.com", PASSWORD).await;
    // By role: doctors.
    app.restart_with("MFA_REQUIRED_ROLES", "doctor").await;
    app.login("jane@example.com", PASSWORD).await;
    app.register("bob@example.com").await;
    let res = password_only(&app, "bob@example.com").await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_enrolment_required"], true, "{body}");
}

async fn a_passkey_counts_as_enrolled(backend: Backend) {
    let app = admins_must_enrol(backend).await;
    let id = make_admin(&app).await;
    enrolment_token(&app).await;
    add_passkey(&app, id).await;
    // No enrolment gate: the passkey is the second factor, which the
    // password now leads to.
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(refresh_cookie(res.headers()).is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true, "{body}");
    assert_eq!(body["methods"], json!(["passkey"]), "{body}");
    assert!(body.get("mfa_enrolment_required").is_none(), "{body}");
}

async fn turning_the_policy_on_locks_nobody_out(backend: Backend) {
    let mut app = app_with(backend, &[]).await;
    make_admin(&app).await;
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;
    app.restart_with("MFA_REQUIRED_ROLES", "admin").await;
    // The access token already issued lives out its life.
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    // Its refresh answers the gate: the sign-in goes on (the cookie
    // rotates as always), its new token is an enrolment token.
    app.clock.advance(Duration::from_secs(60));
    let res = app.refresh_with(&refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated = refresh_cookie(res.headers()).expect("the refresh token rotates");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_enrolment_required"], true, "{body}");
    let token = body["enrolment_token"].as_str().unwrap().to_owned();
    expect_unauthorized(app.me(&token).await, "mfa_enrolment_required").await;
    // The sign-in is recent: enrolment works right away.
    let secret = setup(&app, &token).await;
    let res = confirm(&app, &token, &secret).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert!(body["access_token"].is_string(), "{body}");
    // And the rotated cookie refreshes to a full token again.
    let res = app.refresh_with(&rotated).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert!(body["access_token"].is_string(), "{body}");

    // A sign-in older than REAUTH_WINDOW: its refresh still answers the
    // gate, enrolling needs the password again, which leads to enrolment.
    app.register("bob@example.com").await;
    app.restart_with("MFA_REQUIRED_ROLES", " ").await;
    let (_, refresh) = app.login("bob@example.com", PASSWORD).await;
    app.restart_with("MFA_REQUIRED_FOR_ALL", "true").await;
    app.clock.advance(Duration::from_secs(11 * 60));
    let res = app.refresh_with(&refresh).await;
    let body: Value = res.json().await.unwrap();
    let token = body["enrolment_token"].as_str().unwrap().to_owned();
    let res = send(&app, Method::POST, "/api/auth/mfa/totp/setup", &token, None).await;
    expect_unauthorized(res, "reauthentication_required").await;
    let res = password_only(&app, "bob@example.com").await;
    let body: Value = res.json().await.unwrap();
    let token = body["enrolment_token"].as_str().unwrap().to_owned();
    setup(&app, &token).await;
}

async fn changing_the_password_needs_a_recent_sign_in(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let change = |access: String, new: &'static str| {
        let app = &app;
        async move {
            send(
                app,
                Method::POST,
                "/api/auth/change-password",
                &access,
                Some(json!({"current_password": PASSWORD, "new_password": new})),
            )
            .await
        }
    };
    // Eleven minutes on, the access token (15 minutes) still works, but
    // the sign-in is too old to change the password.
    app.clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    let res = change(access.clone(), "N3w!Passphrase-2026").await;
    expect_unauthorized(res, "reauthentication_required").await;
    let res = password_only(&app, "jane@example.com").await;
    assert_eq!(res.status(), StatusCode::OK, "the password did not change");
    let body: Value = res.json().await.unwrap();
    let fresh = body["access_token"].as_str().unwrap().to_owned();
    let res = change(fresh, "N3w!Passphrase-2026").await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn the_portal_sends_an_enrolment_only_session_to_two_step(backend: Backend) {
    let app = admins_must_enrol(backend).await;
    let id = make_admin(&app).await;
    let browser = portal::browser();
    let res = portal::sign_in(&app, &browser, "jane@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account/two-step");
    assert_eq!(
        refresh_cookie(res.headers()),
        None,
        "the password alone reaches no API session"
    );
    // Every signed-in page sends it to the enrolment page.
    for path in ["/account", "/"] {
        let res = portal::get(&app, &browser, path).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
        let to = location(&res);
        assert!(
            to == "/account/two-step" || to == "/account",
            "{path} -> {to}"
        );
    }
    // Once a factor is on (a passkey here), the next page turns the
    // session into a full sign-in, with its refresh cookie.
    add_passkey(&app, id).await;
    let res = portal::get(&app, &browser, "/account").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account");
    assert!(
        refresh_cookie(res.headers()).is_some(),
        "a full sign-in now"
    );
    let res = portal::get(&app, &browser, "/account").await;
    assert_eq!(res.status(), StatusCode::OK);
}
