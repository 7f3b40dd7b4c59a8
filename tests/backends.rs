//! Behaviour that involves the database itself: taking over the original
//! service's bcrypt hashes, and riding out a database outage.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use clinic_auth::domain::{EmailAddress, PasswordHash, PersonName, Role};
use clinic_auth::storage::NewUser;
use common::mongo_server::MongoServer;
use common::{expect_error, Backend, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};

backend_tests!(legacy_bcrypt_hash_logs_in_and_is_upgraded);

async fn legacy_bcrypt_hash_logs_in_and_is_upgraded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = app.store().await;
    // As Python's passlib/bcrypt wrote it: $2b$12$...
    let legacy = bcrypt::hash_with_result(PASSWORD, 12)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoB);
    assert!(legacy.starts_with("$2b$12$"));
    let email = EmailAddress::parse("legacy@example.com").unwrap();
    store
        .create_user(&NewUser {
            email: email.clone(),
            name: PersonName::parse("Dr Legacy").unwrap(),
            password_hash: PasswordHash::new(legacy),
            role: Role::parse("doctor").unwrap(),
            verified: true,
            created_at: Utc::now(),
            verification_link: None,
        })
        .await
        .unwrap();

    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "legacy@example.com", "password": "Wr0ng!Password99"}),
        )
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let still = store.find_user_by_email(&email).await.unwrap().unwrap();
    assert!(
        still.password_hash.expose().starts_with("$2b$"),
        "a failed login changes nothing"
    );

    app.login("legacy@example.com", PASSWORD).await;
    let upgraded = store.find_user_by_email(&email).await.unwrap().unwrap();
    assert!(
        upgraded.password_hash.expose().starts_with("$argon2id$"),
        "rehashed on success"
    );
    app.login("legacy@example.com", PASSWORD).await;
}

/// Needs its own MongoDB server so it can stop it mid-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_outage_answers_503_and_recovers_without_restart() {
    let mut server = MongoServer::start().await;
    let uri = server.uri("outage");
    let app = TestApp::with_jane(Backend::Mongo, &[("MONGO_URI", uri.as_str())]).await;
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;

    server.stop().await;
    let started = Instant::now();
    let res = app.get("/health").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.json::<Value>().await.unwrap()["database"],
        "unavailable"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a few seconds, not the driver's 30 s"
    );
    let res = app.me(&access).await;
    assert!(res.headers().get("retry-after").is_some());
    expect_error(res, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable").await;
    // Writes, audited ones included, are 503s too: promptly, never a 500.
    let writes = [
        (
            "/api/auth/register",
            json!({"name": "Dr Down", "email": "down@example.com", "password": PASSWORD}),
        ),
        (
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        ),
        (
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": "Wr0ng!Password99"}),
        ),
    ];
    for (path, body) in writes {
        let started = Instant::now();
        let res = app.post_json(path, body).await;
        assert!(started.elapsed() < Duration::from_secs(10), "{path} hung");
        assert!(res.headers().get("retry-after").is_some(), "{path}");
        expect_error(res, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable").await;
    }
    let started = Instant::now();
    let res = app.refresh_with(&refresh).await;
    assert!(started.elapsed() < Duration::from_secs(10), "refresh hung");
    expect_error(res, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable").await;

    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if app.get("/health").await.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.me(&access).await.status(),
        StatusCode::OK,
        "data survived"
    );
    // Writes and their audit records work again without a restart.
    app.register("after@example.com").await;
    app.login("after@example.com", PASSWORD).await;
    assert_eq!(app.refresh_with(&refresh).await.status(), StatusCode::OK);
}

/// The service starts while MongoDB is down, and serves once it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_mongo_is_down() {
    let mut server = MongoServer::start().await;
    let uri = server.uri("late");
    server.stop().await;
    let app = TestApp::spawn_with(Backend::Mongo, &[("MONGO_URI", uri.as_str())]).await;
    assert_eq!(
        app.get("/health").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get("/health").await.status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.register("jane@example.com").await;
}
