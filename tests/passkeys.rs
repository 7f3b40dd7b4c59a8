//! Passkeys over the API (issue 18), on every backend, with webauthn-rs's
//! own software authenticator (`SoftPasskey`) answering the ceremonies:
//! add, list, rename, remove (step-up, owner only), sign in alone and as
//! the second step, the ceremony state single use and expiring by the test
//! clock, a signature counter that goes back refused and audited, another
//! origin's answer refused.
//!
//! `SoftPasskey` keeps no resident keys and returns no user handle, so for
//! a discoverable sign-in the test plays the browser's part: it names the
//! registered credential in the options and adds the user handle (from the
//! registration options) to the answer. Neither is covered by the
//! signature; what the server checks is unchanged.

mod common;

use std::time::Duration;

use base64::Engine;
use clinic_auth::domain::AuditEvent;
use common::{expect_error, refresh_cookie, wait_for_subject, TestApp, PASSWORD};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{
    Base64UrlSafeData, CreationChallengeResponse, PublicKeyCredential, RequestChallengeResponse,
    Url,
};

backend_tests!(
    a_passkey_is_added_listed_and_signs_in_on_its_own,
    a_passkey_serves_as_the_second_step_after_the_password,
    ceremonies_are_single_use_and_expire_by_the_clock,
    a_ceremony_belongs_to_its_user,
    a_signature_counter_that_goes_back_is_refused_and_audited,
    another_origins_answer_is_refused,
    a_passkey_whose_user_handle_is_not_its_owners_is_refused,
    only_the_owner_renames_or_removes_and_removal_needs_a_recent_sign_in,
    a_passkey_can_be_the_first_factor_with_an_enrolment_token,
    an_ip_app_url_runs_without_passkeys,
);

