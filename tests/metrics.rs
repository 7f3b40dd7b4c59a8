//! /metrics: Prometheus text that moves with traffic, on the main listener
//! or on a separate METRICS_ADDR.

mod common;

/// Production refuses to start without an audit key.
const AUDIT_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

use common::{Backend, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::json;

/// The value of the first sample line starting with `prefix`, or 0.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Emergency access waiting for review shows in /metrics, the overdue
/// (older than 24 hours) separately; a review takes it off. The only test
/// in this binary that starts emergency access, so the process-wide gauges
/// are its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreviewed_emergency_access_is_counted() {
    use chrono::Utc;
    use clinic_auth::domain::{Role, UserId};
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut admins = Vec::new();
    for email in ["first@example.com", "second@example.com"] {
        let user = app.register(email).await;
        let id = UserId::new(user["id"].as_str().unwrap());
        let now = Utc::now();
        let store = app.store().await;
        assert!(store
            .set_user_role(&id, &Role::admin(), now, now)
            .await
            .unwrap());
        admins.push(email);
    }
    let start = |access: String| {
        let app = &app;
        async move {
            let res = app
                .client
                .post(app.url("/api/auth/emergency-access"))
                .bearer_auth(access)
                .json(&json!({"reason": "Ward 4 night cover, patient record locked"}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
            let body: serde_json::Value = res.json().await.unwrap();
            body["emergency"]["id"].as_str().unwrap().to_owned()
        }
    };
    let (first, _) = app.login(admins[0], PASSWORD).await;
    let old = start(first).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&text, "clinic_auth_emergency_access_unreviewed "),
        1.0
    );
    assert_eq!(
        sample(&text, "clinic_auth_emergency_access_unreviewed_overdue "),
        0.0
    );
    assert!(sample(&text, "clinic_auth_emergency_access_started_total") >= 1.0);

    app.clock.advance(std::time::Duration::from_secs(25 * 3600));
    let (second, _) = app.login(admins[1], PASSWORD).await;
    start(second.clone()).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&text, "clinic_auth_emergency_access_unreviewed "),
        2.0
    );
    assert_eq!(
        sample(&text, "clinic_auth_emergency_access_unreviewed_overdue "),
        1.0
    );

    let res = app
        .client
        .post(app.url(&format!("/api/admin/emergency/{old}/review")))
        .bearer_auth(&second)
        .json(&json!({"note": "Confirmed with the night sister"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&text, "clinic_auth_emergency_access_unreviewed "),
        1.0
    );
    assert_eq!(
        sample(&text, "clinic_auth_emergency_access_unreviewed_overdue "),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_traffic() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("RATE_LIMIT_AUTH_PER_MIN", "3")]).await;
    let before = app.get("/metrics").await.text().await.unwrap();

    app.register("jane@example.com").await;
    app.login("jane@example.com", PASSWORD).await;
    let wrong = json!({"email": "jane@example.com", "password": "Wr0ng!Password99"});
    // One successful login so far; the limit is 3 per minute.
    for _ in 0..2 {
        assert_eq!(
            app.post_json("/api/auth/login", wrong.clone())
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.post_json("/api/auth/login", wrong.clone())
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let (_, refresh) = {
        let app2 = TestApp::spawn_with(Backend::Sqlite, &[("REFRESH_REUSE_GRACE", "0s")]).await;
        app2.register("john@example.com").await;
        let tokens = app2.login("john@example.com", PASSWORD).await;
        assert_eq!(app2.refresh_with(&tokens.1).await.status(), StatusCode::OK);
        // The replaced token again: a reuse detection.
        assert_eq!(
            app2.refresh_with(&tokens.1).await.status(),
            StatusCode::UNAUTHORIZED
        );
        tokens
    };
    assert!(!refresh.is_empty());

    let res = app.get("/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let after = res.text().await.unwrap();
    let moved = |prefix: &str| sample(&after, prefix) > sample(&before, prefix);
    assert!(
        moved("clinic_auth_logins_total{outcome=\"success\"}"),
        "{after}"
    );
    assert!(moved(
        "clinic_auth_logins_total{outcome=\"invalid_credentials\"}"
    ));
    assert!(moved("clinic_auth_rate_limited_total"));
    assert!(moved("clinic_auth_refresh_reuse_detected_total"));
    assert!(moved("clinic_auth_password_hash_duration_seconds_count"));
    assert!(after.contains(
        "clinic_auth_http_requests_total{method=\"POST\",route=\"/api/auth/login\",status=\"200\"}"
    ));
    assert!(after.contains("clinic_auth_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/auth/login\""));
    assert!(after.contains("clinic_auth_password_hash_queue_depth"));
    assert!(after.contains(&format!(
        "clinic_auth_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    // Paths are labelled by route template, never by raw path.
    app.get("/api/auth/nope-12345").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(!text.contains("nope-12345"));
    assert!(text.contains("route=\"unmatched\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_live_on_their_own_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let app = TestApp::spawn_with(Backend::Sqlite, &[("METRICS_ADDR", addr.as_str())]).await;
    assert_eq!(
        app.get("/metrics").await.status(),
        StatusCode::NOT_FOUND,
        "not on the public listener"
    );
    let res = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("clinic_auth_build_info"));
}

/// Production keeps /metrics off the public listener unless told where it
/// may go: no METRICS_ADDR and no METRICS_TOKEN means 404 there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_hides_metrics_from_the_public_listener() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("APP_ENV", "production"),
            ("AUDIT_KEY", AUDIT_KEY),
            ("MFA_ENCRYPTION_KEY", AUDIT_KEY),
        ],
    )
    .await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    // The service itself is up.
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
}

/// With METRICS_TOKEN, /metrics answers only a matching Bearer token; any
/// other request gets the same 404 as a route that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_serves_metrics_to_the_metrics_token_only() {
    let token = "scrape-0123456789abcdef0123456789abcdef";
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("APP_ENV", "production"),
            ("AUDIT_KEY", AUDIT_KEY),
            ("MFA_ENCRYPTION_KEY", AUDIT_KEY),
            ("METRICS_TOKEN", token),
        ],
    )
    .await;
    let with = |auth: Option<String>| {
        let mut req = app.client.get(app.url("/metrics"));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.send()
    };
    for wrong in [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Bearer {token}x")),
        Some(format!("Bearer {}", &token[..token.len() - 1])),
        Some(format!("Basic {token}")),
        Some(token.to_owned()),
    ] {
        let res = with(wrong.clone()).await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{wrong:?}");
    }
    let res = with(Some(format!("Bearer {token}"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("clinic_auth_build_info"));
}
