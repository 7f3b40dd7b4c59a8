//! Two-step sign-in on the portal (issue 18), on every backend, with the
//! test clock moved, never slept: the code page after the password (right,
//! wrong, used, too many, too late), recovery-code sign-in, the "Two-step
//! sign-in" account page (set up, codes and their download, regenerate,
//! remove), step-up to the re-authentication page and back, and the CSRF
//! token on every new form.

use std::time::Duration;

use chrono::DateTime;
use clinic_auth::clock::Clock;
use clinic_auth::domain::mfa::{TimeStep, TotpSecret};
use reqwest::{Client, StatusCode};

use crate::common::portal::*;
use crate::common::{Backend, TestApp, PASSWORD};

/// A whole number of 30-second steps, plus 5 s: no test's few requests
/// straddle a step by accident.
const START: i64 = 1_800_000_000 + 5;
const JANE: &str = "jane@example.com";
/// REAUTH_WINDOW's default is 10 minutes; the idle timeout (15) is longer.
const PAST_REAUTH: Duration = Duration::from_secs(11 * 60);

async fn app_on(backend: Backend) -> TestApp {
    let app = TestApp::with_jane(backend, &[]).await;
    app.clock.set(DateTime::from_timestamp(START, 0).unwrap());
    app
}

fn code_now(app: &TestApp, secret: &TotpSecret) -> String {
    secret.code_at(TimeStep::at(app.clock.now()).unwrap())
}

/// The next 30-second step: a code already used in this one is refused.
fn next_step(app: &TestApp) {
    app.clock.advance(Duration::from_secs(30));
}

fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html
        .find(start)
        .unwrap_or_else(|| panic!("{start} in {html}"))
        + start.len();
    let to = html[from..].find(end).unwrap() + from;
    &html[from..to]
}

/// The recovery codes a codes page shows.
fn codes_on(html: &str) -> Vec<String> {
    let list = between(
        html,
        "<ol class=\"recovery-codes\" id=\"recovery-codes\">",
        "</ol>",
    );
    list.split("<code>")
        .skip(1)
        .map(|c| c.split("</code>").next().unwrap().to_owned())
        .collect()
}