const ORIGIN: &str = "http://localhost:8000";

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    access: Option<&str>,
    body: Option<Value>,
) -> Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(access) = access {
        req = req.bearer_auth(access);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

fn authenticator() -> WebauthnAuthenticator<SoftPasskey> {
    WebauthnAuthenticator::new(SoftPasskey::new(true))
}

/// What a passkey registration left the test holding.
struct Registered {
    id: String,
    credential_id: Base64UrlSafeData,
    user_handle: Base64UrlSafeData,
}

/// Starts a registration; returns the ceremony id, the options, and the
/// user handle they carry.
async fn register_options(app: &TestApp, access: &str) -> (String, CreationChallengeResponse) {
    let res = send(
        app,
        Method::POST,
        "/api/auth/passkeys/register/options",
        Some(access),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"], 300);
    let options = serde_json::from_value(body["options"].clone()).unwrap();
    (body["ceremony_id"].as_str().unwrap().to_owned(), options)
}

async fn register_verify(
    app: &TestApp,
    access: &str,
    ceremony: &str,
    credential: Value,
    name: Option<&str>,
) -> Response {
    send(
        app,
        Method::POST,
        "/api/auth/passkeys/register/verify",
        Some(access),
        Some(json!({ "ceremony_id": ceremony, "credential": credential, "name": name })),
    )
    .await
}

/// Registration options for the account behind `access`, answered by a
/// new authenticator as if the page were at `origin`.
async fn answered_registration(app: &TestApp, access: &str, origin: &str) -> (String, Value) {
    let (ceremony, options) = register_options(app, access).await;
    let answer = authenticator()
        .do_registration(Url::parse(origin).unwrap(), options)
        .unwrap();
    (ceremony, serde_json::to_value(&answer).unwrap())
}

/// Adds a passkey made by `auth` to the account behind `access`.
async fn add_passkey(
    app: &TestApp,
    access: &str,
    auth: &mut WebauthnAuthenticator<SoftPasskey>,
    name: Option<&str>,
) -> Registered {
    let (ceremony, options) = register_options(app, access).await;
    let user_handle = options.public_key.user.id.clone();
    let answer = auth
        .do_registration(Url::parse(ORIGIN).unwrap(), options)
        .unwrap();
    let credential_id = answer.raw_id.clone();
    let res = register_verify(
        app,
        access,
        &ceremony,
        serde_json::to_value(&answer).unwrap(),
        name,
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    Registered {
        id: body["id"].as_str().unwrap().to_owned(),
        credential_id,
        user_handle,
    }
}

/// Sign-in options (with `mfa_token`: the second step).
async fn login_options(
    app: &TestApp,
    mfa_token: Option<&str>,
) -> (String, RequestChallengeResponse) {
    let body = match mfa_token {
        Some(token) => json!({ "mfa_token": token }),
        None => json!({}),
    };
    let res = send(
        app,
        Method::POST,
        "/api/auth/passkeys/login/options",
        None,
        Some(body),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let options = serde_json::from_value(body["options"].clone()).unwrap();
    (body["ceremony_id"].as_str().unwrap().to_owned(), options)
}

/// The authenticator's answer to discoverable options, as a browser with
/// a resident key would give it (see the module comment).
fn discoverable_answer(
    auth: &mut WebauthnAuthenticator<SoftPasskey>,
    mut options: RequestChallengeResponse,
    key: &Registered,
    origin: &str,
) -> PublicKeyCredential {
    assert!(options.public_key.allow_credentials.is_empty());
    let mut named = serde_json::to_value(&options).unwrap();
    named["publicKey"]["allowCredentials"] =
        json!([{ "type": "public-key", "id": key.credential_id }]);
    options = serde_json::from_value(named).unwrap();
    let mut answer = auth
        .do_authentication(Url::parse(origin).unwrap(), options)
        .unwrap();
    answer.response.user_handle = Some(key.user_handle.clone());
    answer
}

async fn login_verify(
    app: &TestApp,
    ceremony: &str,
    answer: &PublicKeyCredential,
    mfa_token: Option<&str>,
) -> Response {
    send(
        app,
        Method::POST,
        "/api/auth/passkeys/login/verify",
        None,
        Some(json!({
            "ceremony_id": ceremony,
            "credential": serde_json::to_value(answer).unwrap(),
            "mfa_token": mfa_token,
        })),
    )
    .await
}

/// A full discoverable sign-in with `key`; returns the answer.
async fn passkey_sign_in(
    app: &TestApp,
    auth: &mut WebauthnAuthenticator<SoftPasskey>,
    key: &Registered,
) -> Response {
    let (ceremony, options) = login_options(app, None).await;
    let answer = discoverable_answer(auth, options, key, ORIGIN);
    login_verify(app, &ceremony, &answer, None).await
}

/// A new sign-in with `key` (Jane's password now asks for a second step);
/// returns its access token.
async fn fresh_access(
    app: &TestApp,
    auth: &mut WebauthnAuthenticator<SoftPasskey>,
    key: &Registered,
) -> String {
    let res = passkey_sign_in(app, auth, key).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn claims(access: &str) -> Value {
    let payload = access.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn events(app: &TestApp, event: AuditEvent) -> Vec<clinic_auth::domain::AuditRecord> {
    app.flush_audit().await;
    app.store()
        .await
        .audit_events_after(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == event)
        .collect()
}

async fn jane(backend: common::Backend) -> (TestApp, String) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    (app, access)
}

async fn list(app: &TestApp, access: &str) -> Vec<Value> {
    let res = send(app, Method::GET, "/api/auth/passkeys", Some(access), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn a_passkey_is_added_listed_and_signs_in_on_its_own(backend: common::Backend) {
    let (app, access) = jane(backend).await;
    let mut auth = authenticator();
    assert!(list(&app, &access).await.is_empty());
    let key = add_passkey(&app, &access, &mut auth, Some("  Work laptop ")).await;
    let listed = list(&app, &access).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], key.id.as_str());
    assert_eq!(listed[0]["name"], "Work laptop");
    assert!(listed[0]["last_used_at"].is_null());
    // What is enrolled counts it.
    let status: Value = send(&app, Method::GET, "/api/auth/mfa", Some(&access), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["passkeys"], 1, "{status}");
    let added = events(&app, AuditEvent::PasskeyAdded).await;
    assert_eq!(added.len(), 1);
    let mail = wait_for_subject(&app.outbox(), "A passkey was added", 1).await;
    assert!(mail[0].text.contains("Work laptop"));

    // Signs in on its own: the login answer, amr saying how.
    let res = passkey_sign_in(&app, &mut auth, &key).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(refresh_cookie(res.headers()).is_some());
    let body: Value = res.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(claims(token)["amr"], json!(["hwk", "mfa"]));
    assert_eq!(body["user"]["email"], "jane@example.com");
    let me = app.me(token).await;
    assert_eq!(me.status(), StatusCode::OK);
    let logins = events(&app, AuditEvent::LoginSuccess).await;
    assert!(logins
        .iter()
        .any(|e| e.detail.as_deref() == Some("factors=hwk,mfa")));
    assert!(!list(&app, &access).await[0]["last_used_at"].is_null());

    // The name defaults when none is given.
    let mut other = authenticator();
    let second = add_passkey(&app, &access, &mut other, None).await;
    let listed = list(&app, &access).await;
    assert_eq!(listed[1]["id"], second.id.as_str());
    assert_eq!(listed[1]["name"], "Passkey");
}

async fn a_passkey_serves_as_the_second_step_after_the_password(backend: common::Backend) {
    let (app, access) = jane(backend).await;
    let mut auth = authenticator();
    let key = add_passkey(&app, &access, &mut auth, Some("Phone")).await;

    // A user with only a passkey gets the second step after the password.
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(refresh_cookie(res.headers()).is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true);
    assert_eq!(body["methods"], json!(["passkey"]));
    let mfa_token = body["mfa_token"].as_str().unwrap().to_owned();

    let (ceremony, options) = login_options(&app, Some(&mfa_token)).await;
    // Only Jane's passkeys are offered.
    let allowed: Vec<_> = options
        .public_key
        .allow_credentials
        .iter()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(allowed, vec![key.credential_id.clone()]);
    let answer = auth
        .do_authentication(Url::parse(ORIGIN).unwrap(), options)
        .unwrap();
    // The ceremony of a second step needs its mfa_token.
    let res = login_verify(&app, &ceremony, &answer, None).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "passkey_ceremony_invalid").await;

    let (ceremony, options) = login_options(&app, Some(&mfa_token)).await;
    let answer = auth
        .do_authentication(Url::parse(ORIGIN).unwrap(), options)
        .unwrap();
    let res = login_verify(&app, &ceremony, &answer, Some(&mfa_token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(refresh_cookie(res.headers()).is_some());
    let body: Value = res.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(claims(token)["amr"], json!(["pwd", "hwk", "mfa"]));

    // The mfa token died with its use.
    let res = send(
        &app,
        Method::POST,
        "/api/auth/passkeys/login/options",
        None,
        Some(json!({ "mfa_token": mfa_token })),
    )
    .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "mfa_token_invalid").await;
}

async fn ceremonies_are_single_use_and_expire_by_the_clock(backend: common::Backend) {
    let (app, access) = jane(backend).await;
    let mut auth = authenticator();
    let key = add_passkey(&app, &access, &mut auth, None).await;

    // Single use: a second answer to the same options is refused.
    let (ceremony, options) = login_options(&app, None).await;
    let first = discoverable_answer(&mut auth, options.clone(), &key, ORIGIN);
    let second = discoverable_answer(&mut auth, options, &key, ORIGIN);
    let res = login_verify(&app, &ceremony, &first, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = login_verify(&app, &ceremony, &second, None).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "passkey_ceremony_invalid").await;

    // Expired by the clock: 5 minutes.
    let (ceremony, options) = login_options(&app, None).await;
    let answer = discoverable_answer(&mut auth, options, &key, ORIGIN);
    app.clock.advance(Duration::from_secs(301));
    let res = login_verify(&app, &ceremony, &answer, None).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "passkey_ceremony_invalid").await;

    // Registration too (a fresh sign-in, so step-up is not the refusal).
    let access = fresh_access(&app, &mut auth, &key).await;
    let (ceremony, answer) = answered_registration(&app, &access, ORIGIN).await;
    app.clock.advance(Duration::from_secs(301));
    let res = register_verify(&app, &access, &ceremony, answer, None).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "passkey_ceremony_invalid").await;
    // An unknown ceremony id, and garbage, are refused the same way.
    let res = login_verify(&app, "not-a-ceremony", &first, None).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "passkey_ceremony_invalid").await;
}

async fn a_ceremony_belongs_to_its_user(backend: common::Backend) {
    let (app, access) = jane(backend).await;
    app.register("john@example.com").await;
    let (john, _) = app.login("john@example.com", PASSWORD).await;
    let (ceremony, answer) = answered_registration(&app, &access, ORIGIN).await;
    // John cannot finish Jane's registration (and it is used up trying).
    let res = register_verify(&app, &john, &ceremony, answer, None).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "passkey_ceremony_invalid").await;
    assert!(list(&app, &john).await.is_empty());
    assert!(list(&app, &access).await.is_empty());
}

async fn a_signature_counter_that_goes_back_is_refused_and_audited(backend: common::Backend) {
    let (app, access) = jane(backend).await;
    let mut auth = authenticator();
    let key = add_passkey(&app, &access, &mut auth, None).await;
    let res = passkey_sign_in(&app, &mut auth, &key).await;
    assert_eq!(res.status(), StatusCode::OK);

    // The stored counter jumps ahead of the authenticator's, as if a copy
    // of the key had signed in many times meanwhile.
    let store = app.store().await;
    let credential_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key.credential_id);
    let stored = store.find_passkey(&credential_id).await.unwrap().unwrap();
    assert!(stored.counter >= 1);
    let mut credential: Value = serde_json::from_str(&stored.credential).unwrap();
    credential["cred"]["counter"] = json!(1000);
    let credential = credential.to_string();
    let at = clinic_auth::clock::Clock::now(&*app.clock);
    let bumped = store.record_passkey_use(&stored.id, &credential, 1000, at);
    assert!(bumped.await.unwrap());

    let res = passkey_sign_in(&app, &mut auth, &key).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "passkey_invalid").await;
    let regressions = events(&app, AuditEvent::PasskeyCounterRegression).await;
    assert_eq!(regressions.len(), 1);
    assert_eq!(
        regressions[0].user_id.as_deref(),
        Some(stored.user_id.as_str())
    );
    // Nothing was updated by the refused sign-in.
    let after = store.find_passkey(&credential_id).await.unwrap().unwrap();
    assert_eq!(after.counter, 1000);
}

