//! The real `clinic-auth` binary's account commands (issue 19) against the
//! database of a running app, on every backend: `user create` (the first
//! admin, or scripts) prints a one-time set-password link, and `user
//! disable|enable` offboard through the same use-case as the admin API,
//! recorded `by=cli`.

mod common;

use std::process::{Command, Output, Stdio};

use chrono::Utc;
use clinic_auth::domain::{Role, UserId};
use common::{expect_error, Backend, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_clinic-auth");
const LINK: &str = "http://localhost:8000/reset-password?token=";
const NEW_PASSWORD: &str = "a long new passphrase 42";

backend_tests!(
    create_prints_a_link_that_sets_the_first_password,
    create_with_email_queues_the_link_instead,
    disable_and_enable_from_the_command_line,
);

/// Runs the binary with only the app's database variable and data
/// directory (AUDIT_KEY, the checkpoint file and the development secrets
/// live there), plus PATH, in an empty directory so no .env is read.
async fn run(app: &TestApp, args: &[&str]) -> Output {
    let (key, value) = app.database_env();
    let data_dir = app.dir.path().join("data");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        Command::new(BIN)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(key, value)
            .env("DATA_DIR", data_dir)
            .env("ROLES", "doctor,nurse")
            // The service's secrets, as an operator's configuration has
            // them: a queued message is sealed under the refresh secret.
            .env("JWT_ACCESS_SECRET", common::ACCESS_SECRET)
            .env("JWT_REFRESH_SECRET", common::REFRESH_SECRET)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn login_status(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post_json(
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
    .await
}

async fn create_prints_a_link_that_sets_the_first_password(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("ROLES", "doctor,nurse")]).await;
    let output = run(
        &app,
        &[
            "user",
            "create",
            "IT@Example.com",
            "--name",
            "Sam Lee",
            "--role",
            "admin",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // The link alone on stdout (for scripts); what it is on stderr.
    let link = stdout(&output).trim().to_owned();
    assert!(link.starts_with(LINK), "{link}");
    assert_eq!(link.lines().count(), 1);
    assert!(stderr(&output).contains("it@example.com (admin)"));
    assert!(
        stderr(&output).contains("3days"),
        "INVITE_EXPIRES: {}",
        stderr(&output)
    );
    let token = &link[LINK.len()..];

    // No usable password until the link sets one.
    let res = login_status(&app, "it@example.com", PASSWORD).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let res = app.reset_password(token, NEW_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (access, _) = app.login("it@example.com", NEW_PASSWORD).await;
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["role"], "admin");
    assert_eq!(me["verified"], true);
    assert_eq!(me["name"], "Sam Lee");
    let res = app.reset_password(token, "another passphrase 4242").await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_token").await;

    // Recorded as the operator's doing.
    let events = app.audit_events(&access, "register").await;
    assert_eq!(events[0]["detail"], "by=cli role=admin", "{events:?}");

    // Refusals: the account exists (1); bad input (2), nothing created.
    let output = run(
        &app,
        &[
            "user",
            "create",
            "it@example.com",
            "--name",
            "Sam",
            "--role",
            "nurse",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("already exists"));
    for args in [
        &[
            "user",
            "create",
            "kim@example.com",
            "--name",
            "Kim",
            "--role",
            "surgeon",
        ][..],
        &[
            "user",
            "create",
            "not-an-address",
            "--name",
            "Kim",
            "--role",
            "nurse",
        ],
        &["user", "create", "kim@example.com", "--role", "nurse"],
        &[
            "user",
            "create",
            "kim@example.com",
            "--name",
            "",
            "--role",
            "nurse",
        ],
    ] {
        let output = run(&app, args).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{args:?}: no link");
    }
    let kim = clinic_auth::domain::EmailAddress::parse("kim@example.com").unwrap();
    assert!(app
        .store()
        .await
        .find_user_by_email(&kim)
        .await
        .unwrap()
        .is_none());

    // A link nobody used dies after INVITE_EXPIRES (the app's clock).
    let output = run(
        &app,
        &[
            "user",
            "create",
            "lee@example.com",
            "--name",
            "Lee",
            "--role",
            "nurse",
        ],
    )
    .await;
    let link = stdout(&output).trim().to_owned();
    app.clock
        .advance(std::time::Duration::from_secs(72 * 3600 + 1));
    let res = app.reset_password(&link[LINK.len()..], NEW_PASSWORD).await;
    expect_error(res, StatusCode::BAD_REQUEST, "invalid_token").await;
}

async fn disable_and_enable_from_the_command_line(backend: Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let admin = app.register("admin@example.com").await;
    let now = Utc::now();
    assert!(app
        .store()
        .await
        .set_user_role(
            &UserId::new(admin["id"].as_str().unwrap()),
            &Role::admin(),
            now,
            now
        )
        .await
        .unwrap());
    let (jane_access, jane_refresh) = app.login("jane@example.com", PASSWORD).await;

    let output = run(
        &app,
        &[
            "user",
            "disable",
            "Jane@Example.com",
            "--reason",
            "Left the clinic",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("jane@example.com is disabled"));
    app.access_refused(&jane_access).await;
    app.refresh_refused(&jane_refresh).await;
    let res = login_status(&app, "jane@example.com", PASSWORD).await;
    expect_error(res, StatusCode::FORBIDDEN, "account_disabled").await;

    let output = run(&app, &["user", "enable", "jane@example.com"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    app.login("jane@example.com", PASSWORD).await;

    let (access, _) = app.login("admin@example.com", PASSWORD).await;
    app.flush_audit().await;
    for (event, detail) in [
        ("account_disabled", "by=cli reason=Left the clinic"),
        ("account_enabled", "by=cli"),
    ] {
        let events = app.audit_events(&access, event).await;
        assert_eq!(events[0]["detail"], detail, "{events:?}");
    }

    // Exit codes like set-role: no such user 1, bad input 2, and the last
    // active administrator is refused (1).
    let output = run(&app, &["user", "disable", "nobody@example.com"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("no user"));
    let output = run(&app, &["user", "enable", "not an address"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let long = "x".repeat(501);
    let output = run(
        &app,
        &["user", "disable", "jane@example.com", "--reason", &long],
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = run(&app, &["user", "disable", "admin@example.com"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("last active administrator"));
    app.login("admin@example.com", PASSWORD).await;
}

async fn create_with_email_queues_the_link_instead(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("ROLES", "doctor,nurse")]).await;
    let output = run(
        &app,
        &[
            "user",
            "create",
            "sam@example.com",
            "--name",
            "Sam Lee",
            "--role",
            "nurse",
            "--email",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).is_empty(), "no link printed");
    assert!(stderr(&output).contains("queued"), "{}", stderr(&output));
    // The running service's sender finds it in the queue (it polls every
    // few seconds: a message queued by another process wakes nobody).
    let mut found = Vec::new();
    for _ in 0..300 {
        found = common::read_subject(&app.outbox(), "You are invited to");
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let email = found.first().expect("the set-password email");
    assert!(email.to.contains("sam@example.com"));
    assert!(email.text.contains("as nurse"), "{}", email.text);
    let start = email.text.find(LINK).expect("a set-password link") + LINK.len();
    let token: String = email.text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let res = app.reset_password(&token, NEW_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.login("sam@example.com", NEW_PASSWORD).await;
}
