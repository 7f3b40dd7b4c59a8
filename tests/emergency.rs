//! Emergency ("break-glass") access (issue 19, HIPAA 164.312(a)(2)(ii)), on
//! every backend: who may start it, what its tokens carry, that it ends by
//! time or by the user and is never renewed, that every administrator is
//! told, and that another administrator reviews each use.

mod common;

use std::time::Duration;

use chrono::Utc;
use clinic_auth::domain::{AuditKey, UserId};
use clinic_auth::services::audit::verify_chain;
use common::admin_in;
use common::{expect_error, jwt_claims, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};

backend_tests!(
    breaking_the_glass_is_permitted_recent_and_reasoned,
    an_emergency_token_carries_the_window_and_never_outlives_it,
    ending_early_cuts_the_window_s_tokens,
    every_use_is_reviewed_by_another_administrator,
    the_portal_breaks_the_glass_with_a_banner_on_every_page,
);

const REASON: &str = "Patient in bay 3 unconscious; allergy record held by cardiology";

/// Gives jane the permission, signs her in: her id, access and refresh.
async fn permitted_jane(app: &TestApp) -> (String, String, String) {
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;
    let id = jwt_claims(&access)["sub"].as_str().unwrap().to_owned();
    assert!(app
        .store()
        .await
        .set_emergency_access(&UserId::new(id.clone()), true, Utc::now())
        .await
        .unwrap());
    (id, access, refresh)
}

async fn start(app: &TestApp, access: &str, reason: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/emergency-access"))
        .bearer_auth(access)
        .json(&json!({ "reason": reason }))
        .send()
        .await
        .unwrap()
}