async fn another_origins_answer_is_refused(backend: common::Backend) {
    let (app, access) = jane(backend).await;
    // Registration made for another site.
    let (ceremony, answer) = answered_registration(&app, &access, "http://localhost:9999").await;
    let res = register_verify(&app, &access, &ceremony, answer, None).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "passkey_invalid").await;
    assert!(list(&app, &access).await.is_empty());

    // A sign-in answered for another origin.
    let mut auth = authenticator();
    let key = add_passkey(&app, &access, &mut auth, None).await;
    let (ceremony, options) = login_options(&app, None).await;
    let answer = discoverable_answer(&mut auth, options, &key, "http://localhost:9999");
    let res = login_verify(&app, &ceremony, &answer, None).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "passkey_invalid").await;
    assert!(events(&app, AuditEvent::LoginSuccess).await.len() == 1);
}

async fn a_passkey_whose_user_handle_is_not_its_owners_is_refused(backend: common::Backend) {
    let (app, access) = jane(backend).await;
    let mut auth = authenticator();
    let mut key = add_passkey(&app, &access, &mut auth, None).await;
    key.user_handle = Base64UrlSafeData::from(vec![7u8; 16]);
    let res = passkey_sign_in(&app, &mut auth, &key).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "passkey_invalid").await;
    // Not a passkey answer at all.
    let (ceremony, _) = login_options(&app, None).await;
    let res = send(
        &app,
        Method::POST,
        "/api/auth/passkeys/login/verify",
        None,
        Some(json!({ "ceremony_id": ceremony, "credential": {"id": 1} })),
    )
    .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "passkey_invalid").await;
}

