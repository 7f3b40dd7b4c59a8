//! The audit trail, against every backend: what the API and pages record,
//! that no secret is stored, that the hash chain exposes tampering, that
//! concurrent appends still form one chain, and the admin API over it.

mod common;

#[path = "support/audit_db.rs"]
mod audit_db;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use audit_db::Raw;
use chrono::Utc;
use clinic_auth::domain::audit::GENESIS_HASH;
use clinic_auth::domain::{
    AuditEvent, AuditKey, AuditOutcome, AuditRecord, HashVersion, NewAuditEvent, Role, UserId,
};
use clinic_auth::services::audit::{verify_chain, ChainFault};
use clinic_auth::services::checkpoints::Checkpoint;
use clinic_auth::storage::Store;
use common::{database_pair, expect_error, refresh_cookie, Backend, TestApp, PASSWORD};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    api_actions_are_recorded_with_client_details,
    portal_actions_are_recorded_too,
    reset_and_session_revocation_are_recorded,
    shutdown_stores_what_was_queued,
    checkpoints_are_written_at_the_interval,
    a_checkpoint_is_written_at_shutdown,
    verify_accepts_a_whole_chain,
    verify_names_an_altered_record,
    verify_names_a_deleted_record,
    verify_holds_the_chain_to_its_checkpoints,
    concurrent_appends_form_one_chain,
    admin_api_is_for_admins_only,
    admin_api_filters_and_pages,
    admin_api_refuses_bad_filters,
);

const UA: &str = "AuditTest/1.0 (clinic desk 3)";

/// A key for tests that write to a store directly.
fn key() -> AuditKey {
    AuditKey::from_hex(&"c3".repeat(32)).unwrap()
}

