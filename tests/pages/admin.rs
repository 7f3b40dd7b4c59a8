//! The admin console (issue 19) over plain HTTP, on every backend: only
//! administrators reach it, each action goes through its confirmation page
//! with a recent sign-in and lands in the audit trail, and the invitation,
//! audit and emergency pages work as the API does.

use std::time::Duration;

use clinic_auth::domain::UserId;
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::backend_tests;
use crate::common::portal::*;
use crate::common::{admin_in, expect_error, Backend, TestApp, PASSWORD};

backend_tests!(
    only_administrators_reach_the_console,
    admins_find_accounts_and_see_one_in_full,
    disabling_goes_through_a_confirmation_and_is_audited,
    the_last_admin_cannot_demote_themselves_and_erasing_needs_a_disabled_account,
    console_actions_need_a_recent_sign_in,
    invitations_are_sent_resent_and_revoked_from_the_console,
    the_audit_page_filters_and_refuses_bad_filters,
    emergency_uses_are_reviewed_from_the_console,
    a_reset_email_past_the_accounts_mail_limit_is_explained,
);

const ADMIN: &str = "admin@example.com";
const JANE: &str = "jane@example.com";
/// REAUTH_WINDOW's default is 10 minutes; the idle timeout (15) is longer.
const PAST_REAUTH: Duration = Duration::from_secs(11 * 60);

/// An app with Jane (a doctor) and a signed-in administrator's browser.
async fn console(backend: Backend) -> (TestApp, Client, String, String) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (admin_id, _) = admin_in(&app, ADMIN).await;
    let jane = app.login(JANE, PASSWORD).await.0;
    let jane_id = crate::common::jwt_claims(&jane)["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let browser = signed_in_browser(&app, ADMIN).await;
    (app, browser, admin_id, jane_id)
}

async fn page_text(app: &TestApp, client: &Client, path: &str, status: StatusCode) -> String {
    let res = get(app, client, path).await;
    assert_eq!(res.status(), status, "GET {path}");
    res.text().await.unwrap()
}

/// The page's notice (the one-time message after an action).
fn notice(html: &str) -> &str {
    let marker = "<p class=\"notice\" role=\"status\">";
    let start = html.find(marker).expect("a notice") + marker.len();
    html[start..].split("</p>").next().unwrap()
}

