//! The real `clinic-auth` binary's maintenance commands against the
//! database of a running app, on every backend: `audit verify` and
//! `user set-role`.

mod common;

use std::process::{Command, Output, Stdio};

use common::{expect_error, Backend, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_clinic-auth");

backend_tests!(
    audit_verify_exit_codes,
    set_role_makes_an_admin_and_ends_old_tokens,
);

/// Runs the binary with only the app's database variable (plus PATH), in
/// an empty directory so no .env is read.
async fn run(app: &TestApp, args: &[&str]) -> Output {
    let (key, value) = app.database_env();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        Command::new(BIN)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(key, value)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// Rewrites one stored record as someone with database access could.
async fn tamper(app: &TestApp, seq: i64) {
    let (key, value) = app.database_env();
    if key == "DATABASE_URL" {
        let pool = sqlx::SqlitePool::connect(&value).await.unwrap();
        sqlx::query("DROP TRIGGER audit_events_no_update")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_events SET user_agent = 'forged' WHERE seq = ?")
            .bind(seq)
            .execute(&pool)
            .await
            .unwrap();
    } else {
        let client = mongodb::Client::with_uri_str(&value).await.unwrap();
        let done = client
            .default_database()
            .unwrap()
            .collection::<bson::Document>("audit_events")
            .update_one(
                bson::doc! { "seq": seq },
                bson::doc! { "$set": { "user_agent": "forged" } },
            )
            .await
            .unwrap();
        assert_eq!(done.modified_count, 1);
    }
}

async fn audit_verify_exit_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    app.login("jane@example.com", PASSWORD).await;
    app.login("jane@example.com", PASSWORD).await;
    app.flush_audit().await;

    let output = run(&app, &["audit", "verify"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("3 records"), "{}", text(&output));

    tamper(&app, 2).await;
    let output = run(&app, &["audit", "verify"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report = text(&output);
    assert!(
        report.contains("seq 2") && report.contains("altered"),
        "{report}"
    );

    // Usage errors.
    for args in [
        &["audit"][..],
        &["frobnicate"],
        &["user", "set-role", "a@b.c", "root"],
    ] {
        let output = run(&app, args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        assert!(text(&output).contains("Usage"), "{}", text(&output));
    }
    let output = run(&app, &["--help"]).await;
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output).contains("audit verify"));
}

async fn set_role_makes_an_admin_and_ends_old_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.register("jane@example.com").await;
    let (old_access, _) = app.login("jane@example.com", PASSWORD).await;
    let audit = |token: String| {
        let app = &app;
        async move {
            app.client
                .get(app.url("/api/admin/audit?event=role_changed"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let res = audit(old_access.clone()).await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;

    let output = run(&app, &["user", "set-role", "nobody@example.com", "admin"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("no user"), "{}", text(&output));

    let output = run(&app, &["user", "set-role", "Jane@Example.com", "admin"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("admin"), "{}", text(&output));

    // The token carrying the old role is refused everywhere.
    let res = app.me(&old_access).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = audit(old_access).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;

    let (fresh, _) = app.login("jane@example.com", PASSWORD).await;
    let me: Value = app.me(&fresh).await.json().await.unwrap();
    assert_eq!(me["role"], "admin");
    let res = audit(fresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["user_id"], user["id"]);
    assert_eq!(events[0]["detail"], "from=doctor to=admin");
    assert!(events[0]["ip"].is_null());
}
