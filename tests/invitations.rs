//! Invitations (issue 19), on every backend: an admin invites `{email,
//! name, role}` over the API; the invitee opens the emailed link (which a
//! mail scanner may open first), chooses a password on the portal page and
//! is signed in with the invited role. Links are single use, die when
//! resent, revoked or expired (test clock), and only admins with a recent
//! sign-in manage invitations.

mod common;

use chrono::{Duration, Utc};
use common::admin_in;
use common::portal::{browser, csrf_of, get, location, page_csrf, post_form};
use common::{expect_error, wait_for_subject, Email, TestApp, PASSWORD};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    an_invitee_sets_up_their_account_from_the_link,
    invitations_refuse_duplicates_bad_input_and_non_admins,
    revoking_and_resending_kill_the_old_link,
    an_invitation_expires_by_the_clock_and_can_be_sent_again,
    a_role_that_needs_a_second_factor_is_sent_to_enrolment,
    an_offboarded_admins_invitations_stop_working,
);

const SUBJECT: &str = "You are invited to";
const LINK: &str = "http://localhost:8000/invite?token=";
const EXPIRED_TITLE: &str = "This invitation link has expired or was already used";
const NEW_PASSWORD: &str = "a long new passphrase 42";

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    access: &str,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app
        .client
        .request(method, app.url(path))
        .bearer_auth(access);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

async fn invite(app: &TestApp, access: &str, email: &str, role: &str) -> reqwest::Response {
    call(
        app,
        reqwest::Method::POST,
        access,
        "/api/admin/invitations",
        Some(json!({"email": email, "name": "Sam Lee", "role": role})),
    )
    .await
}

async fn list(app: &TestApp, access: &str) -> Vec<Value> {
    let res = call(
        app,
        reqwest::Method::GET,
        access,
        "/api/admin/invitations",
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["invitations"].as_array().unwrap().clone()
}

/// The token in an invitation email's link (text and HTML parts agree).
fn token_of(email: &Email) -> String {
    let start = email.text.find(LINK).expect("the text part has the link") + LINK.len();
    let token: String = email.text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert!(email.html.contains(&format!("{LINK}{token}")));
    token
}

/// The link of the `n`th invitation email (1-based) to `to`.
async fn nth_link(app: &TestApp, to: &str, n: usize) -> String {
    let emails = wait_for_subject(&app.outbox(), SUBJECT, n).await;
    let mine: Vec<&Email> = emails.iter().filter(|e| e.to.contains(to)).collect();
    assert!(mine.len() >= n, "{n} invitations to {to}: {emails:?}");
    token_of(mine[n - 1])
}

async fn open_link(app: &TestApp, client: &Client, token: &str) -> (StatusCode, String) {
    let res = get(app, client, &format!("/invite?token={token}")).await;
    (res.status(), res.text().await.unwrap())
}

async fn submit(
    app: &TestApp,
    client: &Client,
    csrf: &str,
    token: &str,
    password: &str,
    confirm: &str,
) -> reqwest::Response {
    post_form(
        app,
        client,
        "/invite",
        &[
            ("csrf", csrf),
            ("token", token),
            ("name", "Sam Lee-Park"),
            ("password", password),
            ("password_confirm", confirm),
        ],
    )
    .await
}

async fn an_invitee_sets_up_their_account_from_the_link(backend: common::Backend) {
    let mut app = TestApp::spawn_with(backend, &[("ROLES", "doctor,nurse")]).await;
    admin_in(&app, "admin@example.com").await;
    // Closed registration still lets admins invite (it closes only sign-up).
    app.restart_with("REGISTRATION", "closed").await;
    let (access, _) = app.login("admin@example.com", PASSWORD).await;
    let admin_id = app.me(&access).await.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let res = invite(&app, &access, " Sam.Lee@Example.com ", "nurse").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["email"], "sam.lee@example.com", "normalised");
    assert_eq!(view["role"], "nurse");
    assert_eq!(view["status"], "pending");
    assert_eq!(view["invited_by"], admin_id.as_str());
    let token = nth_link(&app, "sam.lee@example.com", 1).await;
    assert!(!view.to_string().contains(&token), "never the token");
    let email = &wait_for_subject(&app.outbox(), SUBJECT, 1).await[0];
    assert!(email.subject.contains("Clinic Auth"), "{}", email.subject);
    assert!(email.text.contains("as nurse"), "{}", email.text);

    // A scanner opens the link first; the page still works after.
    let scanner = browser();
    assert_eq!(open_link(&app, &scanner, &token).await.0, StatusCode::OK);
    let client = browser();
    let (status, html) = open_link(&app, &client, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("sam.lee@example.com"), "the address is shown");
    assert!(html.contains("autocomplete=\"username\""));
    assert!(html.contains("autocomplete=\"new-password\""));
    assert!(html.contains("value=\"Sam Lee\""), "the name is prefilled");
    let csrf = csrf_of(&html);

    // A mistake keeps the link.
    let res = submit(&app, &client, &csrf, &token, NEW_PASSWORD, "something else").await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("The passwords do not match."));
    let res = submit(&app, &client, &csrf, &token, "short", "short").await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Accepted: signed in to the portal, with the invited role.
    let res = submit(&app, &client, &csrf, &token, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account");
    let res = get(&app, &client, "/account").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("Sam Lee-Park"));
    let (sam_access, _) = app.login("sam.lee@example.com", NEW_PASSWORD).await;
    let me: Value = app.me(&sam_access).await.json().await.unwrap();
    assert_eq!(me["role"], "nurse");
    assert_eq!(me["name"], "Sam Lee-Park");
    assert_eq!(me["verified"], true, "the link proved the mailbox");

    // Used: the link is dead, on GET and on POST, and nothing is listed.
    let (status, html) = open_link(&app, &browser(), &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains(&format!("<title>{EXPIRED_TITLE}")), "{html}");
    assert!(html.contains("administrator"));
    let other = browser();
    let csrf = page_csrf(&app, &other, "/login").await;
    let res = submit(&app, &other, &csrf, &token, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(list(&app, &access).await.is_empty());

    let sent = app.audit_events(&access, "invitation_sent").await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["email"], "sam.lee@example.com");
    let detail = sent[0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("by={admin_id} invitation=")),
        "{detail}"
    );
    assert!(detail.ends_with("role=nurse"), "{detail}");
    let accepted = app.audit_events(&access, "invitation_accepted").await;
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["user_id"], me["id"]);
    let detail = accepted[0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("invited_by={admin_id} ")),
        "{detail}"
    );
}

