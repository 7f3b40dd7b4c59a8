//! Several instances on one store, on every backend: what they must share
//! (per-IP limits with RATE_LIMIT_BACKEND=store, the per-account lockout)
//! and what they must agree on (APP_URL), plus the conformance of the
//! rate-limit counters themselves.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DurationRound, Utc};
use common::{expect_error, fresh_store, Backend, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::json;

backend_tests!(
    two_instances_on_one_store_enforce_one_per_ip_limit,
    the_lockout_of_an_email_holds_on_every_instance,
    tokens_of_an_instance_with_another_app_url_are_refused,
    rate_limit_counts_are_atomic_and_per_window,
);

/// A second app on `first`'s database, with the same `overrides`.
async fn beside(first: &TestApp, overrides: &[(&str, &str)]) -> TestApp {
    let (var, value) = first.database_env();
    let mut pairs = overrides.to_vec();
    pairs.push((var.as_str(), value.as_str()));
    TestApp::spawn_with(first.backend, &pairs).await
}

/// Waits out the last seconds of a minute, so a test's burst of requests
/// falls in one window of the shared counters (they count per minute).
/// A real wait: the per-IP limiter's windows follow the wall clock, not the
/// app's injected clock, so moving `TestApp::clock` would not move them.
async fn not_at_the_end_of_a_minute() {
    let into_minute = Utc::now().timestamp_millis().rem_euclid(60_000);
    if into_minute > 55_000 {
        tokio::time::sleep(Duration::from_millis((60_100 - into_minute) as u64)).await;
    }
}

/// The statuses of `path` asked of `a` and `b` in turn, `n` times.
async fn alternate(
    a: &TestApp,
    b: &TestApp,
    n: usize,
    ask: impl Fn(&TestApp) -> reqwest::RequestBuilder,
) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let app = if i % 2 == 0 { a } else { b };
        statuses.push(ask(app).send().await.unwrap().status());
    }
    statuses
}

/// A sign-in with a wrong password for an email nobody has.
fn failed_login(app: &TestApp) -> reqwest::RequestBuilder {
    app.client
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": "nobody@example.com", "password": "Wr0ng!Password99"}))
}

/// With RATE_LIMIT_BACKEND=store, two instances on one store allow one
/// client the limit between them, not the limit each: on an auth route, on
/// the global limit, and on a portal page (with its friendly 429 page).
async fn two_instances_on_one_store_enforce_one_per_ip_limit(backend: Backend) {
    let limits = [
        ("RATE_LIMIT_BACKEND", "store"),
        ("RATE_LIMIT_AUTH_PER_MIN", "4"),
        ("RATE_LIMIT_GLOBAL_PER_MIN", "20"),
        // Not the per-email lockout: only the per-IP limit refuses here.
        ("LOGIN_MAX_FAILURES", "1000"),
    ];
    let a = TestApp::spawn_with(backend, &limits).await;
    let b = beside(&a, &limits).await;
    not_at_the_end_of_a_minute().await;

    let statuses = alternate(&a, &b, 10, failed_login).await;
    let mut expected = vec![StatusCode::UNAUTHORIZED; 4];
    expected.extend([StatusCode::TOO_MANY_REQUESTS; 6]);
    assert_eq!(statuses, expected);
    let res = failed_login(&b).send().await.unwrap();
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    expect_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    // A portal page has its own limit, counted alike, and a browser gets
    // the portal's page for the 429, as with in-memory limits.
    let page = |app: &TestApp| {
        app.client
            .get(app.url("/verify-email?token=not-a-token"))
            .header("accept", "text/html")
    };
    let statuses = alternate(&a, &b, 4, page).await;
    assert!(
        !statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let res = page(&b).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get("retry-after").is_some());
    assert!(res.text().await.unwrap().contains("Too many attempts"));

    // The 11 logins and 5 pages counted against the global limit of 20
    // too: 4 more requests of any kind, on either instance, and no more.
    let health = |app: &TestApp| app.client.get(app.url("/health"));
    let statuses = alternate(&a, &b, 7, health).await;
    let mut expected = vec![StatusCode::OK; 4];
    expected.extend([StatusCode::TOO_MANY_REQUESTS; 3]);
    assert_eq!(statuses, expected);
}

