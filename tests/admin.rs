//! Running a clinic's accounts (issue 19), on every backend: who may join
//! (REGISTRATION) and the clinic's own roles (ROLES, DEFAULT_ROLE).

mod common;

use chrono::Utc;
use clinic_auth::domain::{Role, UserId};
use common::portal::{browser, get, page_csrf, post_form};
use common::{expect_error, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::json;

backend_tests!(
    open_registration_is_the_default,
    invite_and_closed_registration_refuse_sign_up,
    self_registration_gets_the_default_role,
    a_stored_role_the_clinic_no_longer_lists_still_signs_in,
);

async fn open_registration_is_the_default(backend: common::Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.register("jane@example.com").await;
    assert_eq!(user["role"], "doctor");
    let client = browser();
    let res = get(&app, &client, "/register").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("name=\"password_confirm\""));
}

async fn invite_and_closed_registration_refuse_sign_up(backend: common::Backend) {
    for (mode, words) in [
        ("invite", "administrator to invite you."),
        ("closed", "administrators. Ask them for access."),
    ] {
        let app = TestApp::spawn_with(backend, &[("REGISTRATION", mode)]).await;
        let good =
            json!({"name": "Dr Jane Smith", "email": "jane@example.com", "password": PASSWORD});
        let body = expect_error(
            app.post_json("/api/auth/register", good).await,
            StatusCode::FORBIDDEN,
            "registration_closed",
        )
        .await;
        assert!(
            body["error"]["message"].as_str().unwrap().contains(words),
            "{mode}: {body}"
        );
        // Closed whatever was sent: the body is not even read.
        let res = app
            .client
            .post(app.url("/api/auth/register"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::FORBIDDEN, "registration_closed").await;

        // The page says how to get access instead of offering a form, and
        // a form posted anyway creates nothing.
        let client = browser();
        let res = get(&app, &client, "/register").await;
        assert_eq!(res.status(), StatusCode::OK, "{mode}");
        let html = res.text().await.unwrap();
        assert!(html.contains(words), "{mode}: {html}");
        assert!(
            !html.contains("name=\"password_confirm\""),
            "{mode}: no form"
        );
        let csrf = page_csrf(&app, &client, "/login").await;
        let res = post_form(
            &app,
            &client,
            "/register",
            &[
                ("csrf", csrf.as_str()),
                ("name", "Dr Jane Smith"),
                ("email", "jane@example.com"),
                ("password", PASSWORD),
                ("password_confirm", PASSWORD),
            ],
        )
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{mode}");
        assert!(res.text().await.unwrap().contains(words));
        let email = clinic_auth::domain::EmailAddress::parse("jane@example.com").unwrap();
        assert!(app
            .store()
            .await
            .find_user_by_email(&email)
            .await
            .unwrap()
            .is_none());
    }
}

async fn self_registration_gets_the_default_role(backend: common::Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("ROLES", "doctor,nurse,reception"),
            ("DEFAULT_ROLE", "reception"),
        ],
    )
    .await;
    let user = app.register("desk@example.com").await;
    assert_eq!(user["role"], "reception");
    let (access, _) = app.login("desk@example.com", PASSWORD).await;
    let me: serde_json::Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["role"], "reception");
}

async fn a_stored_role_the_clinic_no_longer_lists_still_signs_in(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let email = clinic_auth::domain::EmailAddress::parse("jane@example.com").unwrap();
    let store = app.store().await;
    let jane = store.find_user_by_email(&email).await.unwrap().unwrap();
    // As if ROLES once listed it, or another version wrote it.
    let now = Utc::now();
    let pharmacist = Role::parse("pharmacist").unwrap();
    assert!(store
        .set_user_role(&UserId::new(jane.id.as_str()), &pharmacist, now, now)
        .await
        .unwrap());
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let me: serde_json::Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["role"], "pharmacist");
    // ... and grants nothing: only `admin` does.
    let res = app
        .client
        .get(app.url("/api/admin/audit"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;
}

/// SQLite kept the two roles in a CHECK; the rebuild that lifts it, done
/// when the store opens, must keep every row that points at a user
/// (dropping `users` with foreign keys on would have cascaded into them).
#[tokio::test]
async fn lifting_the_role_check_keeps_what_points_at_users() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true).foreign_keys(true))
        .await
        .unwrap();
    sqlx::migrate!("./migrations").run(&pool).await.unwrap();
    for insert in [
        "INSERT INTO users (id, email, password_hash, name, role, verified, created_at, updated_at) \
         VALUES ('u1', 'jane@example.com', 'x', 'Jane', 'doctor', 1, 1, 1)",
        "INSERT INTO refresh_tokens (user_id, jti, token_hash, family_id, expires_at, created_at) \
         VALUES ('u1', 'j', 'h', 'f', 9, 1)",
        "INSERT INTO mfa_totp (user_id, secret, created_at) VALUES ('u1', 's', 1)",
    ] {
        sqlx::query(insert).execute(&pool).await.unwrap();
    }
    let nurse = sqlx::query("UPDATE users SET role = 'nurse'")
        .execute(&pool)
        .await;
    assert!(nurse.is_err(), "the first release's CHECK is in place");
    pool.close().await;

    // Opened twice: the second open finds nothing left to do.
    for _ in 0..2 {
        let config =
            clinic_auth::config::Config::from_pairs(&[("DATABASE_URL", url.as_str())]).unwrap();
        let store = clinic_auth::app::open_store(&config).await.unwrap();
        drop(store);
    }

    let pool = sqlx::SqlitePool::connect_with(
        url.parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .foreign_keys(true),
    )
    .await
    .unwrap();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        (
            count("users").await,
            count("refresh_tokens").await,
            count("mfa_totp").await
        ),
        (1, 1, 1)
    );
    sqlx::query("UPDATE users SET role = 'nurse' WHERE id = 'u1'")
        .execute(&pool)
        .await
        .unwrap();
    let empty = sqlx::query("UPDATE users SET role = '' WHERE id = 'u1'")
        .execute(&pool)
        .await;
    assert!(empty.is_err(), "a role is never empty");
    // The children still point at `users`, enforced.
    sqlx::query("DELETE FROM users WHERE id = 'u1'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        (count("refresh_tokens").await, count("mfa_totp").await),
        (0, 0)
    );
}