async fn only_the_owner_renames_or_removes_and_removal_needs_a_recent_sign_in(
    backend: common::Backend,
) {
    let (app, access) = jane(backend).await;
    let mut auth = authenticator();
    let key = add_passkey(&app, &access, &mut auth, Some("Laptop")).await;
    app.register("john@example.com").await;
    let (john, _) = app.login("john@example.com", PASSWORD).await;
    let path = format!("/api/auth/passkeys/{}", key.id);

    let res = send(&app, Method::DELETE, &path, Some(&john), None).await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let rename = Some(json!({ "name": "Mine now" }));
    let res = send(&app, Method::PATCH, &path, Some(&john), rename.clone()).await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(list(&app, &access).await[0]["name"], "Laptop");

    let res = send(&app, Method::PATCH, &path, Some(&access), rename).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(list(&app, &access).await[0]["name"], "Mine now");
    let bad = Some(json!({ "name": "x".repeat(65) }));
    let res = send(&app, Method::PATCH, &path, Some(&access), bad).await;
    expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    // Removing needs a sign-in within REAUTH_WINDOW (10 minutes).
    app.clock.advance(Duration::from_secs(11 * 60));
    let fresh = fresh_access(&app, &mut auth, &key).await;
    let res = send(&app, Method::DELETE, &path, Some(&access), None).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "reauthentication_required").await;
    let res = send(&app, Method::DELETE, &path, Some(&fresh), None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(list(&app, &fresh).await.is_empty());
    assert_eq!(events(&app, AuditEvent::PasskeyRemoved).await.len(), 1);
    wait_for_subject(&app.outbox(), "A passkey was removed", 1).await;
    let res = send(&app, Method::DELETE, &path, Some(&fresh), None).await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
}

