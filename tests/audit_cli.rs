//! The real `clinic-auth` binary's maintenance commands against the
//! database of a running app, on every backend: `audit verify` (including
//! what an insider with write access to the database can and cannot hide
//! from it) and `user set-role`.

mod common;

#[path = "support/audit_db.rs"]
mod audit_db;

use std::process::{Command, Output, Stdio};

use audit_db::{rehash_legacy, Raw, RawRecord, GENESIS};
use common::{database_pair, expect_error, Backend, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_clinic-auth");

backend_tests!(
    audit_verify_exit_codes,
    set_role_makes_an_admin_and_ends_old_tokens,
    verify_names_records_removed_after_a_checkpoint,
    verify_fails_on_a_chain_recomputed_without_the_key,
    verify_accepts_legacy_records_followed_by_keyed_ones,
    verify_reports_the_wrong_audit_key,
    verify_reports_an_altered_checkpoint_line,
);

/// Runs the binary with only the app's database variable and data
/// directory (where the development AUDIT_KEY and the checkpoint file
/// live), plus PATH, in an empty directory so no .env is read.
async fn run(app: &TestApp, args: &[&str]) -> Output {
    run_with(app, args, &[]).await
}

/// `run`, with more variables.
async fn run_with(app: &TestApp, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let (key, value) = app.database_env();
    let data_dir = app.dir.path().join("data");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        Command::new(BIN)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(key, value)
            .env("DATA_DIR", data_dir)
            .envs(vars)
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
    let raw = Raw::open(&app.database_env()).await;
    raw.defeat_triggers().await;
    raw.alter_ip(seq).await;
}

async fn audit_verify_exit_codes(backend: Backend) {
    let app = running_with_three_events(backend).await;
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
        &["user", "set-role", "a@b.c", "Root!"],
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

    // A role the clinic does not use (ROLES) is a usage error, named with
    // the roles it does use; with ROLES listing it, it is given.
    let output = run(&app, &["user", "set-role", "Jane@Example.com", "nurse"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("unknown role nurse: this clinic's roles are admin, doctor (ROLES)"),
        "{}",
        text(&output)
    );
    let output = run_with(
        &app,
        &["user", "set-role", "Jane@Example.com", "Nurse"],
        &[("ROLES", "doctor,nurse")],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("nurse"), "{}", text(&output));

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
    assert_eq!(events.len(), 2, "{body}");
    assert_eq!(events[0]["user_id"], user["id"]);
    // Newest first.
    assert_eq!(events[0]["detail"], "from=nurse to=admin");
    assert_eq!(events[1]["detail"], "from=doctor to=nurse");
    assert!(events[0]["ip"].is_null());
}

/// An app that recorded three events (a registration and two sign-ins),
/// which `audit verify` finds whole.
async fn running_with_three_events(backend: Backend) -> TestApp {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    app.login("jane@example.com", PASSWORD).await;
    app.login("jane@example.com", PASSWORD).await;
    app.flush_audit().await;
    let output = run(&app, &["audit", "verify"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("3 records"), "{}", text(&output));
    app
}

/// The same, stopped, so its shutdown checkpoint covers all three events.
async fn stopped_with_three_events(backend: Backend) -> TestApp {
    let mut app = running_with_three_events(backend).await;
    app.stop().await;
    app
}

/// Runs `audit verify` (with `vars`), which must find the trail damaged
/// (exit 1); returns what it said.
async fn verify_fails(app: &TestApp, vars: &[(&str, &str)]) -> String {
    let output = run_with(app, &["audit", "verify"], vars).await;
    let report = text(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    report
}

fn checkpoint_file(app: &TestApp) -> std::path::PathBuf {
    app.dir.path().join("data/audit-checkpoints")
}

/// Removing the newest records leaves a shorter chain whose links all
/// hold; only the signed checkpoint outside the database shows the loss.
async fn verify_names_records_removed_after_a_checkpoint(backend: Backend) {
    let app = stopped_with_three_events(backend).await;
    Raw::open(&app.database_env()).await.truncate(2).await;
    let report = verify_fails(&app, &[]).await;
    assert!(
        report.contains("records 2..3 were removed after the checkpoint of"),
        "{report}"
    );
}

/// An insider alters a record and re-hashes everything after it with plain
/// SHA-256, as the first release's format allows: every link holds, but
/// without AUDIT_KEY the result cannot pass for keyed records.
async fn verify_fails_on_a_chain_recomputed_without_the_key(backend: Backend) {
    let app = stopped_with_three_events(backend).await;
    let raw = Raw::open(&app.database_env()).await;

    // From record 2 on: record 1 is keyed, so what follows must be too.
    raw.rewrite_without_key(2).await;
    let report = verify_fails(&app, &[]).await;
    assert!(
        report.contains("seq 2") && report.contains("without AUDIT_KEY"),
        "{report}"
    );

    // The whole chain, so no keyed record is left: the signed checkpoint
    // still knows what record 3 was.
    raw.rewrite_without_key(1).await;
    let report = verify_fails(&app, &[]).await;
    assert!(
        report.contains("seq 3") && report.contains("does not match the checkpoint of"),
        "{report}"
    );

    // And with the checkpoint file gone too, nothing vouches for the chain.
    std::fs::remove_file(checkpoint_file(&app)).unwrap();
    let report = verify_fails(&app, &[]).await;
    assert!(report.contains("no checkpoint file"), "{report}");
}

/// A trail written by the first release (plain SHA-256 records, stored
/// without a record version) keeps verifying once keyed records follow it.
async fn verify_accepts_legacy_records_followed_by_keyed_ones(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let pair = database_pair(backend, dir.path()).await;
    if backend == Backend::Sqlite {
        // The schema as the first release left it: its migrations only.
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let options: sqlx::sqlite::SqliteConnectOptions = pair.1.parse().unwrap();
        let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
            .await
            .unwrap();
        let mut old = sqlx::migrate!("./migrations");
        old.migrations = old
            .migrations
            .iter()
            .filter(|m| m.version <= 20261124000012)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        old.run(&pool).await.unwrap();
        pool.close().await;
    }
    let mut legacy: Vec<RawRecord> = (1..=3).map(|seq| RawRecord::legacy(seq, "old")).collect();
    rehash_legacy(&mut legacy, GENESIS);
    Raw::open(&pair).await.put_legacy(&legacy).await;

    let mut app = TestApp::spawn_with(backend, &[(pair.0.as_str(), pair.1.as_str())]).await;
    app.register("jane@example.com").await;
    app.login("jane@example.com", PASSWORD).await;
    app.stop().await;
    let output = run(&app, &["audit", "verify"]).await;
    let report = text(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(
        report.contains("5 records")
            && report.contains("1..3 legacy")
            && report.contains("4..5 keyed"),
        "{report}"
    );
    // The first keyed record links to the last legacy one.
    let stored = Raw::open(&pair).await.records().await;
    assert_eq!(stored[3].prev_hash, legacy[2].hash);
}

async fn verify_reports_the_wrong_audit_key(backend: Backend) {
    let app = stopped_with_three_events(backend).await;
    let other_key = "ab".repeat(32);
    let report = verify_fails(&app, &[("AUDIT_KEY", &other_key)]).await;
    assert!(report.contains("AUDIT_KEY is not the key"), "{report}");
    // A key that is not 64 hex characters is a configuration error.
    let output = run_with(&app, &["audit", "verify"], &[("AUDIT_KEY", "secret")]).await;
    let report = text(&output);
    assert_eq!(output.status.code(), Some(2), "{report}");
    assert!(report.contains("AUDIT_KEY"), "{report}");
}

async fn verify_reports_an_altered_checkpoint_line(backend: Backend) {
    let app = stopped_with_three_events(backend).await;
    let path = checkpoint_file(&app);
    let content = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = content.lines().collect();
    let last = lines.len();
    assert!(lines[last - 1].contains(" seq=3 "), "{content}");
    // Claim an older head: what hiding one removed record would need.
    let forged = content.replace(" seq=3 ", " seq=2 ");
    std::fs::write(&path, forged).unwrap();
    let report = verify_fails(&app, &[]).await;
    assert!(
        report.contains(&format!("line {last}")) && report.contains("altered"),
        "{report}"
    );
}