/// The per-account lockout lives in the store: failures on one instance
/// count on the other, and the lock holds on both (even for the right
/// password).
async fn the_lockout_of_an_email_holds_on_every_instance(backend: Backend) {
    let settings = [("LOGIN_MAX_FAILURES", "3")];
    let a = TestApp::with_jane(backend, &settings).await;
    let b = beside(&a, &settings).await;
    let attempt = |app: &TestApp, password: &str| {
        app.client
            .post(app.url("/api/auth/login"))
            .json(&json!({"email": "jane@example.com", "password": password}))
    };
    let wrong = |app: &TestApp| attempt(app, "Wr0ng!Password99");
    let statuses = alternate(&a, &b, 3, wrong).await;
    assert_eq!(statuses, [StatusCode::UNAUTHORIZED; 3]);
    for app in [&a, &b] {
        let res = attempt(app, PASSWORD).send().await.unwrap();
        assert!(res.headers().get("retry-after").is_some());
        expect_error(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    }
}

/// Instances must share APP_URL: it is the tokens' issuer, so one with
/// another URL refuses the others' access and refresh tokens, whatever
/// else they share.
async fn tokens_of_an_instance_with_another_app_url_are_refused(backend: Backend) {
    let a = TestApp::with_jane(backend, &[]).await;
    let b = beside(&a, &[("APP_URL", "http://auth.clinic.example")]).await;
    let (access, refresh) = a.login("jane@example.com", PASSWORD).await;
    b.access_refused(&access).await;
    b.refresh_refused(&refresh).await;
    // The same tokens still work where they were issued.
    assert_eq!(a.me(&access).await.status(), StatusCode::OK);
    assert_eq!(a.refresh_with(&refresh).await.status(), StatusCode::OK);
}

/// The counters behind RATE_LIMIT_BACKEND=store: counted per limit, client
/// and window; atomic under concurrency; forgotten once their window ended.
async fn rate_limit_counts_are_atomic_and_per_window(backend: Backend) {
    let (store, _dir) = fresh_store(backend).await;
    let minute = chrono::Duration::minutes(1);
    let start = Utc::now().duration_trunc(minute).unwrap();
    let end = start + minute;
    let count = |limiter: &'static str, client: &'static str, start, end| {
        let store = Arc::clone(&store);
        async move {
            store
                .count_request(limiter, client, start, end)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("login", "198.51.100.7", start, end).await, 1);
    assert_eq!(count("login", "198.51.100.7", start, end).await, 2);
    // Every limit and every client has its own count.
    assert_eq!(count("register", "198.51.100.7", start, end).await, 1);
    assert_eq!(count("login", "2001:db8:1::", start, end).await, 1);
    // The next window starts again.
    assert_eq!(count("login", "198.51.100.7", end, end + minute).await, 1);
    assert_eq!(count("login", "198.51.100.7", end, end + minute).await, 2);

    // Concurrent requests are each counted once: every count is given out
    // exactly once.
    let tasks: Vec<_> = (0..40)
        .map(|_| tokio::spawn(count("global", "203.0.113.9", start, end)))
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=40).collect::<Vec<u64>>());

    // Once a window has ended, purging forgets it.
    let past_start = start - minute * 10;
    assert_eq!(
        count("old", "192.0.2.1", past_start, past_start + minute).await,
        1
    );
    let purged = store
        .purge_expired(Utc::now(), Utc::now() - chrono::Duration::days(1))
        .await
        .unwrap();
    assert!(purged >= 1, "{purged}");
    assert_eq!(
        count("old", "192.0.2.1", past_start, past_start + minute).await,
        1
    );
    // A window still running is kept.
    assert_eq!(count("global", "203.0.113.9", start, end).await, 41);
}

/// When the counters cannot be written, each instance's own in-memory
/// limit applies instead: the limit still holds (never unlimited), nothing
/// answers 500, and the failure is counted. SQLite only: a trigger that
/// refuses every write to `rate_limits` is a real database error that
/// leaves everything else working, with no wait for a server to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_in_memory_while_the_counters_cannot_be_written() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("RATE_LIMIT_BACKEND", "store"),
            ("RATE_LIMIT_AUTH_PER_MIN", "3"),
            ("LOGIN_MAX_FAILURES", "1000"),
        ],
    )
    .await;
    let (_, url) = app.database_env();
    let db = sqlx::SqlitePool::connect(&url).await.unwrap();
    for (name, op) in [("no_insert", "INSERT"), ("no_update", "UPDATE")] {
        sqlx::query(&format!(
            "CREATE TRIGGER {name} BEFORE {op} ON rate_limits \
             BEGIN SELECT RAISE(ABORT, 'counters refused'); END"
        ))
        .execute(&db)
        .await
        .unwrap();
    }
    let statuses = alternate(&app, &app, 5, failed_login).await;
    let mut expected = vec![StatusCode::UNAUTHORIZED; 3];
    expected.extend([StatusCode::TOO_MANY_REQUESTS; 2]);
    assert_eq!(statuses, expected);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("clinic_auth_store_errors_total{kind=\"rate_limit\"}"),
        "{metrics}"
    );
}