/// Starts emergency access with `access` (the API's route), as the user's
/// app would.
async fn break_the_glass(app: &TestApp, access: &str, reason: &str) {
    let res = app
        .client
        .post(app.url("/api/auth/emergency-access"))
        .bearer_auth(access)
        .json(&json!({ "reason": reason }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

/// Resends or revokes invitation `id` from the list; the list it lands on.
async fn invitation_action(
    app: &TestApp,
    admin: &Client,
    csrf: &str,
    id: &str,
    action: &str,
) -> String {
    let path = format!("/admin/invitations/{id}/{action}");
    let to = post_redirect(app, admin, &path, &[("csrf", csrf)]).await;
    assert_eq!(to, "/admin/invitations");
    page_text(app, admin, &to, StatusCode::OK).await
}

/// Posts the console's invitation form for a doctor.
async fn invite(
    app: &TestApp,
    admin: &Client,
    csrf: &str,
    email: &str,
    name: &str,
) -> reqwest::Response {
    let fields = [
        ("csrf", csrf),
        ("email", email),
        ("name", name),
        ("role", "doctor"),
    ];
    post_form(app, admin, "/admin/invitations", &fields).await
}

async fn only_administrators_reach_the_console(backend: Backend) {
    let (app, _admin, _, jane_id) = console(backend).await;
    let doctor = signed_in_browser(&app, JANE).await;
    for path in [
        "/admin".to_owned(),
        format!("/admin/users/{jane_id}"),
        format!("/admin/users/{jane_id}/disable"),
        "/admin/invitations".to_owned(),
        "/admin/audit".to_owned(),
        "/admin/emergency".to_owned(),
    ] {
        let html = page_text(&app, &doctor, &path, StatusCode::FORBIDDEN).await;
        assert!(html.contains("For administrators only"), "{path}");
        assert!(
            html.contains("<title>Error: For administrators only"),
            "{path}"
        );
        // Nobody signed in is sent to sign in first, and back.
        let res = get(&app, &browser(), &path).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert!(location(&res).starts_with("/login?next=/admin"), "{path}");
    }
    // A doctor's well-formed form changes nothing.
    let csrf = page_csrf(&app, &doctor, "/account").await;
    let res = post_form(
        &app,
        &doctor,
        &format!("/admin/users/{jane_id}/disable"),
        &[("csrf", &csrf), ("reason", "not allowed")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = post_form(
        &app,
        &doctor,
        "/admin/invitations",
        &[
            ("csrf", &csrf),
            ("email", "x@example.com"),
            ("name", "X"),
            ("role", "admin"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    app.login(JANE, PASSWORD).await;
    // Only administrators' account pages link to the console.
    let html = page_text(&app, &doctor, "/account", StatusCode::OK).await;
    assert!(!html.contains("href=\"/admin\""));
}

async fn admins_find_accounts_and_see_one_in_full(backend: Backend) {
    let (app, admin, admin_id, jane_id) = console(backend).await;
    let account = page_text(&app, &admin, "/account", StatusCode::OK).await;
    assert!(account.contains("href=\"/admin\""));

    let html = page_text(&app, &admin, "/admin", StatusCode::OK).await;
    assert!(html.contains(JANE) && html.contains(ADMIN));
    assert!(html.contains(&format!("href=\"/admin/users/{jane_id}\"")));
    let html = page_text(&app, &admin, "/admin?q=JAN&role=&status=", StatusCode::OK).await;
    assert!(html.contains(JANE) && !html.contains(ADMIN), "{html}");
    let html = page_text(&app, &admin, "/admin?role=admin", StatusCode::OK).await;
    assert!(!html.contains(JANE) && html.contains(ADMIN));
    let html = page_text(&app, &admin, "/admin?status=disabled", StatusCode::OK).await;
    assert!(html.contains("No account matches."));
    let html = page_text(
        &app,
        &admin,
        "/admin?status=gone",
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(html.contains("<title>Error: Users"));
    assert!(html.contains("id=\"status-error\""));
    assert!(html.contains("aria-invalid=\"true\""));

    let html = page_text(
        &app,
        &admin,
        &format!("/admin/users/{jane_id}"),
        StatusCode::OK,
    )
    .await;
    assert!(html.contains(JANE));
    assert!(html.contains("doctor"));
    // Jane signed in through the API: her session and the event show.
    assert!(html.contains("App: "));
    assert!(html.contains("login_success"));
    assert!(html.contains(&format!("/admin/users/{jane_id}/disable")));
    assert!(!html.contains(&format!("/admin/users/{jane_id}/enable")));
    assert!(html.contains(&format!("/admin/audit?user={jane_id}")));
    // Administrators may always break the glass: no permission to grant.
    let own = page_text(
        &app,
        &admin,
        &format!("/admin/users/{admin_id}"),
        StatusCode::OK,
    )
    .await;
    assert!(own.contains("Allowed (administrator)"));
    assert!(!own.contains("grant-emergency-access"));
    page_text(&app, &admin, "/admin/users/nobody", StatusCode::NOT_FOUND).await;
    page_text(
        &app,
        &admin,
        &format!("/admin/users/{jane_id}/explode"),
        StatusCode::NOT_FOUND,
    )
    .await;
}

async fn disabling_goes_through_a_confirmation_and_is_audited(backend: Backend) {
    let (app, admin, admin_id, jane_id) = console(backend).await;
    let confirm = format!("/admin/users/{jane_id}/disable");
    let html = page_text(&app, &admin, &confirm, StatusCode::OK).await;
    assert!(html.contains("Disable account: Dr Jane Smith"));
    assert!(html.contains(&format!("action=\"{confirm}\"")));
    // Nothing happened yet: Jane still signs in.
    app.login(JANE, PASSWORD).await;

    let csrf = csrf_of(&html);
    let to = post_redirect(
        &app,
        &admin,
        &confirm,
        &[
            ("csrf", &csrf),
            ("reason", "Left the clinic on 30 November"),
        ],
    )
    .await;
    assert_eq!(to, format!("/admin/users/{jane_id}"));
    let html = page_text(&app, &admin, &to, StatusCode::OK).await;
    assert_eq!(
        notice(&html),
        "The account is disabled and signed out everywhere."
    );
    assert!(html.contains(&format!("/admin/users/{jane_id}/enable")));
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": JANE, "password": PASSWORD}),
        )
        .await;
    expect_error(res, StatusCode::FORBIDDEN, "account_disabled").await;

    let (access, _) = app.login(ADMIN, PASSWORD).await;
    let events = app.audit_events(&access, "account_disabled").await;
    assert_eq!(events.len(), 1);
    let detail = events[0]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("by={admin_id}")), "{detail}");
    assert!(
        detail.contains("Left the clinic on 30 November"),
        "{detail}"
    );
    assert_eq!(events[0]["user_id"], jane_id.as_str());

    // The disabled list finds her; enabling gives sign-in back.
    let html = page_text(&app, &admin, "/admin?status=disabled", StatusCode::OK).await;
    assert!(html.contains(JANE));
    let enable = format!("/admin/users/{jane_id}/enable");
    let csrf = csrf_of(&page_text(&app, &admin, &enable, StatusCode::OK).await);
    post_redirect(&app, &admin, &enable, &[("csrf", &csrf)]).await;
    app.login(JANE, PASSWORD).await;

    // A reason longer than the audit trail takes is explained at the field.
    let csrf = csrf_of(&page_text(&app, &admin, &confirm, StatusCode::OK).await);
    let long = "x".repeat(501);
    let res = post_form(
        &app,
        &admin,
        &confirm,
        &[("csrf", &csrf), ("reason", &long)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(html.contains("<title>Error: "));
    assert!(html.contains("id=\"reason-error\""));
    app.login(JANE, PASSWORD).await;
}

async fn the_last_admin_cannot_demote_themselves_and_erasing_needs_a_disabled_account(
    backend: Backend,
) {
    let (app, admin, admin_id, jane_id) = console(backend).await;
    let role = format!("/admin/users/{admin_id}/role");
    let html = page_text(&app, &admin, &role, StatusCode::OK).await;
    assert!(html.contains("<select id=\"role\" name=\"role\""));
    let res = post_form(
        &app,
        &admin,
        &role,
        &[("csrf", &csrf_of(&html)), ("role", "doctor")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let html = res.text().await.unwrap();
    assert!(html.contains("id=\"role-error\""), "{html}");
    assert!(html.contains("last active administrator"), "{html}");
    // Still an administrator: the console still opens.
    page_text(&app, &admin, "/admin", StatusCode::OK).await;

    // A role the clinic does not use is refused next to the field.
    let html = page_text(
        &app,
        &admin,
        &format!("/admin/users/{jane_id}/role"),
        StatusCode::OK,
    )
    .await;
    let res = post_form(
        &app,
        &admin,
        &format!("/admin/users/{jane_id}/role"),
        &[("csrf", &csrf_of(&html)), ("role", "pilot")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Erasing an active account is refused; a disabled one is erased.
    let erase = format!("/admin/users/{jane_id}/erase");
    let csrf = csrf_of(&page_text(&app, &admin, &erase, StatusCode::OK).await);
    let res = post_form(&app, &admin, &erase, &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(res.text().await.unwrap().contains("id=\"reason-error\""));
    let disable = format!("/admin/users/{jane_id}/disable");
    post_redirect(&app, &admin, &disable, &[("csrf", &csrf)]).await;
    post_redirect(
        &app,
        &admin,
        &erase,
        &[("csrf", &csrf), ("reason", "Asked to be forgotten")],
    )
    .await;
    let html = page_text(
        &app,
        &admin,
        &format!("/admin/users/{jane_id}"),
        StatusCode::OK,
    )
    .await;
    assert_eq!(notice(&html), "The personal data has been erased.");
    // The profile shows the erased address; the audit trail below keeps
    // the one it had (append-only).
    assert!(html.contains(&format!(
        "<dt>Email</dt><dd>deleted-{jane_id}@invalid.example</dd>"
    )));
}

async fn console_actions_need_a_recent_sign_in(backend: Backend) {
    let (app, admin, _, jane_id) = console(backend).await;
    let confirm = format!("/admin/users/{jane_id}/disable");
    let csrf = page_csrf(&app, &admin, "/admin/invitations").await;
    app.clock.advance(PAST_REAUTH);
    let res = get(&app, &admin, &confirm).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let reauth = format!("/account/reauth?next=/admin/users/{jane_id}/disable");
    assert_eq!(location(&res), reauth);
    let to = post_redirect(&app, &admin, &confirm, &[("csrf", &csrf)]).await;
    assert_eq!(to, reauth);
    let to = location(&invite(&app, &admin, &csrf, "nurse@example.com", "Nora Nurse").await);
    assert!(to.starts_with("/account/reauth?next="), "{to}");
    // Nothing was done: Jane still signs in, nobody was invited.
    app.login(JANE, PASSWORD).await;
    let html = page_text(&app, &admin, "/admin/invitations", StatusCode::OK).await;
    assert!(html.contains("No open invitations."));

    // Signing in again comes back to the confirmation page.
    let csrf = page_csrf(&app, &admin, &reauth).await;
    let back = post_redirect(
        &app,
        &admin,
        "/account/reauth",
        &[("csrf", &csrf), ("password", PASSWORD), ("next", &confirm)],
    )
    .await;
    assert_eq!(back, confirm);
    page_text(&app, &admin, &confirm, StatusCode::OK).await;
}

async fn invitations_are_sent_resent_and_revoked_from_the_console(backend: Backend) {
    let (app, admin, _, _) = console(backend).await;
    let html = page_text(&app, &admin, "/admin/invitations", StatusCode::OK).await;
    assert!(html.contains("No open invitations."));
    let csrf = csrf_of(&html);
    let res = invite(&app, &admin, &csrf, "not an address", "Nora Nurse").await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(html.contains("<title>Error: Invitations"));
    assert!(html.contains("id=\"email-error\""));
    assert!(html.contains("value=\"Nora Nurse\""));

    let res = invite(&app, &admin, &csrf, JANE, "Jane Again").await;
    assert_eq!(res.status(), StatusCode::CONFLICT);

    let to = location(&invite(&app, &admin, &csrf, "nora@example.com", "Nora Nurse").await);
    assert_eq!(to, "/admin/invitations");
    let html = page_text(&app, &admin, &to, StatusCode::OK).await;
    assert_eq!(notice(&html), "Invitation sent to nora@example.com.");
    assert!(html.contains("nora@example.com"));
    let marker = "action=\"/admin/invitations/";
    let start = html.find(marker).unwrap() + marker.len();
    let id = html[start..].split('/').next().unwrap().to_owned();
    crate::common::wait_for_subject(&app.outbox(), "You are invited to", 1).await;

    let html = invitation_action(&app, &admin, &csrf, &id, "resend").await;
    assert_eq!(
        notice(&html),
        "The invitation was sent again with a new link."
    );
    assert!(html.contains("(sent 2 times)"));
    crate::common::wait_for_subject(&app.outbox(), "You are invited to", 2).await;

    let html = invitation_action(&app, &admin, &csrf, &id, "revoke").await;
    assert_eq!(
        notice(&html),
        "The invitation is revoked: its link no longer works."
    );
    assert!(html.contains("No open invitations."));
    // Revoking it twice says so instead of failing.
    let html = invitation_action(&app, &admin, &csrf, &id, "revoke").await;
    assert!(notice(&html).starts_with("That invitation is no longer open"));
}

async fn the_audit_page_filters_and_refuses_bad_filters(backend: Backend) {
    let (app, admin, _, jane_id) = console(backend).await;
    app.flush_audit().await;
    let html = page_text(&app, &admin, "/admin/audit", StatusCode::OK).await;
    assert!(html.contains("login_success") && html.contains("register"));
    assert!(html.contains(ADMIN) && html.contains(JANE));

    for user in [JANE.to_owned(), jane_id.clone()] {
        let html = page_text(
            &app,
            &admin,
            &format!("/admin/audit?user={user}&event=&since=&until="),
            StatusCode::OK,
        )
        .await;
        assert!(html.contains(JANE), "{user}");
        assert!(!html.contains(&format!(">{ADMIN}<")), "{user}");
    }
    let html = page_text(&app, &admin, "/admin/audit?event=register", StatusCode::OK).await;
    assert!(!html.contains("<code>login_success</code>"));
    assert!(html.contains("<code>register</code>"));

    let today = chrono::Utc::now().date_naive();
    let html = page_text(
        &app,
        &admin,
        &format!("/admin/audit?since={today}&until={today}"),
        StatusCode::OK,
    )
    .await;
    assert!(html.contains("<code>register</code>"));
    let tomorrow = today.succ_opt().unwrap();
    let html = page_text(
        &app,
        &admin,
        &format!("/admin/audit?since={tomorrow}"),
        StatusCode::OK,
    )
    .await;
    assert!(html.contains("No event matches."));
    // The oldest record has nothing before it.
    let html = page_text(&app, &admin, "/admin/audit?cursor=1", StatusCode::OK).await;
    assert!(html.contains("No event matches."));

    for (query, field) in [
        ("user=nobody@example.com", "user"),
        ("event=explosion", "event"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("since=2026-12-02&until=2026-12-01", "until"),
    ] {
        let html = page_text(
            &app,
            &admin,
            &format!("/admin/audit?{query}"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(html.contains(&format!("id=\"{field}-error\"")), "{query}");
        assert!(html.contains("<title>Error: Audit trail"), "{query}");
    }
    get(&app, &admin, "/admin/audit?cursor=abc")
        .await
        .status()
        .eq(&StatusCode::BAD_REQUEST)
        .then_some(())
        .expect("a bad cursor is a bad request");
}

async fn emergency_uses_are_reviewed_from_the_console(backend: Backend) {
    let (app, admin, _, jane_id) = console(backend).await;
    let html = page_text(&app, &admin, "/admin/emergency", StatusCode::OK).await;
    assert!(html.contains("Nothing is waiting for review."));

    assert!(app
        .store()
        .await
        .set_emergency_access(&UserId::new(jane_id.clone()), true, chrono::Utc::now())
        .await
        .unwrap());
    let (jane, _) = app.login(JANE, PASSWORD).await;
    let reason = "Patient in bay 3 unconscious; allergy record needed";
    break_the_glass(&app, &jane, reason).await;

    let html = page_text(&app, &admin, "/admin/emergency", StatusCode::OK).await;
    assert!(html.contains(reason));
    assert!(html.contains("Still on, until"));
    let marker = "action=\"/admin/emergency/";
    let start = html.find(marker).unwrap() + marker.len();
    let id = html[start..].split('/').next().unwrap().to_owned();
    let review = format!("/admin/emergency/{id}/review");

    let csrf = csrf_of(&html);
    let res = post_form(&app, &admin, &review, &[("csrf", &csrf), ("note", "  ")]).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(html.contains("<title>Error: Emergency access"));
    assert!(html.contains(&format!("id=\"note-{id}-error\"")));

    let note = "Checked with the ward: access justified";
    let to = post_redirect(&app, &admin, &review, &[("csrf", &csrf), ("note", note)]).await;
    let html = page_text(&app, &admin, &to, StatusCode::OK).await;
    assert_eq!(notice(&html), "Your review is recorded.");
    assert!(html.contains("Nothing is waiting for review."));
    let html = page_text(&app, &admin, "/admin/emergency?show=all", StatusCode::OK).await;
    assert!(html.contains(note) && html.contains("By Dr Jane Smith, "));
    assert!(html.contains(reason));
    // A second review of the same use is told, not failed.
    post_redirect(&app, &admin, &review, &[("csrf", &csrf), ("note", note)]).await;
    let html = page_text(&app, &admin, "/admin/emergency", StatusCode::OK).await;
    assert_eq!(notice(&html), "This emergency access was already reviewed.");

    // An administrator's own use waits for someone else.
    let (admin_access, _) = app.login(ADMIN, PASSWORD).await;
    break_the_glass(&app, &admin_access, reason).await;
    let html = page_text(&app, &admin, "/admin/emergency", StatusCode::OK).await;
    assert!(html.contains("This is your own use: another administrator must review it."));
    assert!(!html.contains("action=\"/admin/emergency/"));
}

async fn a_reset_email_past_the_accounts_mail_limit_is_explained(backend: Backend) {
    let app = TestApp::with_jane(backend, &[("MAIL_PER_ACCOUNT_PER_HOUR", "1")]).await;
    admin_in(&app, ADMIN).await;
    let jane = app.login(JANE, PASSWORD).await.0;
    let jane_id = crate::common::jwt_claims(&jane)["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin = signed_in_browser(&app, ADMIN).await;
    let reset = format!("/admin/users/{jane_id}/password-reset");
    let csrf = csrf_of(&page_text(&app, &admin, &reset, StatusCode::OK).await);
    let to = post_redirect(&app, &admin, &reset, &[("csrf", &csrf)]).await;
    let html = page_text(&app, &admin, &to, StatusCode::OK).await;
    assert_eq!(notice(&html), "A password-reset email is on its way.");
    crate::common::wait_for_reset_emails(&app.outbox(), 1).await;

    // The hour's one email is spent: told at the field, nothing sent.
    let res = post_form(&app, &admin, &reset, &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let html = res.text().await.unwrap();
    assert!(html.contains("<title>Error: "));
    assert!(
        html.contains("as many emails as allowed in an hour"),
        "{html}"
    );
    app.settle_email().await;
    assert_eq!(
        crate::common::read_subject(&app.outbox(), "Reset your").len(),
        1
    );
}