/// MFA_REQUIRED_ROLES: an admin without a factor gets an enrolment token;
/// adding a passkey with it completes the sign-in (no password again).
async fn a_passkey_can_be_the_first_factor_with_an_enrolment_token(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[("MFA_REQUIRED_ROLES", "admin")]).await;
    let store = app.store().await;
    let email = clinic_auth::domain::EmailAddress::parse("jane@example.com").unwrap();
    let jane = store.find_user_by_email(&email).await.unwrap().unwrap();
    let now = clinic_auth::clock::Clock::now(&*app.clock);
    let admin = clinic_auth::domain::Role::admin();
    assert!(store
        .set_user_role(&jane.id, &admin, now, now)
        .await
        .unwrap());
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_enrolment_required"], true, "{body}");
    let enrolment = body["enrolment_token"].as_str().unwrap().to_owned();

    let mut auth = authenticator();
    let (ceremony, options) = register_options(&app, &enrolment).await;
    let answer = auth
        .do_registration(Url::parse(ORIGIN).unwrap(), options)
        .unwrap();
    let res = register_verify(
        &app,
        &enrolment,
        &ceremony,
        serde_json::to_value(&answer).unwrap(),
        Some("Phone"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(refresh_cookie(res.headers()).is_some(), "a full sign-in");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["passkey"]["name"], "Phone", "{body}");
    let access = body["access_token"].as_str().unwrap();
    let claims = common::jwt_claims(access);
    assert_eq!(claims["amr"], json!(["pwd", "swk", "mfa"]), "{claims}");
    assert_eq!(list(&app, access).await.len(), 1);
    // The enrolment token still reaches nothing else.
    let res = send(&app, Method::GET, "/api/auth/me", Some(&enrolment), None).await;
    common::expect_unauthorized(res, "mfa_enrolment_required").await;
}

/// WebAuthn has no RP id for an IP address. A clinic that serves the
/// service at one still gets everything else; the passkey routes say why
/// they cannot help.
async fn an_ip_app_url_runs_without_passkeys(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[("APP_URL", "http://127.0.0.1:8000")]).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    for (path, token) in [
        ("/api/auth/passkeys/login/options", None),
        ("/api/auth/passkeys/register/options", Some(access.as_str())),
    ] {
        let res = send(&app, Method::POST, path, token, Some(json!({}))).await;
        common::expect_error(res, StatusCode::NOT_FOUND, "passkeys_unavailable").await;
    }
}
