//! Running a clinic's accounts (issue 19), on every backend: who may join
//! (REGISTRATION) and the clinic's own roles (ROLES, DEFAULT_ROLE).

mod common;

use chrono::Utc;
use clinic_auth::domain::{Role, UserId};
use common::admin_in;
use common::portal::{browser, get, page_csrf, post_form, signed_in_browser};
use common::{expect_error, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::json;

backend_tests!(
    open_registration_is_the_default,
    invite_and_closed_registration_refuse_sign_up,
    self_registration_gets_the_default_role,
    a_stored_role_the_clinic_no_longer_lists_still_signs_in,
    disabling_ends_everything_and_enabling_restores_sign_in,
    only_admins_disable_and_never_the_last_one,
    admins_find_users_a_page_at_a_time,
    admins_see_one_user_in_full,
    role_changes_cut_tokens_and_spare_the_last_admin,
    admins_unlock_end_sessions_and_send_reset_links,
    an_admins_reset_email_counts_against_the_accounts_mail_limit,
    mfa_reset_removes_every_factor_and_tells_everyone,
    erasing_needs_a_disabled_account_and_keeps_the_id,
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

async fn admin_post(
    app: &TestApp,
    access: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let mut req = app.client.post(app.url(path)).bearer_auth(access);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

async fn disabling_ends_everything_and_enabling_restores_sign_in(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (admin_id, admin) = admin_in(&app, "admin@example.com").await;
    let jane: serde_json::Value = {
        let (access, _) = app.login("jane@example.com", PASSWORD).await;
        app.me(&access).await.json().await.unwrap()
    };
    let jane_id = jane["id"].as_str().unwrap().to_owned();
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;
    let portal = signed_in_browser(&app, "jane@example.com").await;
    let link = app.reset_token_for("jane@example.com").await;

    let res = admin_post(
        &app,
        &admin,
        &format!("/api/admin/users/{jane_id}/disable"),
        Some(json!({"reason": "Left the clinic"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let view: serde_json::Value = res.json().await.unwrap();
    assert_eq!(view["status"], "disabled", "{view}");
    assert!(view["disabled_at"].is_string(), "{view}");

    // Everything she had ends at once.
    app.access_refused(&access).await;
    app.refresh_refused(&refresh).await;
    let res = get(&app, &portal, "/account").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "portal session ended");
    let res = app.reset_password(&link, "a brand new passphrase 42").await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_token").await;
    // The right password learns it is disabled; a wrong one learns nothing.
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    assert!(common::refresh_cookie(res.headers()).is_none());
    expect_error(res, StatusCode::FORBIDDEN, "account_disabled").await;
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": "not her password"}),
        )
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    // The portal's sign-in says the same.
    let client = browser();
    let res = common::portal::sign_in(&app, &client, "jane@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("This account is disabled."));
    // A reset request answers as always and sends nothing.
    app.settle_email().await;
    let before = common::read_emails(&app.outbox()).len();
    let res = app
        .post_json(
            "/api/auth/forgot-password",
            json!({"email": "jane@example.com"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    app.settle_email().await;
    assert_eq!(common::read_emails(&app.outbox()).len(), before);

    // Disabling again changes nothing; the trail names admin and reason.
    let res = admin_post(
        &app,
        &admin,
        &format!("/api/admin/users/{jane_id}/disable"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let events = app.audit_events(&admin, "account_disabled").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user_id"], jane_id.as_str());
    assert_eq!(
        events[0]["detail"],
        format!("by={admin_id} reason=Left the clinic")
    );

    // Enabled, she signs in with her password again.
    let res = admin_post(
        &app,
        &admin,
        &format!("/api/admin/users/{jane_id}/enable"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let view: serde_json::Value = res.json().await.unwrap();
    assert_eq!(view["status"], "active");
    assert!(view["disabled_at"].is_null());
    app.login("jane@example.com", PASSWORD).await;
}

async fn only_admins_disable_and_never_the_last_one(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (admin_id, admin) = admin_in(&app, "admin@example.com").await;
    let (doctor, _) = app.login("jane@example.com", PASSWORD).await;
    let path = format!("/api/admin/users/{admin_id}/disable");
    expect_error(
        admin_post(&app, &doctor, &path, None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        admin_post(&app, &admin, "/api/admin/users/nobody/disable", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        admin_post(&app, &admin, &path, None).await,
        StatusCode::CONFLICT,
        "last_admin",
    )
    .await;
    let long = "x".repeat(501);
    expect_error(
        admin_post(&app, &admin, &path, Some(json!({"reason": long}))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    // Changing an account is a sensitive action: a sign-in older than
    // REAUTH_WINDOW must be renewed first (reading is not).
    app.clock.advance(std::time::Duration::from_secs(11 * 60));
    let res = admin_post(&app, &admin, "/api/admin/users/nobody/disable", None).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "reauthentication_required").await;
    let (_, admin) = app.login("admin@example.com", PASSWORD).await;
    // With a second admin, the first may go.
    let (_, second) = admin_in(&app, "second@example.com").await;
    let res = admin_post(&app, &second, &path, Some(json!({}))).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.access_refused(&admin).await;
}

async fn admin_get(app: &TestApp, access: &str, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
}

/// Every page of `query` (which must not set limit or cursor), followed
/// through `next`: the emails in order.
async fn all_pages(app: &TestApp, access: &str, query: &str, limit: u32) -> Vec<String> {
    let mut emails = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/api/admin/users?limit={limit}&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let res = admin_get(app, access, &path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let page: serde_json::Value = res.json().await.unwrap();
        let users = page["users"].as_array().unwrap();
        assert!(users.len() <= limit as usize);
        emails.extend(
            users
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return emails,
        }
    }
    panic!("no last page");
}

async fn admins_find_users_a_page_at_a_time(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[("LOGIN_MAX_FAILURES", "2")]).await;
    let (_, admin) = admin_in(&app, "admin@example.com").await;
    let store = app.store().await;
    // A few hundred colleagues, straight into the store (hashing a
    // password for each would only slow the test down).
    let nurse = Role::parse("nurse").unwrap();
    for i in 0..300 {
        let user = store
            .create_user(&common::fixtures::new_user(&format!(
                "staff{i:03}@example.com"
            )))
            .await
            .unwrap();
        if i % 50 == 7 {
            store
                .set_user_role(&user.id, &nurse, Utc::now(), Utc::now())
                .await
                .unwrap();
        }
    }

    // Every account exactly once, by email, across pages of any size.
    let everyone = all_pages(&app, &admin, "", 200).await;
    assert_eq!(everyone.len(), 302);
    let mut sorted = everyone.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(everyone, sorted);
    assert_eq!(all_pages(&app, &admin, "", 7).await, everyone);
    let first: serde_json::Value = admin_get(&app, &admin, "/api/admin/users")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        first["users"].as_array().unwrap().len(),
        50,
        "default limit"
    );

    // Prefix (either case), role.
    assert_eq!(
        all_pages(&app, &admin, "q=JANE", 5).await,
        ["jane@example.com"]
    );
    // Everyone here is named "Dr Jane Smith" (also the store's users).
    assert_eq!(
        all_pages(&app, &admin, "q=dr%20JANE", 200).await,
        everyone,
        "the name's start"
    );
    assert!(all_pages(&app, &admin, "q=smith", 200).await.is_empty());
    assert_eq!(all_pages(&app, &admin, "q=staff1", 30).await.len(), 100);
    assert_eq!(
        all_pages(&app, &admin, "role=nurse", 2).await,
        [
            "staff007@example.com",
            "staff057@example.com",
            "staff107@example.com",
            "staff157@example.com",
            "staff207@example.com",
            "staff257@example.com"
        ]
    );

    // Statuses: a locked account is found among hundreds of others, on a
    // page of one; a row says what the admin needs at a glance.
    for _ in 0..2 {
        let res = app
            .post_json(
                "/api/auth/login",
                json!({"email": "jane@example.com", "password": "not her password"}),
            )
            .await;
        assert_ne!(res.status(), StatusCode::OK);
    }
    assert_eq!(
        all_pages(&app, &admin, "status=locked", 1).await,
        ["jane@example.com"]
    );
    let page: serde_json::Value = admin_get(&app, &admin, "/api/admin/users?q=jane")
        .await
        .json()
        .await
        .unwrap();
    let jane = &page["users"][0];
    assert_eq!(jane["status"], "locked", "{jane}");
    assert!(jane["locked_until"].is_string(), "{jane}");
    assert_eq!(jane["second_factor"], false);
    assert_eq!(jane["role"], "doctor");
    assert!(jane["last_sign_in_at"].is_null(), "never signed in: {jane}");
    let active = all_pages(&app, &admin, "status=active", 100).await;
    assert_eq!(active.len(), 301);
    assert!(!active.contains(&"jane@example.com".to_owned()));
    let admin_row: serde_json::Value = admin_get(&app, &admin, "/api/admin/users?q=admin")
        .await
        .json()
        .await
        .unwrap();
    assert!(admin_row["users"][0]["last_sign_in_at"].is_string());
    assert_eq!(
        all_pages(&app, &admin, "status=no_second_factor", 200).await,
        everyone
    );
    // jane and admin registered through the API; the store's users are
    // unverified too (new_user), so everyone is.
    assert_eq!(
        all_pages(&app, &admin, "status=unverified", 200)
            .await
            .len(),
        302
    );
    let id = store
        .find_user_by_email(
            &clinic_auth::domain::EmailAddress::parse("staff042@example.com").unwrap(),
        )
        .await
        .unwrap()
        .unwrap()
        .id;
    store
        .set_user_disabled(&id, Some(Utc::now()), Utc::now())
        .await
        .unwrap();
    assert_eq!(
        all_pages(&app, &admin, "status=disabled", 10).await,
        ["staff042@example.com"]
    );

    // A bad filter names itself; a doctor may not look.
    for (query, field) in [
        ("status=gone", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("cursor=%21%21", "cursor"),
        ("role=Not%20a%20role", "role"),
        ("order=name", "order"),
    ] {
        let body = expect_error(
            admin_get(&app, &admin, &format!("/api/admin/users?{query}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert!(body["error"]["fields"][field].is_array(), "{query}: {body}");
    }
    app.register("tom@example.com").await;
    let (doctor, _) = app.login("tom@example.com", PASSWORD).await;
    for path in ["/api/admin/users", &format!("/api/admin/users/{id}")] {
        expect_error(
            admin_get(&app, &doctor, path).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
}

async fn admins_see_one_user_in_full(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (admin_id, admin) = admin_in(&app, "admin@example.com").await;
    let (_, _refresh) = app.login("jane@example.com", PASSWORD).await;
    let _portal = signed_in_browser(&app, "jane@example.com").await;
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": "not her password"}),
        )
        .await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    app.flush_audit().await;
    let list: serde_json::Value = admin_get(&app, &admin, "/api/admin/users?q=jane")
        .await
        .json()
        .await
        .unwrap();
    let jane_id = list["users"][0]["id"].as_str().unwrap().to_owned();

    let res = admin_get(&app, &admin, &format!("/api/admin/users/{jane_id}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let jane: serde_json::Value = res.json().await.unwrap();
    assert_eq!(jane["id"], jane_id.as_str());
    assert_eq!(jane["email"], "jane@example.com");
    assert_eq!(jane["status"], "active");
    assert!(jane["last_sign_in_at"].is_string(), "{jane}");
    // Her API sign-in and her portal session (with its own API family,
    // shown as one), as her own list shows them.
    let kinds: Vec<&str> = jane["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{jane}");
    assert!(
        kinds.contains(&"browser") && kinds.contains(&"api"),
        "{kinds:?}"
    );
    assert_eq!(jane["lock"]["failures"], 1);
    assert!(jane["lock"]["locked_until"].is_null());
    assert_eq!(
        jane["factors"],
        json!({"totp": false, "recovery_codes_left": 0, "passkeys": []})
    );
    let events: Vec<&str> = jane["recent_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events.first(),
        Some(&"login_failure"),
        "newest first: {events:?}"
    );
    assert!(
        events.contains(&"login_success") && events.contains(&"register"),
        "{events:?}"
    );

    // Unknown or malformed ids are 404; reading needs no recent sign-in.
    app.clock.advance(std::time::Duration::from_secs(11 * 60));
    for id in ["nobody", "0000000000000000000000000", admin_id.as_str()] {
        let res = admin_get(&app, &admin, &format!("/api/admin/users/{id}")).await;
        if id == admin_id {
            assert_eq!(res.status(), StatusCode::OK);
        } else {
            expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
        }
    }
}

async fn admin_patch(
    app: &TestApp,
    access: &str,
    id: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/api/admin/users/{id}")))
        .bearer_auth(access)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The `detail` of the newest audit record of `event`.
async fn last_detail(app: &TestApp, admin: &str, event: &str) -> String {
    app.audit_events(admin, event).await[0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn user_id(app: &TestApp, email: &str) -> String {
    let email = clinic_auth::domain::EmailAddress::parse(email).unwrap();
    let user = app.store().await.find_user_by_email(&email).await.unwrap();
    user.unwrap().id.as_str().to_owned()
}

async fn role_changes_cut_tokens_and_spare_the_last_admin(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[("ROLES", "doctor,nurse")]).await;
    let (admin_id, admin) = admin_in(&app, "admin@example.com").await;
    let jane_id = user_id(&app, "jane@example.com").await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;

    let res = admin_patch(
        &app,
        &admin,
        &jane_id,
        json!({"role": "nurse", "reason": "Front desk"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let view: serde_json::Value = res.json().await.unwrap();
    assert_eq!(view["role"], "nurse");
    app.access_refused(&access).await;
    assert_eq!(
        last_detail(&app, &admin, "role_changed").await,
        format!("by={admin_id} from=doctor to=nurse reason=Front desk")
    );
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    assert_eq!(common::jwt_claims(&access)["role"], "nurse");

    // Nothing asked, nothing changed; a role the clinic does not use, or a
    // field this route does not take, is refused.
    let res = admin_patch(&app, &admin, &jane_id, json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.me(&access).await.error_for_status().unwrap();
    let body = expect_error(
        admin_patch(&app, &admin, &jane_id, json!({"role": "pharmacist"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(body["error"]["fields"]["role"].is_array(), "{body}");
    let res = admin_patch(&app, &admin, &jane_id, json!({"password": "x"})).await;
    assert!(res.status().is_client_error());
    expect_error(
        admin_patch(&app, &admin, "nobody", json!({"role": "nurse"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // The last active admin stays one; a doctor may not change roles.
    expect_error(
        admin_patch(&app, &admin, &admin_id, json!({"role": "doctor"})).await,
        StatusCode::CONFLICT,
        "last_admin",
    )
    .await;
    expect_error(
        admin_patch(&app, &access, &jane_id, json!({"role": "admin"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // Promoted, jane is a second admin, and then the first may step down.
    let res = admin_patch(&app, &admin, &jane_id, json!({"role": "admin"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = admin_patch(&app, &admin, &admin_id, json!({"role": "doctor"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.access_refused(&admin).await;
}

async fn admins_unlock_end_sessions_and_send_reset_links(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[("LOGIN_MAX_FAILURES", "2")]).await;
    let (admin_id, admin) = admin_in(&app, "admin@example.com").await;
    let jane_id = user_id(&app, "jane@example.com").await;

    // Locked out by wrong passwords, unlocked by an admin.
    for _ in 0..2 {
        app.post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": "not her password"}),
        )
        .await;
    }
    let right = json!({"email": "jane@example.com", "password": PASSWORD});
    expect_error(
        app.post_json("/api/auth/login", right.clone()).await,
        StatusCode::TOO_MANY_REQUESTS,
        "account_locked",
    )
    .await;
    let path = |action: &str| format!("/api/admin/users/{jane_id}/{action}");
    let res = admin_post(
        &app,
        &admin,
        &path("unlock"),
        Some(json!({"reason": "Called the desk"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        last_detail(&app, &admin, "account_unlocked").await,
        format!("by={admin_id} reason=Called the desk")
    );

    // Signed in everywhere, then nowhere; the password still works.
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;
    let portal = signed_in_browser(&app, "jane@example.com").await;
    let res = admin_post(&app, &admin, &path("sessions/revoke"), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.access_refused(&access).await;
    app.refresh_refused(&refresh).await;
    let res = get(&app, &portal, "/account").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "portal session ended");
    assert!(last_detail(&app, &admin, "sessions_revoked")
        .await
        .starts_with(&format!("by={admin_id} web=1 api=")));
    let (access, _) = app.login("jane@example.com", PASSWORD).await;

    // A reset link by email, which works; the admin sees no token.
    let res = admin_post(&app, &admin, &path("password-reset"), None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert!(res.text().await.unwrap().is_empty());
    let emails = common::wait_for_reset_emails(&app.outbox(), 1).await;
    assert!(emails[0].to.contains("jane@example.com"));
    let res = app
        .reset_password(&emails[0].reset_token(), "a brand new passphrase 42")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    app.access_refused(&access).await;

    // Not for a disabled account; none of it for a doctor or a stale sign-in.
    let (doctor, _) = app
        .login("jane@example.com", "a brand new passphrase 42")
        .await;
    for action in ["unlock", "sessions/revoke", "password-reset"] {
        expect_error(
            admin_post(&app, &doctor, &path(action), None).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        expect_error(
            admin_post(
                &app,
                &admin,
                &format!("/api/admin/users/nobody/{action}"),
                None,
            )
            .await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    admin_post(&app, &admin, &path("disable"), None)
        .await
        .error_for_status()
        .unwrap();
    expect_error(
        admin_post(&app, &admin, &path("password-reset"), None).await,
        StatusCode::FORBIDDEN,
        "account_disabled",
    )
    .await;
    app.clock.advance(std::time::Duration::from_secs(11 * 60));
    expect_error(
        admin_post(&app, &admin, &path("unlock"), None).await,
        StatusCode::UNAUTHORIZED,
        "reauthentication_required",
    )
    .await;
}

/// MAIL_PER_ACCOUNT_PER_HOUR holds for the admin's "send a reset link" as
/// for "forgot password": one mailbox gets no more links an hour whoever
/// asks. Over the limit the admin is told when to try again and nothing
/// is sent or replaced (the link already emailed keeps working).
async fn an_admins_reset_email_counts_against_the_accounts_mail_limit(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[("MAIL_PER_ACCOUNT_PER_HOUR", "2")]).await;
    let (admin_id, admin) = admin_in(&app, "admin@example.com").await;
    let jane_id = user_id(&app, "jane@example.com").await;
    let path = format!("/api/admin/users/{jane_id}/password-reset");

    // "Forgot password" and then the admin: the hour's two emails.
    let res = app
        .post_json(
            "/api/auth/forgot-password",
            json!({"email": "jane@example.com"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    common::wait_for_reset_emails(&app.outbox(), 1).await;
    let res = admin_post(&app, &admin, &path, None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let sent = common::wait_for_reset_emails(&app.outbox(), 2).await;
    let link = sent[1].reset_token();

    // Five minutes on, a third is refused until the hour since the first
    // email is over, and nothing goes out.
    app.clock.advance(std::time::Duration::from_secs(5 * 60));
    let res = admin_post(
        &app,
        &admin,
        &path,
        Some(json!({"reason": "Asked at the desk"})),
    )
    .await;
    let retry_after: u64 = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (55 * 60 - 60..=55 * 60).contains(&retry_after),
        "about 55 minutes: {retry_after}"
    );
    let body = expect_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("55 minutes"), "{message}");
    app.settle_email().await;
    assert_eq!(
        common::read_subject(&app.outbox(), "Reset your").len(),
        2,
        "no third email"
    );
    assert_eq!(
        last_detail(&app, &admin, "password_reset_requested").await,
        format!("by={admin_id} mail_limit reason=Asked at the desk")
    );

    // Nothing was replaced either: the link emailed last still works.
    let res = app.reset_password(&link, "a brand new passphrase 42").await;
    assert_eq!(res.status(), StatusCode::OK);

    // An hour after the first email the admin may send one again (after
    // signing in again: the step-up window is long over).
    app.clock
        .advance(std::time::Duration::from_secs(55 * 60 + 1));
    let (admin, _) = app.login("admin@example.com", PASSWORD).await;
    let res = admin_post(&app, &admin, &path, None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let sent = common::wait_for_reset_emails(&app.outbox(), 3).await;
    assert!(sent[2].to.contains("jane@example.com"));
}

async fn mfa_reset_removes_every_factor_and_tells_everyone(backend: common::Backend) {
    use clinic_auth::domain::mfa::{RecoveryCodeHash, SealedTotpSecret, TimeStep};
    let app = TestApp::with_jane(backend, &[]).await;
    let (admin_id, admin) = admin_in(&app, "admin@example.com").await;
    admin_in(&app, "second@example.com").await;
    let jane_id = user_id(&app, "jane@example.com").await;
    let (access, refresh) = app.login("jane@example.com", PASSWORD).await;
    // Her factors, straight into the store (their ceremonies have their
    // own suites).
    let store = app.store().await;
    let id = UserId::new(jane_id.clone());
    let secret = SealedTotpSecret::from_stored("sealed".into());
    let now = Utc::now();
    assert!(store.put_pending_totp(&id, &secret, now).await.unwrap());
    assert!(store
        .confirm_totp(&id, &secret, TimeStep::from_stored(1), now)
        .await
        .unwrap());
    let codes = [
        RecoveryCodeHash::from_stored("a".into()),
        RecoveryCodeHash::from_stored("b".into()),
    ];
    store
        .replace_recovery_codes(&id, &codes, now)
        .await
        .unwrap();
    store
        .add_passkey(&clinic_auth::storage::Passkey {
            id: "pk1".into(),
            user_id: id.clone(),
            credential_id: "cred1".into(),
            name: "Work laptop".into(),
            credential: "{}".into(),
            counter: 0,
            created_at: now,
            last_used_at: None,
        })
        .await
        .unwrap();
    let path = format!("/api/admin/users/{jane_id}");
    let jane: serde_json::Value = admin_get(&app, &admin, &path).await.json().await.unwrap();
    assert_eq!(jane["factors"]["totp"], true);
    assert_eq!(jane["factors"]["recovery_codes_left"], 2);
    assert_eq!(jane["factors"]["passkeys"][0]["name"], "Work laptop");
    assert_eq!(jane["second_factor"], true);

    let res = admin_post(
        &app,
        &admin,
        &format!("{path}/mfa-reset"),
        Some(json!({"reason": "Lost her phone"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let jane: serde_json::Value = admin_get(&app, &admin, &path).await.json().await.unwrap();
    assert_eq!(
        jane["factors"],
        json!({"totp": false, "recovery_codes_left": 0, "passkeys": []})
    );
    assert_eq!(jane["second_factor"], false);
    assert!(jane["sessions"].as_array().unwrap().is_empty(), "{jane}");
    app.access_refused(&access).await;
    app.refresh_refused(&refresh).await;
    assert_eq!(
        last_detail(&app, &admin, "mfa_reset").await,
        format!("by={admin_id} totp=true passkeys=1 reason=Lost her phone")
    );
    // She is told, and so is every admin (with whose account it was).
    let hers = common::wait_for_subject(&app.outbox(), "Your ", 1).await;
    assert!(hers[0].to.contains("jane@example.com"), "{:?}", hers[0].to);
    let theirs = common::wait_for_subject(&app.outbox(), "Two-step sign-in of jane@", 2).await;
    let mut to: Vec<&str> = theirs.iter().map(|e| e.to.as_str()).collect();
    to.sort();
    assert!(
        to[0].contains("admin@example.com") && to[1].contains("second@example.com"),
        "{to:?}"
    );
    // The password alone signs her in now.
    app.login("jane@example.com", PASSWORD).await;
}

async fn erasing_needs_a_disabled_account_and_keeps_the_id(backend: common::Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (admin_id, admin) = admin_in(&app, "admin@example.com").await;
    let jane_id = user_id(&app, "jane@example.com").await;
    let (doctor, _) = app.login("jane@example.com", PASSWORD).await;
    let path = format!("/api/admin/users/{jane_id}");
    let delete = |access: &str, path: &str, body: Option<serde_json::Value>| {
        let mut req = app.client.delete(app.url(path)).bearer_auth(access);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
    };
    expect_error(
        delete(&doctor, &path, None).await.unwrap(),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        delete(&admin, &path, None).await.unwrap(),
        StatusCode::CONFLICT,
        "account_not_disabled",
    )
    .await;
    admin_post(&app, &admin, &format!("{path}/disable"), None)
        .await
        .error_for_status()
        .unwrap();
    let res = delete(&admin, &path, Some(json!({"reason": "Left in 2020"})))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let view: serde_json::Value = res.json().await.unwrap();
    let erased = format!("deleted-{jane_id}@invalid.example");
    assert_eq!(view["id"], jane_id.as_str());
    assert_eq!(view["email"], erased.as_str());
    assert_eq!(view["name"], "Deleted user");
    // Neither address signs in with her password: it is gone too.
    for email in ["jane@example.com", erased.as_str()] {
        let res = app
            .post_json(
                "/api/auth/login",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // The trail still points at her id, and says who erased her and why.
    assert_eq!(
        last_detail(&app, &admin, "account_anonymised").await,
        format!("by={admin_id} reason=Left in 2020")
    );
    let page: serde_json::Value =
        admin_get(&app, &admin, &format!("/api/admin/audit?user_id={jane_id}"))
            .await
            .json()
            .await
            .unwrap();
    assert!(page["events"].as_array().unwrap().len() >= 4, "{page}");
    // Her old address is free again; erasing twice changes nothing more.
    app.register("jane@example.com").await;
    let res = delete(&admin, &path, None).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    expect_error(
        delete(&admin, "/api/admin/users/nobody", None)
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}