/// Sets up Jane's authenticator through the pages, as a person would:
/// reads the key off the set-up page, types the app's code, and gets the
/// codes page. Returns the secret and the recovery codes.
async fn enrol(app: &TestApp, client: &Client) -> (TotpSecret, Vec<String>) {
    let csrf = page_csrf(app, client, "/account/two-step").await;
    let res = post_form(
        app,
        client,
        "/account/two-step/totp/setup",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let html = res.text().await.unwrap();
    assert!(html.contains("<svg"), "inline QR code");
    assert!(!html.contains("<?xml"), "only the svg element is inlined");
    assert!(!html.contains("<script"), "no script");
    assert!(html.contains("href=\"otpauth://totp/"), "the otpauth URI");
    let key = between(&html, "<code id=\"manual-key\">", "</code>");
    assert!(key.contains(' '), "grouped for reading: {key}");
    let secret = TotpSecret::from_manual_entry_key(&key.replace(' ', "")).unwrap();
    let res = post_form(
        app,
        client,
        "/account/two-step/totp/confirm",
        &[("csrf", &csrf), ("code", &code_now(app, &secret))],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let html = res.text().await.unwrap();
    assert!(html.contains("Download as text file"));
    let codes = codes_on(&html);
    assert_eq!(codes.len(), 10);
    // The confirming code is used up; the next sign-in needs a later one.
    next_step(app);
    (secret, codes)
}

/// Jane with an authenticator, signed out: (secret, recovery codes).
async fn enrolled_jane(app: &TestApp) -> (TotpSecret, Vec<String>) {
    let client = signed_in_browser(app, JANE).await;
    enrol(app, &client).await
}

/// The password step: must lead to the code page.
async fn password_step(app: &TestApp, client: &Client) {
    let res = sign_in(app, client, JANE, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login/code", "no token in the URL");
}

async fn send_code(app: &TestApp, client: &Client, path: &str, code: &str) -> reqwest::Response {
    let csrf = page_csrf(app, client, path).await;
    post_form(app, client, path, &[("csrf", &csrf), ("code", code)]).await
}

async fn is_signed_in(app: &TestApp, client: &Client) -> bool {
    get(app, client, "/account").await.status() == StatusCode::OK
}

fn wrong(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

pub async fn the_code_page_finishes_the_sign_in(backend: Backend) {
    let app = app_on(backend).await;
    let (secret, _) = enrolled_jane(&app).await;
    let client = browser();
    password_step(&app, &client).await;
    assert!(
        !is_signed_in(&app, &client).await,
        "the password alone signs nothing in"
    );

    let res = get(&app, &client, "/login/code").await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    for needed in [
        "Enter the 6-digit code from your authenticator app",
        "autocomplete=\"one-time-code\"",
        "inputmode=\"numeric\"",
        "pattern=\"[0-9]*\"",
        "href=\"/login/recovery-code\"",
        "Use a recovery code instead",
    ] {
        assert!(html.contains(needed), "{needed}");
    }

    let res = send_code(
        &app,
        &client,
        "/login/code",
        &wrong(&code_now(&app, &secret)),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("That code is wrong or was already used"),
        "{html}"
    );
    assert!(html.contains("aria-invalid=\"true\""));
    assert!(!is_signed_in(&app, &client).await);

    let res = send_code(&app, &client, "/login/code", &code_now(&app, &secret)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account");
    assert!(
        res.headers().get("set-cookie").is_some(),
        "session and refresh cookies"
    );
    let html = get(&app, &client, "/account").await.text().await.unwrap();
    assert!(html.contains("This browser"), "the session is listed");
    assert!(html.contains("On: signing in asks for a code"), "{html}");
    // The challenge is gone with the sign-in.
    let res = get(&app, &client, "/login/code").await;
    assert_eq!(location(&res), "/login");
}

pub async fn a_used_code_is_refused_on_the_code_page(backend: Backend) {
    let app = app_on(backend).await;
    let (secret, _) = enrolled_jane(&app).await;
    let code = code_now(&app, &secret);
    let first = browser();
    password_step(&app, &first).await;
    let res = send_code(&app, &first, "/login/code", &code).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // Someone who saw the code types it in another browser, same step.
    let second = browser();
    password_step(&app, &second).await;
    let res = send_code(&app, &second, "/login/code", &code).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.unwrap().contains("already used"));
    assert!(!is_signed_in(&app, &second).await);
    next_step(&app);
    let res = send_code(&app, &second, "/login/code", &code_now(&app, &secret)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

pub async fn five_wrong_codes_end_the_sign_in_and_count_towards_the_lock(backend: Backend) {
    let app = app_on(backend).await;
    let (secret, _) = enrolled_jane(&app).await;
    let client = browser();
    password_step(&app, &client).await;
    let bad = wrong(&code_now(&app, &secret));
    for _ in 0..5 {
        let res = send_code(&app, &client, "/login/code", &bad).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    // The challenge died at the fifth: even the right code goes back to
    // the password, with a message saying why.
    let csrf = page_csrf(&app, &client, "/login").await;
    let res = post_form(
        &app,
        &client,
        "/login/code",
        &[("csrf", &csrf), ("code", &code_now(&app, &secret))],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?code_ended=1");
    let html = get(&app, &client, "/login?code_ended=1")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("That sign-in has ended"), "{html}");
    assert!(!is_signed_in(&app, &client).await);
    // Five wrong codes are five failed sign-ins (LOGIN_MAX_FAILURES=5):
    // the right password is refused for a while now.
    let res = sign_in(&app, &client, JANE, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

pub async fn an_expired_sign_in_goes_back_to_the_password(backend: Backend) {
    let app = app_on(backend).await;
    let (secret, _) = enrolled_jane(&app).await;
    let client = browser();
    password_step(&app, &client).await;
    let csrf = page_csrf(&app, &client, "/login/code").await;
    app.clock.advance(Duration::from_secs(301));
    let res = post_form(
        &app,
        &client,
        "/login/code",
        &[("csrf", &csrf), ("code", &code_now(&app, &secret))],
    )
    .await;
    assert_eq!(location(&res), "/login?code_ended=1");
    assert!(!is_signed_in(&app, &client).await);
    assert_eq!(location(&get(&app, &client, "/login/code").await), "/login");
    // Starting again works.
    password_step(&app, &client).await;
    let res = send_code(&app, &client, "/login/code", &code_now(&app, &secret)).await;
    assert_eq!(location(&res), "/account");
}

pub async fn a_recovery_code_signs_in_once(backend: Backend) {
    let app = app_on(backend).await;
    let (_, codes) = enrolled_jane(&app).await;
    let client = browser();
    password_step(&app, &client).await;
    let html = get(&app, &client, "/login/recovery-code")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Recovery code"));
    assert!(html.contains("autocomplete=\"off\""));
    // Typed in capitals, without the dash: forgiven.
    let typed = codes[0].replace('-', "").to_uppercase();
    let res = send_code(&app, &client, "/login/recovery-code", &typed).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account");
    let html = get(&app, &client, "/account/two-step")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<strong>9</strong> of 10 recovery codes left"),
        "{html}"
    );

    let other = browser();
    password_step(&app, &other).await;
    let res = send_code(&app, &other, "/login/recovery-code", &codes[0]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("That recovery code is wrong or was already used"));
    let res = send_code(&app, &other, "/login/recovery-code", &codes[1]).await;
    assert_eq!(location(&res), "/account");
}

pub async fn the_recovery_code_download_stores_nothing(backend: Backend) {
    let app = app_on(backend).await;
    let client = signed_in_browser(&app, JANE).await;
    let (_, codes) = enrol(&app, &client).await;
    let csrf = page_csrf(&app, &client, "/account").await;
    let path = "/account/two-step/recovery-codes/download";
    let res = post_form(
        &app,
        &client,
        path,
        &[("csrf", &csrf), ("codes", &codes.join(" "))],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"clinic-auth-recovery-codes.txt\""
    );
    assert_eq!(h["cache-control"], "no-store");
    let body = res.text().await.unwrap();
    for code in &codes {
        assert!(body.contains(code.as_str()), "{code} in {body}");
    }
    assert!(body.contains("Each code works once"));
    // Only recovery codes are echoed: nothing else can be made to download.
    let too_many = [codes.clone(), codes.clone()].concat().join(" ");
    for junk in ["<script>alert(1)</script>", "", &too_many] {
        let res = post_form(&app, &client, path, &[("csrf", &csrf), ("codes", junk)]).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{junk}");
    }
    // Signed out, there is no download.
    let res = post_form(
        &app,
        &browser(),
        path,
        &[("csrf", &csrf), ("codes", &codes[0])],
    )
    .await;
    assert_ne!(res.status(), StatusCode::OK);
}

pub async fn regenerating_replaces_the_codes(backend: Backend) {
    let app = app_on(backend).await;
    let client = signed_in_browser(&app, JANE).await;
    let (_, old) = enrol(&app, &client).await;
    let csrf = page_csrf(&app, &client, "/account/two-step").await;
    let res = post_form(
        &app,
        &client,
        "/account/two-step/recovery-codes",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let new = codes_on(&res.text().await.unwrap());
    assert_eq!(new.len(), 10);
    assert!(new.iter().all(|c| !old.contains(c)));
    let other = browser();
    password_step(&app, &other).await;
    let res = send_code(&app, &other, "/login/recovery-code", &old[0]).await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "old codes stop working"
    );
    let res = send_code(&app, &other, "/login/recovery-code", &new[0]).await;
    assert_eq!(location(&res), "/account");
}

pub async fn removing_needs_password_and_code(backend: Backend) {
    let app = app_on(backend).await;
    let client = signed_in_browser(&app, JANE).await;
    let (secret, _) = enrol(&app, &client).await;
    let csrf = page_csrf(&app, &client, "/account/two-step").await;
    let path = "/account/two-step/totp/remove";
    let code = code_now(&app, &secret);
    let res = post_form(
        &app,
        &client,
        path,
        &[
            ("csrf", &csrf),
            ("password", "wrong-password-1"),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.unwrap().contains("aria-invalid"));
    let res = post_form(
        &app,
        &client,
        path,
        &[
            ("csrf", &csrf),
            ("password", PASSWORD),
            ("code", &wrong(&code)),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.unwrap().contains("That code is wrong"));
    let res = post_form(
        &app,
        &client,
        path,
        &[("csrf", &csrf), ("password", PASSWORD), ("code", &code)],
    )
    .await;
    assert_eq!(location(&res), "/account/two-step");
    let html = get(&app, &client, "/account/two-step")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Two-step sign-in is off."), "{html}");
    assert!(html.contains("Set up authenticator app"));
    // The password alone signs in again.
    let res = sign_in(&app, &browser(), JANE, PASSWORD).await;
    assert_eq!(location(&res), "/account");
}

pub async fn sensitive_changes_need_a_recent_sign_in(backend: Backend) {
    let app = app_on(backend).await;
    let client = signed_in_browser(&app, JANE).await;
    app.clock.advance(PAST_REAUTH);
    let csrf = page_csrf(&app, &client, "/account/two-step").await;
    let to_reauth = "/account/reauth?next=/account/two-step";
    let res = post_form(
        &app,
        &client,
        "/account/two-step/totp/setup",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(location(&res), to_reauth);
    let res = post_form(
        &app,
        &client,
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current_password", PASSWORD),
            ("new_password", "An0ther!Passphrase"),
            ("password_confirm", "An0ther!Passphrase"),
        ],
    )
    .await;
    assert_eq!(
        location(&res),
        "/account/reauth?next=/account",
        "password change too"
    );

    // Without an authenticator, the password proves it again.
    let html = get(&app, &client, to_reauth).await.text().await.unwrap();
    assert!(html.contains("Confirm it is you"));
    assert!(
        !html.contains("name=\"code\""),
        "no authenticator, no code field"
    );
    let res = post_form(
        &app,
        &client,
        "/account/reauth",
        &[
            ("csrf", &csrf),
            ("password", "wrong-password-1"),
            ("next", "/account/two-step"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = post_form(
        &app,
        &client,
        "/account/reauth",
        &[
            ("csrf", &csrf),
            ("password", PASSWORD),
            ("next", "/account/two-step"),
        ],
    )
    .await;
    assert_eq!(location(&res), "/account/two-step");
    let (secret, _) = enrol(&app, &client).await;

    // With one, the password and a code.
    app.clock.advance(PAST_REAUTH);
    let csrf = page_csrf(&app, &client, "/account/two-step").await;
    let res = post_form(
        &app,
        &client,
        "/account/two-step/recovery-codes",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(location(&res), to_reauth);
    let html = get(&app, &client, to_reauth).await.text().await.unwrap();
    assert!(html.contains("name=\"code\""));
    let res = post_form(
        &app,
        &client,
        "/account/reauth",
        &[
            ("csrf", &csrf),
            ("password", PASSWORD),
            ("code", ""),
            ("next", "/account/two-step"),
        ],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the password alone is not enough"
    );
    let res = post_form(
        &app,
        &client,
        "/account/reauth",
        &[
            ("csrf", &csrf),
            ("password", PASSWORD),
            ("code", &code_now(&app, &secret)),
            ("next", "/account/two-step"),
        ],
    )
    .await;
    assert_eq!(location(&res), "/account/two-step");
    let res = post_form(
        &app,
        &client,
        "/account/two-step/recovery-codes",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK, "within the window now");
    // A sign-in in the last few minutes counts as recent: no detour.
    let fresh = browser();
    password_step(&app, &fresh).await;
    next_step(&app);
    let res = send_code(&app, &fresh, "/login/code", &code_now(&app, &secret)).await;
    assert_eq!(location(&res), "/account");
    let csrf = page_csrf(&app, &fresh, "/account/two-step").await;
    let res = post_form(
        &app,
        &fresh,
        "/account/two-step/recovery-codes",
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

pub async fn reauth_only_returns_to_local_paths(backend: Backend) {
    let app = app_on(backend).await;
    let client = signed_in_browser(&app, JANE).await;
    let html = get(&app, &client, "/account/reauth?next=https://evil.example/")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("name=\"next\" value=\"/account\""), "{html}");
    let csrf = csrf_of(&html);
    for evil in [
        "//evil.example",
        "https://evil.example",
        "/\\\\evil.example",
        "javascript:alert(1)",
    ] {
        let res = post_form(
            &app,
            &client,
            "/account/reauth",
            &[("csrf", &csrf), ("password", PASSWORD), ("next", evil)],
        )
        .await;
        assert_eq!(location(&res), "/account", "{evil}");
    }
    // Signed out, the page sends to the sign-in first.
    let res = get(&app, &browser(), "/account/reauth").await;
    assert_eq!(location(&res), "/login?next=/account/reauth");
}

pub async fn every_two_step_form_needs_its_csrf_token(backend: Backend) {
    let app = app_on(backend).await;
    let (secret, codes) = enrolled_jane(&app).await;
    let client = browser();
    password_step(&app, &client).await;
    for path in ["/login/code", "/login/recovery-code"] {
        let res = post_form(&app, &client, path, &[("code", &code_now(&app, &secret))]).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let res = send_code(&app, &client, "/login/code", &code_now(&app, &secret)).await;
    assert_eq!(
        location(&res),
        "/account",
        "the refused posts used nothing up"
    );
    for path in [
        "/account/reauth",
        "/account/two-step/totp/setup",
        "/account/two-step/totp/confirm",
        "/account/two-step/totp/remove",
        "/account/two-step/recovery-codes",
        "/account/two-step/recovery-codes/download",
    ] {
        let fields = [
            ("csrf", "forged"),
            ("password", PASSWORD),
            ("code", "123456"),
            ("codes", codes[0].as_str()),
        ];
        let res = post_form(&app, &client, path, &fields).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let html = get(&app, &client, "/account/two-step")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<strong>10</strong> of 10"),
        "nothing changed"
    );
}