/// The AUDIT_KEY a test app generated into its data directory.
fn app_key(app: &TestApp) -> AuditKey {
    let path = app.dir.path().join("data/audit-key");
    AuditKey::from_hex(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn all_events(store: &Arc<dyn Store>) -> Vec<AuditRecord> {
    store.audit_events_after(0, 100_000).await.unwrap()
}

/// Flushes until `count` events are stored: a forgot-password request
/// records from a background task, after its answer.
async fn wait_for_events(app: &TestApp, store: &Arc<dyn Store>, count: usize) -> Vec<AuditRecord> {
    for _ in 0..100 {
        app.flush_audit().await;
        let events = all_events(store).await;
        if events.len() >= count {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {count} audit events");
}

fn from_desk(req: RequestBuilder, request_id: &str) -> RequestBuilder {
    req.header("user-agent", UA)
        .header("x-request-id", request_id)
}

/// The one record of a request sent `from_desk`: exactly one, carrying the
/// desk's user agent and the loopback address.
fn recorded<'a>(events: &'a [AuditRecord], request_id: &str) -> &'a AuditRecord {
    let found: Vec<&AuditRecord> = events
        .iter()
        .filter(|r| r.request_id.as_deref() == Some(request_id))
        .collect();
    assert_eq!(found.len(), 1, "{request_id}: {events:#?}");
    let record = found[0];
    assert_eq!(record.ip.as_deref(), Some("127.0.0.1"), "{request_id}");
    assert_eq!(record.user_agent.as_deref(), Some(UA), "{request_id}");
    record
}

fn echoed_id(res: &reqwest::Response) -> String {
    res.headers()["x-request-id"].to_str().unwrap().to_owned()
}

fn new_event(event: AuditEvent, user: &str) -> NewAuditEvent {
    NewAuditEvent {
        id: uuid::Uuid::new_v4().simple().to_string(),
        time: chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap(),
        event,
        outcome: event.default_outcome(),
        user_id: Some(user.to_owned()),
        email: Some(format!("{user}@example.com")),
        ip: Some("192.0.2.7".into()),
        user_agent: Some(UA.into()),
        request_id: Some("req-1".into()),
        detail: None,
    }
}

async fn api_actions_are_recorded_with_client_details(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let http = &app.client;
    let res = from_desk(http.post(app.url("/api/auth/register")), "rid-register")
        .json(&json!({"name": "Dr Jane Smith", "email": "jane@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(echoed_id(&res), "rid-register");
    let user_id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let res = from_desk(http.post(app.url("/api/auth/login")), "rid-login")
        .json(&json!({"email": "jane@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let first_refresh = refresh_cookie(res.headers()).unwrap();
    let first_access = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let res = from_desk(http.post(app.url("/api/auth/login")), "rid-wrong")
        .json(&json!({"email": "Jane@Example.com", "password": "Wrong!Password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // No X-Request-Id sent: the generated one is recorded and echoed.
    let res = http
        .post(app.url("/api/auth/login"))
        .header("user-agent", UA)
        .json(&json!({"email": "ghost@example.com", "password": "Wrong!Password-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let generated = echoed_id(&res);

    let res = from_desk(http.post(app.url("/api/auth/refresh")), "rid-refresh")
        .header("cookie", format!("refresh_token={first_refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let second_refresh = refresh_cookie(res.headers()).unwrap();

    let new_password = "N3w!Passphrase-2026";
    let res = from_desk(
        http.post(app.url("/api/auth/change-password")),
        "rid-change",
    )
    .bearer_auth(&first_access)
    .json(&json!({"current_password": PASSWORD, "new_password": new_password}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let fresh_access = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // A second sign-in to sign out of: a logout that ends nothing (as it
    // would after sign-out everywhere) records nothing.
    let res = from_desk(http.post(app.url("/api/auth/login")), "rid-login-2")
        .json(&json!({"email": "jane@example.com", "password": new_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let other_refresh = refresh_cookie(res.headers()).unwrap();
    let res = from_desk(http.post(app.url("/api/auth/logout")), "rid-logout")
        .header("cookie", format!("refresh_token={other_refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let res = from_desk(http.post(app.url("/api/auth/logout-all")), "rid-all")
        .bearer_auth(&fresh_access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    for (email, request_id) in [
        ("jane@example.com", "rid-forgot"),
        ("nobody@example.com", "rid-forgot-x"),
    ] {
        let res = from_desk(http.post(app.url("/api/auth/forgot-password")), request_id)
            .json(&json!({"email": email}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }

    let store = app.store().await;
    let events = wait_for_events(&app, &store, 11).await;
    assert_eq!(events.len(), 11, "{events:#?}");
    let me = Some(user_id.as_str());
    let expected: [(&str, AuditEvent, Option<&str>, Option<&str>); 11] = [
        (
            "rid-register",
            AuditEvent::Register,
            me,
            Some("jane@example.com"),
        ),
        (
            "rid-login",
            AuditEvent::LoginSuccess,
            me,
            Some("jane@example.com"),
        ),
        (
            "rid-wrong",
            AuditEvent::LoginFailure,
            me,
            Some("Jane@Example.com"),
        ),
        (
            &generated,
            AuditEvent::LoginFailure,
            None,
            Some("ghost@example.com"),
        ),
        ("rid-refresh", AuditEvent::Refresh, me, None),
        ("rid-change", AuditEvent::PasswordChanged, me, None),
        (
            "rid-login-2",
            AuditEvent::LoginSuccess,
            me,
            Some("jane@example.com"),
        ),
        ("rid-logout", AuditEvent::Logout, me, None),
        ("rid-all", AuditEvent::LogoutAll, me, None),
        (
            "rid-forgot",
            AuditEvent::PasswordResetRequested,
            me,
            Some("jane@example.com"),
        ),
        (
            "rid-forgot-x",
            AuditEvent::PasswordResetRequested,
            None,
            Some("nobody@example.com"),
        ),
    ];
    for (request_id, event, user, email) in expected {
        let record = recorded(&events, request_id);
        assert_eq!(record.event, event, "{request_id}");
        assert_eq!(record.user_id.as_deref(), user, "{request_id}");
        assert_eq!(record.email.as_deref(), email, "{request_id}");
        let failure = event == AuditEvent::LoginFailure;
        assert_eq!(
            record.outcome,
            if failure {
                AuditOutcome::Failure
            } else {
                AuditOutcome::Success
            }
        );
        assert!((Utc::now() - record.time).num_seconds() < 60);
    }
    let seqs: Vec<u64> = events.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());

    // Nothing secret in any stored field.
    let user = store
        .find_user_by_id(&UserId::new(user_id.clone()))
        .await
        .unwrap()
        .unwrap();
    let secrets = [
        PASSWORD.to_owned(),
        "Wrong!Password-1".to_owned(),
        "Wrong!Password-2".to_owned(),
        new_password.to_owned(),
        first_refresh.clone(),
        second_refresh.clone(),
        other_refresh.clone(),
        first_access.clone(),
        fresh_access.clone(),
        user.password_hash.expose().to_owned(),
        clinic_auth::domain::TokenHash::of(&first_refresh)
            .as_str()
            .to_owned(),
        "argon2".to_owned(),
    ];
    for record in &events {
        let stored = record.canonical();
        for secret in &secrets {
            assert!(!stored.contains(secret.as_str()), "secret in {stored}");
        }
    }
    assert!(verify_chain(store.as_ref(), &app_key(&app), &[])
        .await
        .unwrap()
        .is_ok());
}

async fn portal_actions_are_recorded_too(backend: Backend) {
    // The pages call the same services: a portal sign-in and sign-out are
    // recorded like API ones, with the page request's id.
    let app = TestApp::spawn(backend).await;
    let user = app.register("jane@example.com").await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let csrf_of = |html: String| {
        let marker = "name=\"csrf\" value=\"";
        let start = html.find(marker).expect("page has a CSRF field") + marker.len();
        html[start..].split('"').next().unwrap().to_owned()
    };
    let page = browser.get(app.url("/login")).send().await.unwrap();
    let csrf = csrf_of(page.text().await.unwrap());
    let res = from_desk(browser.post(app.url("/login")), "rid-portal-in")
        .header("origin", app.base.clone())
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", "jane@example.com"),
            ("password", PASSWORD),
            ("next", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "portal sign-in");
    let page = browser.get(app.url("/account")).send().await.unwrap();
    let csrf = csrf_of(page.text().await.unwrap());
    let res = from_desk(browser.post(app.url("/logout")), "rid-portal-out")
        .header("origin", app.base.clone())
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "portal sign-out");

    let store = app.store().await;
    let events = wait_for_events(&app, &store, 3).await;
    for (request_id, event) in [
        ("rid-portal-in", AuditEvent::LoginSuccess),
        ("rid-portal-out", AuditEvent::Logout),
    ] {
        let record = recorded(&events, request_id);
        assert_eq!(record.event, event);
        assert_eq!(record.user_id.as_deref(), user["id"].as_str());
    }
}

async fn reset_and_session_revocation_are_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.register("jane@example.com").await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    app.login("jane@example.com", PASSWORD).await;
    let sessions = app.sessions(&access).await;
    let other = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = from_desk(
        app.client
            .delete(app.url(&format!("/api/auth/sessions/{other}"))),
        "rid-revoke",
    )
    .bearer_auth(&access)
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let token = app.reset_token_for("jane@example.com").await;
    let res = from_desk(
        app.client.post(app.url("/api/auth/reset-password")),
        "rid-reset",
    )
    .json(&json!({"token": token, "password": "N3w!Passphrase-2026"}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let store = app.store().await;
    let events = wait_for_events(&app, &store, 7).await;
    let revoked = recorded(&events, "rid-revoke");
    assert_eq!(revoked.event, AuditEvent::SessionRevoked);
    assert_eq!(revoked.user_id.as_deref(), user["id"].as_str());
    // The reset also proved the (unverified) mailbox: two records.
    let reset: Vec<&AuditRecord> = events
        .iter()
        .filter(|r| r.request_id.as_deref() == Some("rid-reset"))
        .collect();
    let kinds: Vec<AuditEvent> = reset.iter().map(|r| r.event).collect();
    assert_eq!(
        kinds,
        [
            AuditEvent::PasswordResetCompleted,
            AuditEvent::EmailVerified
        ]
    );
    for record in reset {
        assert_eq!(record.user_id.as_deref(), user["id"].as_str());
        assert_eq!(record.user_agent.as_deref(), Some(UA));
    }
    // The reset token never reaches the trail.
    assert!(events.iter().all(|r| !r.canonical().contains(&token)));
}

async fn shutdown_stores_what_was_queued(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    for _ in 0..5 {
        app.login("jane@example.com", PASSWORD).await;
    }
    // No flush: stopping the app must drain the queue by itself.
    app.stop().await;
    let store = app.store().await;
    assert_eq!(all_events(&store).await.len(), 6);
}

/// The checkpoint lines in `path` naming `seq`, waiting up to 10 s for one:
/// the writer works on its own schedule.
async fn wait_for_checkpoint(path: &Path, seq: u64) -> Vec<String> {
    let marker = format!(" seq={seq} ");
    for _ in 0..200 {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.iter().any(|l| l.contains(&marker)) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no checkpoint of seq {seq} in {}", path.display());
}

/// While the app runs, a checkpoint of the head is signed once per
/// AUDIT_CHECKPOINT_INTERVAL, into an owner-only file.
async fn checkpoints_are_written_at_the_interval(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("AUDIT_CHECKPOINT_INTERVAL", "200ms")]).await;
    let path = app.dir.path().join("data/audit-checkpoints");
    app.register("jane@example.com").await;
    app.flush_audit().await;
    wait_for_checkpoint(&path, 1).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
    app.login("jane@example.com", PASSWORD).await;
    app.flush_audit().await;
    let lines = wait_for_checkpoint(&path, 2).await;
    let store = app.store().await;
    let head = all_events(&store).await.pop().unwrap();
    assert!(
        lines
            .last()
            .unwrap()
            .contains(&format!(" head={} ", head.hash)),
        "{lines:?}"
    );
}

/// With an interval that never comes, stopping the app still signs the
/// head it ended with, after the last queued event is stored.
async fn a_checkpoint_is_written_at_shutdown(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, &[("AUDIT_CHECKPOINT_INTERVAL", "1h")]).await;
    let path = app.dir.path().join("data/audit-checkpoints");
    app.register("jane@example.com").await;
    app.login("jane@example.com", PASSWORD).await;
    app.stop().await;
    let content = std::fs::read_to_string(&path).unwrap();
    let last = content.lines().last().unwrap();
    let store = app.store().await;
    let head = all_events(&store).await.pop().unwrap();
    assert_eq!(head.seq, 2);
    assert!(
        last.contains(" seq=2 ") && last.contains(&format!(" head={} ", head.hash)),
        "{content}"
    );
}

async fn verify_accepts_a_whole_chain(backend: Backend) {
    let (store, _guard) = common::fresh_store(backend).await;
    let summary = verify_chain(store.as_ref(), &key(), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (summary.records, summary.head_hash.as_str()),
        (0, GENESIS_HASH)
    );
    let batch: Vec<NewAuditEvent> = (0..5)
        .map(|i| new_event(AuditEvent::LoginSuccess, &format!("u{i}")))
        .collect();
    let links = store.append_audit_events(&batch, &key()).await.unwrap();
    // A retried batch is not appended twice, and reports the same links.
    let again = store.append_audit_events(&batch, &key()).await.unwrap();
    assert_eq!(again, links);
    let last = store
        .append_audit_events(&[new_event(AuditEvent::Logout, "u0")], &key())
        .await
        .unwrap();
    let events = all_events(&store).await;
    assert_eq!(events.len(), 6);
    assert_eq!(events[0].prev_hash, GENESIS_HASH);
    for pair in events.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    // What the append reported is what was stored, and every record is keyed.
    let reported: Vec<(u64, String)> = links
        .iter()
        .chain(&last)
        .map(|l| (l.seq, l.hash.clone()))
        .collect();
    let stored: Vec<(u64, String)> = events.iter().map(|r| (r.seq, r.hash.clone())).collect();
    assert_eq!(reported, stored);
    assert!(events.iter().all(|r| r.version == HashVersion::V2));
    assert_eq!(events[5].email.as_deref(), Some("u0@example.com"));
    let summary = verify_chain(store.as_ref(), &key(), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.records, 6);
    assert_eq!(summary.head_hash, events[5].hash);
    assert_eq!(summary.first_keyed, Some(1));
}

/// A store with five chained events, and a raw handle on its database.
async fn chain_of_five(backend: Backend) -> (Arc<dyn Store>, Raw, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pair = database_pair(backend, dir.path()).await;
    let config =
        clinic_auth::config::Config::from_pairs(&[(pair.0.as_str(), pair.1.as_str())]).unwrap();
    let store = clinic_auth::app::open_store(&config).await.unwrap();
    let batch: Vec<NewAuditEvent> = (0..5)
        .map(|i| new_event(AuditEvent::Refresh, &format!("u{i}")))
        .collect();
    store.append_audit_events(&batch, &key()).await.unwrap();
    assert!(verify_chain(store.as_ref(), &key(), &[])
        .await
        .unwrap()
        .is_ok());
    (store, Raw::open(&pair).await, dir)
}

/// Where verification finds the first break of a chain that must be broken.
async fn first_break(store: &dyn Store) -> (u64, ChainFault) {
    let broken = verify_chain(store, &key(), &[]).await.unwrap().unwrap_err();
    (broken.seq, broken.fault)
}

async fn verify_names_an_altered_record(backend: Backend) {
    let (store, raw, _guard) = chain_of_five(backend).await;
    raw.defeat_triggers().await;
    raw.alter_ip(3).await;
    assert_eq!(first_break(store.as_ref()).await, (3, ChainFault::Altered));
}

async fn verify_names_a_deleted_record(backend: Backend) {
    let (store, raw, _guard) = chain_of_five(backend).await;
    raw.defeat_triggers().await;
    raw.delete(2).await;
    assert_eq!(first_break(store.as_ref()).await, (2, ChainFault::Missing));
}

/// The chain's links and keyed hashes say nothing about records removed
/// from its end, nor about a chain rewritten whole in the legacy format;
/// checkpoints signed outside the database do.
async fn verify_holds_the_chain_to_its_checkpoints(backend: Backend) {
    let (store, raw, _guard) = chain_of_five(backend).await;
    let events = all_events(&store).await;
    let now = Utc::now();
    let at = |seq: u64| Checkpoint {
        seq,
        head: if seq == 0 {
            GENESIS_HASH.to_owned()
        } else {
            events[seq as usize - 1].hash.clone()
        },
        time: now,
    };
    let checkpoints = [at(0), at(3), at(5)];
    let summary = verify_chain(store.as_ref(), &key(), &checkpoints)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.latest_checkpoint, Some(at(5)));

    // Re-hashing from record 4 on without the key: unkeyed after keyed.
    raw.rewrite_without_key(4).await;
    let broken = verify_chain(store.as_ref(), &key(), &[])
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((broken.seq, broken.fault), (4, ChainFault::Unkeyed));
    // The whole chain: a valid legacy chain, which only a checkpoint exposes.
    raw.rewrite_without_key(1).await;
    let summary = verify_chain(store.as_ref(), &key(), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((summary.records, summary.first_keyed), (5, None));
    let broken = verify_chain(store.as_ref(), &key(), &checkpoints)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((broken.seq, broken.fault), (3, ChainFault::Rewritten));

    // Tail truncation of the untouched chain.
    let (store, raw, _guard) = chain_of_five(backend).await;
    let events = all_events(&store).await;
    let newest = Checkpoint {
        seq: 5,
        head: events[4].hash.clone(),
        time: Utc::now(),
    };
    raw.truncate(2).await;
    let broken = verify_chain(store.as_ref(), &key(), &[newest])
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((broken.seq, broken.fault), (4, ChainFault::Truncated));
    assert!(
        broken
            .reason
            .starts_with("records 4..5 were removed after the checkpoint of"),
        "{}",
        broken.reason
    );
    // Without the checkpoint, the shorter chain looks whole.
    assert!(verify_chain(store.as_ref(), &key(), &[])
        .await
        .unwrap()
        .is_ok());
}

async fn concurrent_appends_form_one_chain(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let pair = database_pair(backend, dir.path()).await;
    let config =
        clinic_auth::config::Config::from_pairs(&[(pair.0.as_str(), pair.1.as_str())]).unwrap();
    // Two stores on one database stand for two instances of the service.
    let stores = [
        clinic_auth::app::open_store(&config).await.unwrap(),
        clinic_auth::app::open_store(&config).await.unwrap(),
    ];
    let tasks: Vec<_> = (0..6)
        .map(|t| {
            let store = Arc::clone(&stores[t % 2]);
            tokio::spawn(async move {
                for round in 0..5 {
                    let batch: Vec<NewAuditEvent> = (0..3)
                        .map(|i| new_event(AuditEvent::LoginSuccess, &format!("t{t}r{round}i{i}")))
                        .collect();
                    store.append_audit_events(&batch, &key()).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let summary = verify_chain(stores[0].as_ref(), &key(), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.records, 90);
    let events = all_events(&stores[1]).await;
    let users: std::collections::HashSet<_> = events.iter().map(|r| r.user_id.clone()).collect();
    assert_eq!(users.len(), 90, "every event stored exactly once");
}

/// Registers and signs in a user, made admin in the store when asked;
/// returns (user id, access token).
async fn signed_in(app: &TestApp, email: &str, role: Role) -> (String, String) {
    let user = app.register(email).await;
    let id = user["id"].as_str().unwrap().to_owned();
    if role.is_admin() {
        let now = Utc::now();
        let store = app.store().await;
        assert!(store
            .set_user_role(&UserId::new(id.clone()), &role, now, now)
            .await
            .unwrap());
    }
    let (access, _) = app.login(email, PASSWORD).await;
    (id, access)
}

async fn get_audit(app: &TestApp, token: Option<&str>, query: &str) -> reqwest::Response {
    let mut req = app.client.get(app.url(&format!("/api/admin/audit{query}")));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

async fn admin_api_is_for_admins_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, doctor) = signed_in(&app, "doctor@example.com", Role::parse("doctor").unwrap()).await;
    let (_, admin) = signed_in(&app, "admin@example.com", Role::admin()).await;
    let res = get_audit(&app, None, "").await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = get_audit(&app, Some("not-a-token"), "").await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = get_audit(&app, Some(&doctor), "").await;
    expect_error(res, StatusCode::FORBIDDEN, "forbidden").await;
    app.flush_audit().await;
    let res = get_audit(&app, Some(&admin), "").await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let events = body["events"].as_array().unwrap();
    // Two registrations and two sign-ins, newest first.
    assert_eq!(events.len(), 4, "{body}");
    assert_eq!(events[0]["event"], "login_success");
    assert_eq!(events[0]["seq"], 4);
    assert!(body["next"].is_null());
    for key in [
        "time",
        "outcome",
        "ip",
        "user_agent",
        "request_id",
        "hash",
        "prev_hash",
    ] {
        assert!(events[0].get(key).is_some(), "{key}");
    }
}

async fn admin_api_filters_and_pages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (admin_id, admin) = signed_in(&app, "admin@example.com", Role::admin()).await;
    let (doctor_id, _) =
        signed_in(&app, "doctor@example.com", Role::parse("doctor").unwrap()).await;
    for _ in 0..3 {
        let res = app
            .post_json(
                "/api/auth/login",
                json!({"email": "doctor@example.com", "password": "Wrong!Password-9"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    app.flush_audit().await;
    // 2 registrations + 2 logins + 3 failures = 7 events.
    let page = |query: String| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let res = get_audit(app, Some(&admin), &query).await;
            assert_eq!(res.status(), StatusCode::OK, "{query}");
            res.json::<Value>().await.unwrap()
        }
    };

    let body = page(format!("?user_id={doctor_id}")).await;
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 5, "{body}");
    assert!(events.iter().all(|e| e["user_id"] == doctor_id.as_str()));
    let body = page(format!("?user_id={admin_id}&event=login_success")).await;
    assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
    let body = page("?event=login_failure".into()).await;
    let failures = body["events"].as_array().unwrap();
    assert_eq!(failures.len(), 3);
    assert!(failures.iter().all(|e| e["outcome"] == "failure"));

    // Time bounds: everything is after an hour ago, nothing before it.
    let hour_ago = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let in_an_hour = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let enc = |t: &str| t.replace('+', "%2B");
    let body = page(format!(
        "?since={}&until={}",
        enc(&hour_ago),
        enc(&in_an_hour)
    ))
    .await;
    assert_eq!(body["events"].as_array().unwrap().len(), 7);
    let body = page(format!("?until={}", enc(&hour_ago))).await;
    assert_eq!(body["events"].as_array().unwrap().len(), 0);
    let third = failures[2]["time"].as_str().unwrap().to_owned();
    let body = page(format!("?event=login_failure&since={}", enc(&third))).await;
    assert_eq!(body["events"].as_array().unwrap().len(), 3);

    // Walking every page of two gives each event once, newest first.
    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".to_owned(),
        };
        let body = page(query).await;
        pages += 1;
        let events = body["events"].as_array().unwrap();
        assert!(events.len() <= 2);
        seqs.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
        match body["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seqs, vec![7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(pages, 4);
}

async fn admin_api_refuses_bad_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = signed_in(&app, "admin@example.com", Role::admin()).await;
    for (query, field) in [
        ("?event=made_up", "event"),
        ("?since=yesterday", "since"),
        ("?until=2026-13-01T00:00:00Z", "until"),
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=abc", "cursor"),
        ("?role=admin", "role"),
        (
            "?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            "until",
        ),
    ] {
        let res = get_audit(&app, Some(&admin), query).await;
        let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(
            body["error"]["fields"].get(field).is_some(),
            "{query}: {body}"
        );
    }
}