async fn end(app: &TestApp, access: &str) -> reqwest::Response {
    app.client
        .delete(app.url("/api/auth/emergency-access"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

async fn started(app: &TestApp, access: &str) -> Value {
    let res = start(app, access, REASON).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

async fn queue(app: &TestApp, access: &str, query: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/admin/emergency{query}")))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

async fn queued(app: &TestApp, access: &str, query: &str) -> Vec<Value> {
    let res = queue(app, access, query).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["uses"].as_array().unwrap().clone()
}

fn audit_key(app: &TestApp) -> AuditKey {
    let path = app.dir.path().join("data/audit-key");
    AuditKey::from_hex(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn breaking_the_glass_is_permitted_recent_and_reasoned(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    // Without the permission: refused, however good the reason.
    let res = start(&app, &access, REASON).await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;

    // An administrator grants the permission (audited).
    let (_, admin) = admin_in(&app, "admin@example.com").await;
    let jane_id = jwt_claims(&access)["sub"].as_str().unwrap().to_owned();
    let res = app
        .client
        .patch(app.url(&format!("/api/admin/users/{jane_id}")))
        .bearer_auth(&admin)
        .json(&json!({"emergency_access": true, "reason": "Night cover"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["emergency_access"], true, "{view}");
    let granted = app
        .audit_events(&admin, "emergency_permission_changed")
        .await;
    assert_eq!(granted.len(), 1);
    assert!(granted[0]["detail"]
        .as_str()
        .unwrap()
        .contains("emergency_access=granted"));
    for reason in ["", "urgent", "   short reason   "] {
        let body = expect_error(
            start(&app, &access, reason).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert!(body["error"]["fields"]["reason"].is_array(), "{body}");
    }
    let res = app
        .client
        .post(app.url("/api/auth/emergency-access"))
        .bearer_auth(&access)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = start(&app, "not-a-token", REASON).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // A sign-in older than REAUTH_WINDOW must be renewed first.
    app.clock.advance(Duration::from_secs(11 * 60));
    let (fresh, _) = app.login("jane@example.com", PASSWORD).await;
    expect_error(
        start(&app, &access, REASON).await,
        StatusCode::UNAUTHORIZED,
        "reauthentication_required",
    )
    .await;
    // Administrators have it without a grant.
    let (admin, _) = app.login("admin@example.com", PASSWORD).await;
    started(&app, &admin).await;

    // Once on, it is never stacked or extended.
    started(&app, &fresh).await;
    expect_error(
        start(&app, &fresh, REASON).await,
        StatusCode::CONFLICT,
        "emergency_access_active",
    )
    .await;
}

async fn an_emergency_token_carries_the_window_and_never_outlives_it(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[("EMERGENCY_ACCESS_TTL", "20m")]).await;
    admin_in(&app, "admin@example.com").await;
    admin_in(&app, "second@example.com").await;
    let (jane_id, access, refresh) = permitted_jane(&app).await;
    let body = started(&app, &access).await;
    let window = &body["emergency"];
    let token = body["access_token"].as_str().unwrap();
    let claims = jwt_claims(token);
    assert_eq!(claims["sub"], jane_id.as_str());
    assert_eq!(claims["emergency"]["reason_id"], window["id"]);
    let amr: Vec<&str> = claims["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        amr.contains(&"pwd") && amr.contains(&"emergency"),
        "{amr:?}"
    );
    let expires_at = claims["emergency"]["expires_at"].as_i64().unwrap();
    assert_eq!(
        expires_at - claims["emergency"]["started_at"].as_i64().unwrap(),
        20 * 60
    );
    assert!(claims["exp"].as_i64().unwrap() <= expires_at);
    assert_eq!(app.me(token).await.status(), StatusCode::OK);

    // Every administrator is told at once; the reason (it may name a
    // patient) stays out of the email.
    let emails = common::wait_for_subject(&app.outbox(), "Emergency access started by", 2).await;
    let mut to: Vec<&str> = emails.iter().map(|e| e.to.as_str()).collect();
    to.sort_unstable();
    assert!(to[0].contains("admin@example.com") && to[1].contains("second@example.com"));
    for email in &emails {
        assert!(email.text.contains("jane@example.com"), "{}", email.text);
        assert!(email.text.contains("/admin/emergency"));
        assert!(!email.text.contains("bay 3") && !email.html.contains("bay 3"));
    }

    // A refresh inside the window keeps the claim (what is left of it).
    app.clock.advance(Duration::from_secs(15 * 60));
    let res = app.refresh_with(&refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let refresh = common::refresh_cookie(res.headers()).unwrap();
    let body: Value = res.json().await.unwrap();
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["emergency"]["expires_at"], expires_at);
    assert!(claims["exp"].as_i64().unwrap() <= expires_at);
    assert!(body["expires_in"].as_u64().unwrap() <= 5 * 60);

    // After it, nothing renews it: the next refresh answers a plain token.
    app.clock.advance(Duration::from_secs(6 * 60));
    let res = app.refresh_with(&refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let plain = body["access_token"].as_str().unwrap();
    let claims = jwt_claims(plain);
    assert!(claims.get("emergency").is_none(), "{claims}");
    assert!(!claims["amr"].to_string().contains("emergency"));
    assert_eq!(app.me(plain).await.status(), StatusCode::OK);
    expect_error(
        end(&app, plain).await,
        StatusCode::CONFLICT,
        "emergency_access_not_active",
    )
    .await;

    // Its end is on the record (the sweep closes windows that ran out),
    // with the reason, like its start; and the chain still verifies.
    let (admin, _) = app.login("second@example.com", PASSWORD).await;
    let uses = queued(&app, &admin, "").await;
    assert_eq!(uses.len(), 1);
    assert_eq!(uses[0]["ended_how"], "expired");
    assert_eq!(uses[0]["active"], false);
    assert_eq!(uses[0]["ended_at"], uses[0]["expires_at"]);
    let started = app.audit_events(&admin, "emergency_access_started").await;
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["user_id"], jane_id.as_str());
    assert!(started[0]["detail"].as_str().unwrap().contains(REASON));
    let ended = app.audit_events(&admin, "emergency_access_ended").await;
    assert_eq!(ended.len(), 1);
    let detail = ended[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("how=expired") && detail.contains(REASON),
        "{detail}"
    );
    let store = app.store().await;
    assert!(verify_chain(store.as_ref(), &audit_key(&app), &[])
        .await
        .unwrap()
        .is_ok());
}

async fn ending_early_cuts_the_window_s_tokens(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (_, admin) = admin_in(&app, "admin@example.com").await;
    let (_, access, refresh) = permitted_jane(&app).await;
    let body = started(&app, &access).await;
    let emergency = body["access_token"].as_str().unwrap().to_owned();
    let res = end(&app, &access).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let plain = body["access_token"].as_str().unwrap();
    assert!(jwt_claims(plain).get("emergency").is_none());
    // The window's tokens die at once; the rest of the sign-in lives on.
    app.access_refused(&emergency).await;
    assert_eq!(app.me(plain).await.status(), StatusCode::OK);
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    let res = app.refresh_with(&refresh).await;
    let body: Value = res.json().await.unwrap();
    assert!(jwt_claims(body["access_token"].as_str().unwrap())
        .get("emergency")
        .is_none());
    expect_error(
        end(&app, plain).await,
        StatusCode::CONFLICT,
        "emergency_access_not_active",
    )
    .await;
    // A permission withdrawn during a window drops the claim at the next
    // refresh.
    started(&app, plain).await;
    let jane_id = UserId::new(jwt_claims(plain)["sub"].as_str().unwrap());
    let store = app.store().await;
    assert!(store
        .set_emergency_access(&jane_id, false, Utc::now())
        .await
        .unwrap());
    let (_, refresh) = app.login("jane@example.com", PASSWORD).await;
    let body: Value = app.refresh_with(&refresh).await.json().await.unwrap();
    assert!(jwt_claims(body["access_token"].as_str().unwrap())
        .get("emergency")
        .is_none());
    assert!(store
        .set_emergency_access(&jane_id, true, Utc::now())
        .await
        .unwrap());
    let res = end(&app, plain).await;
    assert_eq!(res.status(), StatusCode::OK);
    let ended = app.audit_events(&admin, "emergency_access_ended").await;
    assert_eq!(ended.len(), 2);
    assert!(ended
        .iter()
        .all(|e| e["detail"].as_str().unwrap().contains("how=ended_by_user")));
    // A new window may start once the last one ended.
    started(&app, plain).await;
}

async fn every_use_is_reviewed_by_another_administrator(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (first_id, first) = admin_in(&app, "admin@example.com").await;
    let (second_id, second) = admin_in(&app, "second@example.com").await;
    let (doctor, _) = app.login("jane@example.com", PASSWORD).await;
    let own = started(&app, &first).await;
    let own_id = own["emergency"]["id"].as_str().unwrap().to_owned();
    let review = |access: String, id: String, note: Value| {
        let app = &app;
        async move {
            app.client
                .post(app.url(&format!("/api/admin/emergency/{id}/review")))
                .bearer_auth(access)
                .json(&note)
                .send()
                .await
                .unwrap()
        }
    };

    // Only administrators read the queue or review.
    expect_error(
        queue(&app, &doctor, "").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        review(doctor.clone(), own_id.clone(), json!({"note": "fine"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    for bad in ["?reviewed=maybe", "?limit=0", "?limit=501", "?colour=red"] {
        expect_error(
            queue(&app, &first, bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    // Never one's own; a note is required; an unknown use is a 404.
    let body = expect_error(
        review(first.clone(), own_id.clone(), json!({"note": "all fine"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Another administrator"));
    expect_error(
        review(second.clone(), own_id.clone(), json!({"note": "   "})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        review(second.clone(), "nope".into(), json!({"note": "x"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // The second administrator's use, a day old, waits first in the queue.
    let older = started(&app, &second).await;
    let older_id = older["emergency"]["id"].as_str().unwrap().to_owned();
    app.clock.advance(Duration::from_secs(25 * 3600));
    let (second, _) = app.login("second@example.com", PASSWORD).await;
    let (first, _) = app.login("admin@example.com", PASSWORD).await;
    let (_, jane, _) = permitted_jane(&app).await;
    let newest = started(&app, &jane).await;
    let pending = queued(&app, &first, "?reviewed=false").await;
    let ids: Vec<&str> = pending.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], newest["emergency"]["id"].as_str().unwrap());
    assert!(pending[0]["overdue"].as_bool().unwrap());
    assert!(!pending[2]["overdue"].as_bool().unwrap());
    assert_eq!(pending[2]["user_email"], "jane@example.com");
    assert_eq!(pending[2]["reason"], REASON);
    assert_eq!(pending[2]["active"], true);

    let res = review(
        second.clone(),
        own_id.clone(),
        json!({"note": "Checked with the ward: justified"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let reviewed: Value = res.json().await.unwrap();
    assert_eq!(reviewed["review"]["by"], second_id.as_str());
    assert_eq!(
        reviewed["review"]["note"],
        "Checked with the ward: justified"
    );
    assert_eq!(reviewed["user_id"], first_id.as_str());
    expect_error(
        review(second.clone(), own_id.clone(), json!({"note": "again"})).await,
        StatusCode::CONFLICT,
        "already_reviewed",
    )
    .await;
    let res = review(first.clone(), older_id.clone(), json!({"note": "ok"})).await;
    assert_eq!(res.status(), StatusCode::OK);

    let pending = queued(&app, &first, "?reviewed=false").await;
    assert_eq!(pending.len(), 1);
    let done = queued(&app, &first, "?reviewed=true&limit=10").await;
    assert_eq!(done.len(), 2);
    let trail = app.audit_events(&first, "emergency_access_reviewed").await;
    assert_eq!(trail.len(), 2);
    assert!(trail.iter().any(|e| e["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("by={second_id}"))));
    let store = app.store().await;
    assert!(verify_chain(store.as_ref(), &audit_key(&app), &[])
        .await
        .unwrap()
        .is_ok());
}

async fn the_portal_breaks_the_glass_with_a_banner_on_every_page(backend: common::Backend) {
    use common::portal::{get, location, page_csrf, post_form, signed_in_browser};
    let app = TestApp::with_jane(backend, &[]).await;
    // Without the permission there is nothing to start.
    let portal = signed_in_browser(&app, "jane@example.com").await;
    let html = get(&app, &portal, "/account").await.text().await.unwrap();
    assert!(!html.contains("Start emergency access"));

    permitted_jane(&app).await;
    let html = get(&app, &portal, "/account").await.text().await.unwrap();
    assert!(html.contains("Start emergency access"), "{html}");
    assert!(!html.contains("emergency-banner"));
    let csrf = page_csrf(&app, &portal, "/account").await;

    // A reason too short is shown next to the field, as typed.
    let res = post_form(
        &app,
        &portal,
        "/account/emergency",
        &[("csrf", csrf.as_str()), ("reason", "urgent")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("Reason must be at least 20 characters"),
        "{html}"
    );
    assert!(html.contains(">urgent</textarea>"));
    assert!(html.contains("aria-invalid=\"true\""));

    let res = post_form(
        &app,
        &portal,
        "/account/emergency",
        &[("csrf", csrf.as_str()), ("reason", REASON)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account");
    let html = get(&app, &portal, "/account").await.text().await.unwrap();
    assert!(html.contains("Emergency access is on until"), "{html}");
    assert!(html.contains("End emergency access"));
    // The banner is on every page of the portal while it lasts.
    let html = get(&app, &portal, "/account/two-step")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("emergency-banner"), "{html}");
    // Another sign-in of hers (an app) gets the claim too: it is hers.
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    assert!(jwt_claims(&access).get("emergency").is_some());

    let res = post_form(
        &app,
        &portal,
        "/account/emergency/end",
        &[("csrf", csrf.as_str())],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let html = get(&app, &portal, "/account").await.text().await.unwrap();
    assert!(html.contains("Emergency access has ended."), "{html}");
    assert!(!html.contains("emergency-banner"));

    // Outside REAUTH_WINDOW the page asks for the password first.
    app.clock.advance(Duration::from_secs(11 * 60));
    let res = post_form(
        &app,
        &portal,
        "/account/emergency",
        &[("csrf", csrf.as_str()), ("reason", REASON)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        location(&res).starts_with("/account/reauth"),
        "{}",
        location(&res)
    );
}