async fn invitations_refuse_duplicates_bad_input_and_non_admins(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[("ROLES", "doctor,nurse")]).await;
    let (_, access) = admin_in(&app, "admin@example.com").await;
    let res = invite(&app, &access, "sam@example.com", "nurse").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let res = invite(&app, &access, "SAM@example.com", "doctor").await;
    expect_error(res, StatusCode::CONFLICT, "invitation_pending").await;
    let res = invite(&app, &access, "jane@example.com", "nurse").await;
    expect_error(res, StatusCode::CONFLICT, "email_taken").await;
    let res = invite(&app, &access, "kim@example.com", "surgeon").await;
    let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["error"]["fields"]["role"][0]
        .as_str()
        .unwrap()
        .contains("admin, doctor, nurse"));
    let res = call(
        &app,
        reqwest::Method::POST,
        &access,
        "/api/admin/invitations",
        Some(json!({"email": "not an address", "name": "", "role": "nurse"})),
    )
    .await;
    let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["error"]["fields"]["email"].is_array(), "{body}");
    assert!(body["error"]["fields"]["name"].is_array(), "{body}");
    let res = call(
        &app,
        reqwest::Method::POST,
        &access,
        "/api/admin/invitations",
        Some(json!({"email": "kim@example.com", "name": "Kim", "role": "nurse", "token": "x"})),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields"
    );
    assert_eq!(list(&app, &access).await.len(), 1, "nothing else stored");

    // A doctor may do none of it; nobody signed out either.
    let (doctor, _) = app.login("jane@example.com", PASSWORD).await;
    for (method, path) in [
        (reqwest::Method::POST, "/api/admin/invitations".to_owned()),
        (reqwest::Method::GET, "/api/admin/invitations".to_owned()),
        (
            reqwest::Method::POST,
            format!("/api/admin/invitations/{id}/resend"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/admin/invitations/{id}"),
        ),
    ] {
        let body = Some(json!({"email": "x@example.com", "name": "X", "role": "nurse"}));
        let res = call(&app, method.clone(), &doctor, &path, body.clone()).await;
        expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;
        let res = app
            .client
            .request(method, app.url(&path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // An admin whose sign-in is old must sign in again first (step-up).
    app.clock.advance(std::time::Duration::from_secs(14 * 60));
    let res = call(
        &app,
        reqwest::Method::GET,
        &access,
        "/api/admin/invitations",
        None,
    )
    .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "reauthentication_required").await;
}

async fn revoking_and_resending_kill_the_old_link(backend: common::Backend) {
    let app = TestApp::spawn_with(backend, &[("ROLES", "doctor,nurse")]).await;
    let (admin_id, access) = admin_in(&app, "admin@example.com").await;
    let res = invite(&app, &access, "sam@example.com", "doctor").await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = nth_link(&app, "sam@example.com", 1).await;

    let res = call(
        &app,
        reqwest::Method::POST,
        &access,
        &format!("/api/admin/invitations/{id}/resend"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["resend_count"], 1);
    let second = nth_link(&app, "sam@example.com", 2).await;
    assert_ne!(first, second);
    assert_eq!(
        open_link(&app, &browser(), &first).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(open_link(&app, &browser(), &second).await.0, StatusCode::OK);

    let path = format!("/api/admin/invitations/{id}");
    let res = call(&app, reqwest::Method::DELETE, &access, &path, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, html) = open_link(&app, &browser(), &second).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains(EXPIRED_TITLE));
    let res = call(&app, reqwest::Method::DELETE, &access, &path, None).await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = call(
        &app,
        reqwest::Method::POST,
        &access,
        &format!("{path}/resend"),
        None,
    )
    .await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let revoked = app.audit_events(&access, "invitation_revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        revoked[0]["detail"],
        format!("by={admin_id} invitation={id} role=doctor")
    );
    assert_eq!(
        app.audit_events(&access, "invitation_resent").await.len(),
        1
    );
    // Revoked, the address may be invited again.
    let res = invite(&app, &access, "sam@example.com", "nurse").await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

async fn an_invitation_expires_by_the_clock_and_can_be_sent_again(backend: common::Backend) {
    let app = TestApp::spawn_with(backend, &[("INVITE_EXPIRES", "24h")]).await;
    let (_, access) = admin_in(&app, "admin@example.com").await;
    let res = invite(&app, &access, "sam@example.com", "doctor").await;
    let view: Value = res.json().await.unwrap();
    let id = view["id"].as_str().unwrap().to_owned();
    let token = nth_link(&app, "sam@example.com", 1).await;
    let client = browser();
    let csrf = csrf_of(&open_link(&app, &client, &token).await.1);

    app.clock
        .advance(std::time::Duration::from_secs(24 * 3600 + 1));
    let (status, html) = open_link(&app, &browser(), &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains(EXPIRED_TITLE));
    let res = submit(&app, &client, &csrf, &token, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "the form is too late too"
    );

    // Still listed, as expired; a new invitation replaces it.
    let (access, _) = app.login("admin@example.com", PASSWORD).await;
    let listed = list(&app, &access).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "expired");
    let res = invite(&app, &access, "sam@example.com", "doctor").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let new_id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_id, id);
    let listed = list(&app, &access).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "pending");
    let token = nth_link(&app, "sam@example.com", 2).await;
    let expires: chrono::DateTime<Utc> =
        serde_json::from_value(listed[0]["expires_at"].clone()).unwrap();
    let created: chrono::DateTime<Utc> =
        serde_json::from_value(listed[0]["created_at"].clone()).unwrap();
    assert_eq!(expires - created, Duration::hours(24), "INVITE_EXPIRES");
    let client = browser();
    let csrf = csrf_of(&open_link(&app, &client, &token).await.1);
    let res = submit(&app, &client, &csrf, &token, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

async fn a_role_that_needs_a_second_factor_is_sent_to_enrolment(backend: common::Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("ROLES", "doctor,nurse"), ("MFA_REQUIRED_ROLES", "nurse")],
    )
    .await;
    let (_, access) = admin_in(&app, "admin@example.com").await;
    invite(&app, &access, "sam@example.com", "nurse").await;
    let token = nth_link(&app, "sam@example.com", 1).await;
    let client = browser();
    let csrf = csrf_of(&open_link(&app, &client, &token).await.1);
    let res = submit(&app, &client, &csrf, &token, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account/two-step");
    // Enrolment only: the account page sends them back to enrol.
    let res = get(&app, &client, "/account").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account/two-step");
}

async fn an_offboarded_admins_invitations_stop_working(backend: common::Backend) {
    let app = TestApp::spawn(backend).await;
    let (first_id, first) = admin_in(&app, "first@example.com").await;
    let (_, second) = admin_in(&app, "second@example.com").await;
    invite(&app, &first, "sam@example.com", "doctor").await;
    let token = nth_link(&app, "sam@example.com", 1).await;
    assert_eq!(open_link(&app, &browser(), &token).await.0, StatusCode::OK);
    let res = call(
        &app,
        reqwest::Method::POST,
        &second,
        &format!("/api/admin/users/{first_id}/disable"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        open_link(&app, &browser(), &token).await.0,
        StatusCode::BAD_REQUEST
    );
}
