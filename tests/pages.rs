//! The portal over plain HTTP (no browser): every page route's status,
//! redirects, CSRF defence, headers and session rules, on every backend.

mod common;

use std::time::Duration;

use common::portal::*;
use common::{expect_error, set_cookie, Backend, TestApp, PASSWORD};
use reqwest::{Client, Response, StatusCode};
use serde_json::json;

backend_tests!(
    index_redirects_by_sign_in_state,
    pages_render_with_security_headers,
    register_signs_in_and_lands_on_account,
    register_with_required_verification_sends_one_working_link,
    register_signs_in_even_when_the_email_was_locked_before,
    register_errors_keep_input_but_never_passwords,
    login_errors_and_safe_next,
    post_without_csrf_or_from_foreign_origin_is_refused,
    a_sign_in_form_that_outlived_its_cookie_is_offered_again,
    page_errors_show_the_app_name_and_reference_once,
    session_id_is_renewed_at_sign_in,
    sign_out_ends_page_session_and_api_refresh,
    account_lists_and_ends_other_sessions,
    change_password_keeps_only_this_session,
    page_reset_flow_and_bad_links,
    idle_timeout_signs_out,
    absolute_lifetime_signs_out,
    sessions_survive_a_restart,
    browsers_get_error_pages_and_api_keeps_json,
    page_forms_are_rate_limited_with_a_friendly_page,
    https_portal_cookies_are_host_prefixed,
    login_page_explains_locks_and_unverified_addresses,
    account_page_resends_the_verification_link,
    api_logout_with_the_page_refresh_cookie_ends_the_portal_session,
    the_code_page_finishes_the_sign_in,
    a_used_code_is_refused_on_the_code_page,
    five_wrong_codes_end_the_sign_in_and_count_towards_the_lock,
    an_expired_sign_in_goes_back_to_the_password,
    a_recovery_code_signs_in_once,
    the_recovery_code_download_stores_nothing,
    regenerating_replaces_the_codes,
    removing_needs_password_and_code,
    sensitive_changes_need_a_recent_sign_in,
    reauth_only_returns_to_local_paths,
    every_two_step_form_needs_its_csrf_token,
    the_favicon_is_served_from_the_binary,
    failed_forms_say_so_in_the_title_and_name_fields_by_their_labels,
    password_forms_name_the_account_for_password_managers,
    bad_links_and_tables_are_told_apart,
);

/// Two-step sign-in on the portal (issue 18).
#[path = "pages/two_step.rs"]
mod two_step;
use two_step::*;

/// The admin console (issue 19).
#[path = "pages/admin.rs"]
mod admin;

/// Fills in and sends the registration form as Dr Jane Smith.
async fn register_on_page(app: &TestApp, client: &Client, email: &str) -> Response {
    let csrf = page_csrf(app, client, "/register").await;
    let fields = [
        ("csrf", csrf.as_str()),
        ("name", "Dr Jane Smith"),
        ("email", email),
        ("password", PASSWORD),
        ("password_confirm", PASSWORD),
    ];
    post_form(app, client, "/register", &fields).await
}

/// The path of the link in an email (they point at the tests' APP_URL).
fn link_path(email: &common::Email) -> String {
    let marker = "http://localhost:8000";
    let line = email.text.lines().find(|l| l.starts_with(marker));
    let line = line.expect("the email has a link");
    line.trim().trim_start_matches(marker).to_owned()
}

async fn index_redirects_by_sign_in_state(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let anonymous = browser();
    let res = get(&app, &anonymous, "/").await;
    assert_eq!(
        (res.status(), location(&res)),
        (StatusCode::SEE_OTHER, "/login".into())
    );
    let res = get(&app, &anonymous, "/account").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?next=/account");

    let client = signed_in_browser(&app, "jane@example.com").await;
    let res = get(&app, &client, "/").await;
    assert_eq!(location(&res), "/account");
    let res = get(&app, &client, "/login").await;
    assert_eq!(
        location(&res),
        "/account",
        "signed in: no second sign-in form"
    );
}

async fn pages_render_with_security_headers(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("APP_NAME", "Northside Clinic")]).await;
    let client = browser();
    for path in [
        "/login",
        "/register",
        "/forgot-password",
        "/forgot-password?sent=1",
    ] {
        let res = get(&app, &client, path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let h = res.headers().clone();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("form-action 'self'"),
            "{csp}"
        );
        // Only the sign-in page loads a script (passkeys): its own.
        let scripts = if path == "/login" {
            csp.contains("script-src 'self'")
        } else {
            !csp.contains("script-src")
        };
        assert!(!csp.contains("unsafe-inline") && scripts, "{path}: {csp}");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(
            h["referrer-policy"], "strict-origin",
            "no Referer leaves the site"
        );
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        let html = res.text().await.unwrap();
        assert!(
            html.contains("Northside Clinic"),
            "APP_NAME shown on {path}"
        );
        // Works without JavaScript: the only script is our own file, and
        // what it drives is hidden until it runs.
        let scripts: Vec<&str> = html
            .match_indices("<script")
            .map(|(i, _)| &html[i..])
            .collect();
        assert!(
            scripts
                .iter()
                .all(|s| s.starts_with("<script src=\"/static/js/passkeys.js\" defer></script>")),
            "works without JavaScript: {path}"
        );
        assert!(!html.contains("data-passkey=\"sign-in\" data-options=\"/login/passkey/options\">"));
        assert!(!html.contains("https://"), "no external assets: {path}");
    }
    let html = get(&app, &client, "/register").await.text().await.unwrap();
    for attr in [
        "autocomplete=\"email\"",
        "autocomplete=\"new-password\"",
        "<label for=\"email\">",
    ] {
        assert!(html.contains(attr), "{attr}");
    }
    let html = get(&app, &client, "/login").await.text().await.unwrap();
    assert!(html.contains("autocomplete=\"current-password\""));
    let css = client.get(app.url("/static/app.css")).send().await.unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    assert!(
        css.text().await.unwrap().contains(":focus-visible"),
        "visible focus"
    );
    // An anonymous page gets no session, only the cookie its forms' CSRF
    // tokens are derived from: HttpOnly, SameSite=Lax.
    let res = get(&app, &browser(), "/login").await;
    assert!(set_cookie(res.headers(), "session").is_none());
    let (_, line) = set_cookie(res.headers(), "csrf").expect("form cookie");
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Lax") && line.contains("Path=/"),
        "{line}"
    );
    assert!(!line.contains("Secure"), "plain http in development");
    // The session cookie, set at sign-in: HttpOnly, SameSite=Lax, idle Max-Age.
    app.register("jane@example.com").await;
    let res = sign_in(&app, &browser(), "jane@example.com", PASSWORD).await;
    let (_, line) = set_cookie(res.headers(), "session").expect("session cookie");
    assert!(
        line.contains("HttpOnly")
            && line.contains("SameSite=Lax")
            && line.contains("Path=/")
            && line.contains("Max-Age="),
        "{line}"
    );
    assert!(!line.contains("Secure"), "plain http in development");
}

/// Browsers fetch /favicon.ico for every page: served (no 404 in the
/// console), small, cacheable, the same bytes as static/img/favicon.ico.
async fn the_favicon_is_served_from_the_binary(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = get(&app, &browser(), "/favicon.ico").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/x-icon");
    let cache = res.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cache.starts_with("public, max-age="), "{cache}");
    let body = res.bytes().await.unwrap();
    let file = include_bytes!("../static/img/favicon.ico");
    assert_eq!(&body[..], &file[..]);
    assert!(body.len() < 2048, "small: {} bytes", body.len());
    // An ICO header: reserved 0, type 1 (icon), one image.
    assert_eq!(&body[..6], &[0, 0, 1, 0, 1, 0]);
}

/// The page's <title>, without the app name.
fn title(html: &str) -> &str {
    let start = html.find("<title>").expect("a title") + "<title>".len();
    let end = html[start..].find(" · ").expect("the app name follows") + start;
    &html[start..end]
}

/// The opening tag of the element with `id`.
fn tag_with_id<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html.find(&format!("id=\"{id}\"")).expect(id);
    let start = html[..at].rfind('<').unwrap();
    let end = html[at..].find('>').unwrap() + at;
    &html[start..=end]
}

/// Every id in the page is used once (aria-describedby and label `for`
/// point at exactly one element).
fn assert_unique_ids(html: &str) {
    let mut ids: Vec<&str> = html
        .split(" id=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "duplicate ids: {html}");
}

/// After a failed submit the title starts with "Error: " (the first thing a
/// screen reader announces); every message names its field as the label
/// does; a wrong password marks both fields, described by the one message.
async fn failed_forms_say_so_in_the_title_and_name_fields_by_their_labels(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let client = browser();
    let html = get(&app, &client, "/register").await.text().await.unwrap();
    assert_eq!(title(&html), "Create an account");
    assert!(
        html.contains("<label for=\"name\">Full name</label>"),
        "{html}"
    );
    assert!(html.contains("<label for=\"email\">Email address</label>"));

    let csrf = page_csrf(&app, &client, "/register").await;
    let fields = [
        ("csrf", csrf.as_str()),
        ("name", ""),
        ("email", ""),
        ("password", "short"),
        ("password_confirm", "short"),
    ];
    let res = post_form(&app, &client, "/register", &fields).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert_eq!(title(&html), "Error: Create an account");
    for message in [
        "Full name is required.",
        "Email address is required.",
        "Password must be at least 12 characters.",
    ] {
        // Once next to the field, once in the summary.
        assert_eq!(html.matches(message).count(), 2, "{message}: {html}");
    }
    assert!(!html.contains(">Name is required."), "{html}");
    assert_unique_ids(&html);
    // Two messages for one field: one element, one id.
    let fields = [
        ("csrf", csrf.as_str()),
        ("name", "Alice"),
        ("email", "alice@example.com"),
        ("password", "alice-1"),
        ("password_confirm", "alice-1"),
    ];
    let html = post_form(&app, &client, "/register", &fields)
        .await
        .text()
        .await
        .unwrap();
    let error = &html[html.find("id=\"password-error\"").expect("password error")..];
    let error = &error[..error.find("</p>").unwrap()];
    assert!(
        error.contains("Password must be at least 12 characters.")
            && error.contains("Password must not contain your email address."),
        "{error}"
    );
    assert_unique_ids(&html);

    let res = sign_in(&app, &client, "jane@example.com", "Not!TheRightOne-42").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let html = res.text().await.unwrap();
    assert_eq!(title(&html), "Error: Sign in");
    for id in ["email", "password"] {
        let input = tag_with_id(&html, id);
        assert!(input.contains("aria-invalid=\"true\""), "{input}");
        assert!(
            input.contains("aria-describedby=\"email-error\""),
            "{input}"
        );
    }
    assert!(tag_with_id(&html, "email-error").starts_with("<p class=\"field-error\""));
    // The message is shown once by the field, once in the summary.
    assert_eq!(
        html.matches("The email or password is not correct.")
            .count(),
        2
    );

    // The account page's change-password form says "New password".
    let client = signed_in_browser(&app, "jane@example.com").await;
    let html = get(&app, &client, "/account").await.text().await.unwrap();
    assert_eq!(title(&html), "Your account");
    let csrf = csrf_of(&html);
    let fields = [
        ("csrf", csrf.as_str()),
        ("current_password", PASSWORD),
        ("new_password", "short"),
        ("password_confirm", "short"),
    ];
    let res = post_form(&app, &client, "/account/password", &fields).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert_eq!(title(&html), "Error: Your account");
    assert!(
        html.contains("New password must be at least 12 characters."),
        "{html}"
    );
    assert_unique_ids(&html);
}

/// Forms that set a password without asking for the email carry the
/// account's address in a hidden `autocomplete="username"` field, so a
/// password manager files the new password under the right account.
async fn password_forms_name_the_account_for_password_managers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let username = |html: &str| tag_with_id(html, "username").to_owned();
    let check = |input: String| {
        for attr in [
            "type=\"email\"",
            "autocomplete=\"username\"",
            "value=\"jane@example.com\"",
            "readonly",
            "tabindex=\"-1\"",
        ] {
            assert!(input.contains(attr), "{attr}: {input}");
        }
        // Not sent with the form, and not hidden from assistive technology.
        assert!(
            !input.contains("name=") && !input.contains("aria-hidden"),
            "{input}"
        );
    };

    let client = signed_in_browser(&app, "jane@example.com").await;
    let html = get(&app, &client, "/account").await.text().await.unwrap();
    check(username(&html));
    assert!(html.contains(
        "<div class=\"visually-hidden\">\n  <label for=\"username\">Email address</label>"
    ));
    // The sign-in page has a real email field: no hidden one.
    let html = get(&app, &browser(), "/login").await.text().await.unwrap();
    assert!(!html.contains("id=\"username\""));

    let anonymous = browser();
    let csrf = page_csrf(&app, &anonymous, "/forgot-password").await;
    let fields = [("csrf", csrf.as_str()), ("email", "jane@example.com")];
    post_redirect(&app, &anonymous, "/forgot-password", &fields).await;
    let token = common::wait_for_reset_emails(&app.outbox(), 1).await[0].reset_token();
    let path = format!("/reset-password?token={token}");
    let html = get(&app, &anonymous, &path).await.text().await.unwrap();
    check(username(&html));
    // Shown again after a refused attempt, still naming the account.
    let fields = [
        ("csrf", csrf_of(&html)),
        ("token", token.clone()),
        ("password", "short".to_owned()),
        ("password_confirm", "other".to_owned()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = post_form(&app, &anonymous, "/reset-password", &fields).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert_eq!(title(&html), "Error: Choose a new password");
    check(username(&html));
}

/// The two bad-link pages have titles of their own; the sessions table has
/// a caption.
async fn bad_links_and_tables_are_told_apart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = browser();
    let res = get(&app, &client, "/reset-password?token=not-a-real-token").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let reset = title(&res.text().await.unwrap()).to_owned();
    let res = get(&app, &client, "/verify-email?token=not-a-real-token").await;
    let verify = title(&res.text().await.unwrap()).to_owned();
    assert_eq!(reset, "Password reset link not valid");
    assert_eq!(verify, "Confirmation link not valid");

    app.register("jane@example.com").await;
    let client = signed_in_browser(&app, "jane@example.com").await;
    let html = get(&app, &client, "/account").await.text().await.unwrap();
    let table = &html[html
        .find("<table class=\"sessions\">")
        .expect("sessions table")..];
    assert!(
        table
            .trim_start_matches("<table class=\"sessions\">")
            .trim_start()
            .starts_with("<caption"),
        "{table}"
    );
    assert!(table.contains("Your sessions: device, IP address"));
}

async fn register_signs_in_and_lands_on_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = browser();
    let res = register_on_page(&app, &client, "Jane@Example.com").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account");
    // A page sign-in signs a same-site SPA in too.
    let (refresh, line) = set_cookie(res.headers(), "refresh_token").expect("API refresh cookie");
    assert!(line.contains("Path=/api/auth") && line.contains("HttpOnly"));
    assert_eq!(app.refresh_with(&refresh).await.status(), StatusCode::OK);

    let html = get(&app, &client, "/account").await.text().await.unwrap();
    for text in [
        "Dr Jane Smith",
        "jane@example.com",
        "doctor",
        "Not yet",
        "This browser",
    ] {
        assert!(html.contains(text), "{text}");
    }
    // The same account works on the API: one implementation.
    app.login("jane@example.com", PASSWORD).await;
}

async fn register_with_required_verification_sends_one_working_link(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("REQUIRE_VERIFIED_EMAIL", "true")]).await;
    let client = browser();
    let res = register_on_page(&app, &client, "jane@example.com").await;
    // Not signed in yet: the page says where the link went.
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?registered=1");
    assert!(set_cookie(res.headers(), "refresh_token").is_none());
    let html = get(&app, &client, "/login?registered=1")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Open the link we have sent"), "{html}");
    // The first (and only) link works: no second email voided it.
    let emails = common::wait_for_subject(&app.outbox(), common::VERIFY_SUBJECT, 1).await;
    let link = link_path(&emails[0]);
    let res = get(&app, &client, &link).await;
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains("Email address confirmed"), "{html}");
    let res = sign_in(&app, &client, "jane@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        common::read_subject(&app.outbox(), common::VERIFY_SUBJECT).len(),
        1
    );
}

/// Someone may fail sign-ins for an address before it has an account (the
/// lock counts unknown emails too). The person who then registers it has
/// just chosen the password and is signed in, not shown the lock.
async fn register_signs_in_even_when_the_email_was_locked_before(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("LOGIN_MAX_FAILURES", "2")]).await;
    let client = browser();
    for _ in 0..2 {
        let res = sign_in(&app, &client, "jane@example.com", "Wr0ng!Password99").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = sign_in(&app, &client, "jane@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "locked");
    let res = register_on_page(&app, &client, "jane@example.com").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account");
    let html = get(&app, &client, "/account").await.text().await.unwrap();
    assert!(html.contains("Dr Jane Smith"), "{html}");
}

async fn register_errors_keep_input_but_never_passwords(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("taken@example.com").await;
    let client = browser();
    let csrf = page_csrf(&app, &client, "/register").await;
    let res = post_form(
        &app,
        &client,
        "/register",
        &[
            ("csrf", &csrf),
            ("name", "Dr Who"),
            ("email", "not-an-email"),
            ("password", "password1234"),
            ("password_confirm", "different-secret"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("There is a problem"),
        "error summary at the top"
    );
    assert!(
        html.contains("value=\"Dr Who\"") && html.contains("value=\"not-an-email\""),
        "typed values kept"
    );
    assert!(
        !html.contains("password1234") && !html.contains("different-secret"),
        "passwords never echoed"
    );
    assert!(
        html.contains("Enter a valid email address."),
        "same message as the API"
    );
    assert!(html.contains("The passwords do not match."));
    assert!(
        html.contains("aria-describedby=\"email-error\"") && html.contains("aria-invalid=\"true\"")
    );
    assert!(
        html.contains("href=\"#email\""),
        "summary links to the field"
    );

    let csrf = csrf_of(&html);
    let res = post_form(
        &app,
        &client,
        "/register",
        &[
            ("csrf", &csrf),
            ("name", "Other"),
            ("email", "taken@example.com"),
            ("password", PASSWORD),
            ("password_confirm", PASSWORD),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(res.text().await.unwrap().contains("already exists"));
}

async fn login_errors_and_safe_next(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let client = browser();
    let res = sign_in(&app, &client, "jane@example.com", "Wr0ng!Password99").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let html = res.text().await.unwrap();
    assert!(html.contains("The email or password is not correct."));
    assert!(html.contains("value=\"jane@example.com\""), "email kept");
    assert!(!html.contains("Wr0ng!Password99"));
    let unknown = sign_in(&app, &client, "nobody@example.com", "Wr0ng!Password99").await;
    assert_eq!(
        unknown.status(),
        StatusCode::UNAUTHORIZED,
        "same answer for unknown emails"
    );

    for (next, expected) in [
        ("/account", "/account"),
        ("//evil.example/x", "/account"),
        ("https://evil.example", "/account"),
    ] {
        let client = browser();
        let csrf = page_csrf(&app, &client, "/login").await;
        assert_eq!(
            post_redirect(
                &app,
                &client,
                "/login",
                &[
                    ("csrf", &csrf),
                    ("email", "jane@example.com"),
                    ("password", PASSWORD),
                    ("next", next),
                ],
            )
            .await,
            expected,
            "next={next}"
        );
    }
}

async fn post_without_csrf_or_from_foreign_origin_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let client = browser();
    let csrf = page_csrf(&app, &client, "/login").await;
    let fields = [("email", "jane@example.com"), ("password", PASSWORD)];
    let res = post_form(&app, &client, "/login", &fields).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("This form has expired"));
    let res = post_form(
        &app,
        &client,
        "/login",
        &[("csrf", "forged"), fields[0], fields[1]],
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Right token, but sent from another site.
    let res = client
        .post(app.url("/login"))
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str()), fields[0], fields[1]])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Right token, but the browser says the POST came from another site.
    let res = client
        .post(app.url("/login"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str()), fields[0], fields[1]])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Another browser's token does not work in this one.
    let other = browser();
    let res = post_form(
        &app,
        &other,
        "/login",
        &[("csrf", &csrf), fields[0], fields[1]],
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Every state-changing page refuses a missing token.
    let signed_in = signed_in_browser(&app, "jane@example.com").await;
    for path in [
        "/logout",
        "/account/password",
        "/account/sessions/end",
        "/account/sessions/end-all",
        "/register",
        "/forgot-password",
        "/reset-password",
    ] {
        let res = post_form(&app, &signed_in, path, &[]).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        get(&app, &signed_in, "/account").await.status(),
        StatusCode::OK,
        "still signed in"
    );
}

/// A sign-in form kept open while the browser lost its form cookie (a
/// restart) carries a token nothing can check: the form comes back with
/// what was typed and a notice, not an error page, and nobody is signed in.
async fn a_sign_in_form_that_outlived_its_cookie_is_offered_again(backend: Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let csrf = page_csrf(&app, &browser(), "/login").await;
    let restarted = browser();
    let res = post_form(
        &app,
        &restarted,
        "/login",
        &[
            ("csrf", &csrf),
            ("email", "jane@example.com"),
            ("password", PASSWORD),
            ("next", "/account"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        set_cookie(res.headers(), "session").is_none(),
        "not signed in"
    );
    let html = res.text().await.unwrap();
    assert!(
        html.contains("The page had expired. Please sign in again."),
        "{html}"
    );
    assert!(html.contains("value=\"jane@example.com\""), "email kept");
    assert!(!html.contains("This form has expired"), "{html}");
    // The form it shows carries this browser's token and works.
    let csrf = csrf_of(&html);
    let res = post_form(
        &app,
        &restarted,
        "/login",
        &[
            ("csrf", &csrf),
            ("email", "jane@example.com"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

/// An error page is rendered once, in the layout: a page handler's own
/// error (a refused form) and an error answered in JSON (an unknown page)
/// both show APP_NAME and the request's reference, once.
async fn page_errors_show_the_app_name_and_reference_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("APP_NAME", "Northside Clinic")]).await;
    let client = browser();
    let _ = page_csrf(&app, &client, "/login").await;
    for (method, path, status) in [
        ("POST", "/login", StatusCode::FORBIDDEN),
        ("GET", "/no-such-page", StatusCode::NOT_FOUND),
    ] {
        let request_id = format!("page-error-{}", status.as_u16());
        let request = match method {
            "POST" => client.post(app.url(path)).form(&[("email", "a@b.co")]),
            _ => client.get(app.url(path)),
        };
        let res = request
            .header("accept", HTML)
            .header("x-request-id", &request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{path}");
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = res.text().await.unwrap();
        assert_eq!(html.matches("<html").count(), 1, "{html}");
        assert_eq!(
            html.matches("<title>").count(),
            1,
            "one page, not two: {html}"
        );
        assert!(html.contains("· Northside Clinic</title>"), "{html}");
        assert_eq!(
            html.matches(&format!("Reference: <code>{request_id}</code>"))
                .count(),
            1,
            "{html}"
        );
    }
}

async fn session_id_is_renewed_at_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    // A session id planted in the browser before sign-in (well-formed,
    // never issued) is not adopted.
    let planted = "AAAAAAAAAAAAAAAAAAAAAA";
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client.get(app.url("/login")).send().await.unwrap();
    let (form_cookie, _) = set_cookie(page.headers(), "csrf").unwrap();
    let csrf = csrf_of(&page.text().await.unwrap());
    let cookie = format!("session={planted}; csrf={form_cookie}");
    let res = jane_login_form(&app, &client, &cookie, &app.base, &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (first, _) = set_cookie(res.headers(), "session").expect("a session cookie");
    assert_ne!(first, planted, "no session fixation");
    // Signing in again in a signed-in browser renews the id too, and the
    // previous one is worthless.
    let signed_in = browser();
    let res = sign_in(&app, &signed_in, "jane@example.com", PASSWORD).await;
    let (before, _) = set_cookie(res.headers(), "session").unwrap();
    let csrf = page_csrf(&app, &signed_in, "/account").await;
    let res = post_form(
        &app,
        &signed_in,
        "/login",
        &[
            ("csrf", &csrf),
            ("email", "jane@example.com"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (after, _) = set_cookie(res.headers(), "session").expect("a new session cookie");
    assert_ne!(before, after, "no session fixation");
    for old in [planted, before.as_str()] {
        let res = client
            .get(app.url("/account"))
            .header("cookie", format!("session={old}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{old}");
    }
}

async fn sign_out_ends_page_session_and_api_refresh(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let client = browser();
    let res = sign_in(&app, &client, "jane@example.com", PASSWORD).await;
    let (refresh, _) = set_cookie(res.headers(), "refresh_token").unwrap();
    let (session, _) = set_cookie(res.headers(), "session").unwrap();
    let csrf = page_csrf(&app, &client, "/account").await;
    let res = post_form(&app, &client, "/logout", &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?signed_out=1");
    let (cleared, line) = set_cookie(res.headers(), "refresh_token").unwrap();
    assert!(cleared.is_empty() && line.contains("Max-Age=0"));
    assert_eq!(
        location(&get(&app, &client, "/account").await),
        "/login?next=/account"
    );
    app.refresh_refused(&refresh).await;
    let replay = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = replay
        .get(app.url("/account"))
        .header("cookie", format!("session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the old session cookie is dead"
    );
    assert!(get(&app, &client, "/login?signed_out=1")
        .await
        .text()
        .await
        .unwrap()
        .contains("You are signed out."));
}

fn session_ids(html: &str) -> Vec<String> {
    html.split("name=\"session\" value=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

async fn account_lists_and_ends_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let front_desk = signed_in_browser(&app, "jane@example.com").await;
    let office = signed_in_browser(&app, "jane@example.com").await;
    let (_, api_refresh) = app.login("jane@example.com", PASSWORD).await;

    let html = get(&app, &front_desk, "/account")
        .await
        .text()
        .await
        .unwrap();
    let others = session_ids(&html);
    assert_eq!(
        others.len(),
        2,
        "the other browser and the API sign-in, not this browser: {others:?}"
    );
    assert_eq!(html.matches("This browser").count(), 1);
    assert!(html.contains("127.0.0.1"));

    // End the office browser's session from the front desk.
    let office_id = others.iter().find(|id| id.starts_with("web_")).unwrap();
    let csrf = csrf_of(&html);
    assert_eq!(
        post_redirect(
            &app,
            &front_desk,
            "/account/sessions/end",
            &[("csrf", &csrf), ("session", office_id)],
        )
        .await,
        "/account"
    );
    assert!(get(&app, &front_desk, "/account")
        .await
        .text()
        .await
        .unwrap()
        .contains("That session has been signed out."));
    assert_eq!(
        location(&get(&app, &office, "/account").await),
        "/login?next=/account",
        "office signed out on its next navigation"
    );

    // Ending someone else's (or a made-up) handle does nothing.
    assert_eq!(
        post_redirect(
            &app,
            &front_desk,
            "/account/sessions/end",
            &[("csrf", &csrf), ("session", "web_deadbeef")],
        )
        .await,
        "/account"
    );

    // Sign out everywhere: this browser and the API too.
    assert_eq!(
        post_redirect(
            &app,
            &front_desk,
            "/account/sessions/end-all",
            &[("csrf", &csrf)],
        )
        .await,
        "/login?signed_out=1"
    );
    assert_eq!(
        get(&app, &front_desk, "/account").await.status(),
        StatusCode::SEE_OTHER
    );
    app.refresh_refused(&api_refresh).await;
}

async fn change_password_keeps_only_this_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let here = signed_in_browser(&app, "jane@example.com").await;
    let elsewhere = signed_in_browser(&app, "jane@example.com").await;
    let (_, api_refresh) = app.login("jane@example.com", PASSWORD).await;
    let csrf = page_csrf(&app, &here, "/account").await;
    let new_password = "N3w!Passphrase-2026";

    let res = post_form(
        &app,
        &here,
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current_password", "Wr0ng!Password99"),
            ("new_password", new_password),
            ("password_confirm", new_password),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("Your current password is not correct."));
    let res = post_form(
        &app,
        &here,
        "/account/password",
        &[
            ("csrf", &csrf),
            ("current_password", PASSWORD),
            ("new_password", "password1234"),
            ("password_confirm", "password1234"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(
        post_redirect(
            &app,
            &here,
            "/account/password",
            &[
                ("csrf", &csrf),
                ("current_password", PASSWORD),
                ("new_password", new_password),
                ("password_confirm", new_password),
            ],
        )
        .await,
        "/account"
    );
    let html = get(&app, &here, "/account").await.text().await.unwrap();
    assert!(html.contains("Your password has been changed"));
    assert!(session_ids(&html).is_empty(), "every other session ended");
    assert_eq!(
        get(&app, &elsewhere, "/account").await.status(),
        StatusCode::SEE_OTHER
    );
    app.refresh_refused(&api_refresh).await;
    app.login("jane@example.com", new_password).await;
}

async fn page_reset_flow_and_bad_links(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let (_, api_refresh) = app.login("jane@example.com", PASSWORD).await;
    let client = browser();
    let csrf = page_csrf(&app, &client, "/forgot-password").await;
    assert_eq!(
        post_redirect(
            &app,
            &client,
            "/forgot-password",
            &[("csrf", &csrf), ("email", "jane@example.com")],
        )
        .await,
        "/forgot-password?sent=1"
    );
    let res = post_form(
        &app,
        &client,
        "/forgot-password",
        &[("csrf", &csrf), ("email", "nobody@example.com")],
    )
    .await;
    assert_eq!(
        location(&res),
        "/forgot-password?sent=1",
        "same answer for unknown emails"
    );
    let token = common::wait_for_reset_emails(&app.outbox(), 1).await[0].reset_token();
    app.settle_email().await;
    assert_eq!(common::read_subject(&app.outbox(), "Reset your").len(), 1);

    let res = get(&app, &client, &format!("/reset-password?token={token}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["referrer-policy"],
        "strict-origin",
        "the token never leaks in a Referer"
    );
    let html = res.text().await.unwrap();
    let csrf = csrf_of(&html);
    let new_password = "N3w!Passphrase-2026";
    let res = post_form(
        &app,
        &client,
        "/reset-password",
        &[
            ("csrf", &csrf),
            ("token", &token),
            ("password", new_password),
            ("password_confirm", "typo"),
        ],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "mismatch keeps the link usable"
    );
    assert_eq!(
        post_redirect(
            &app,
            &client,
            "/reset-password",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("password", new_password),
                ("password_confirm", new_password),
            ],
        )
        .await,
        "/login?reset=1"
    );
    assert!(get(&app, &client, "/login?reset=1")
        .await
        .text()
        .await
        .unwrap()
        .contains("Your password has been changed"));
    // A reset on the page ends API sessions too.
    app.refresh_refused(&api_refresh).await;
    app.login("jane@example.com", new_password).await;

    for bad in [token.as_str(), "nonsense", ""] {
        let res = get(&app, &client, &format!("/reset-password?token={bad}")).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let html = res.text().await.unwrap();
        assert!(
            html.contains("This link does not work") && html.contains("href=\"/forgot-password\"")
        );
    }
    let res = post_form(
        &app,
        &client,
        "/reset-password",
        &[
            ("csrf", &csrf),
            ("token", &token),
            ("password", new_password),
            ("password_confirm", new_password),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "used link");
}

async fn idle_timeout_signs_out(backend: Backend) {
    let app = TestApp::with_jane(backend, &[("SESSION_IDLE_TIMEOUT", "2s")]).await;
    let client = signed_in_browser(&app, "jane@example.com").await;
    // Activity keeps it alive...
    for _ in 0..3 {
        app.clock.advance(Duration::from_millis(800));
        assert_eq!(
            get(&app, &client, "/account").await.status(),
            StatusCode::OK
        );
    }
    // ...idleness ends it.
    app.clock.advance(Duration::from_millis(3200));
    assert_eq!(
        location(&get(&app, &client, "/account").await),
        "/login?next=/account"
    );
}

async fn absolute_lifetime_signs_out(backend: Backend) {
    let app = TestApp::with_jane(
        backend,
        &[
            ("SESSION_IDLE_TIMEOUT", "1m"),
            ("SESSION_MAX_LIFETIME", "1m"),
        ],
    )
    .await;
    let client = signed_in_browser(&app, "jane@example.com").await;
    assert_eq!(
        get(&app, &client, "/account").await.status(),
        StatusCode::OK
    );
    // Age the sign-in by rewriting the stored session, as if 61 s passed.
    let store = app.store().await;
    let user = store
        .find_user_by_email(&clinic_auth::domain::EmailAddress::parse("jane@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    let now = chrono::Utc::now();
    let mut sessions = store.list_user_web_sessions(&user.id, now).await.unwrap();
    assert_eq!(sessions.len(), 1);
    let mut record = sessions.remove(0);
    let mut data: serde_json::Value = serde_json::from_str(&record.data).unwrap();
    let aged = (now - chrono::Duration::seconds(61)).to_rfc3339();
    data["portal"]["signed_in_at"] = json!(aged);
    record.data = data.to_string();
    assert!(store.update_web_session(&record, now).await.unwrap());
    assert_eq!(
        location(&get(&app, &client, "/account").await),
        "/login?next=/account"
    );
}

async fn sessions_survive_a_restart(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    let client = signed_in_browser(&app, "jane@example.com").await;
    let (_, line) = set_cookie(get(&app, &client, "/account").await.headers(), "session").unwrap();
    let cookie = line.split(';').next().unwrap().to_owned();
    app.restart().await;
    // A fresh client with the same cookie: the server kept the session.
    let same_browser = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = same_browser
        .get(app.url("/account"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

async fn browsers_get_error_pages_and_api_keeps_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = browser();
    let res = get(&app, &client, "/no-such-page").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(html.contains("Page not found") && html.contains("Reference:"));
    // Under /api, and for clients that do not ask for HTML, JSON as always.
    let res = get(&app, &client, "/api/nope").await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    expect_error(
        app.get("/no-such-page").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let res = client
        .delete(app.url("/login"))
        .header("accept", HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(res.text().await.unwrap().contains("<h1>"));
    // A form body that is not a form is a 400 page, not a crash.
    let res = client
        .post(app.url("/login"))
        .header("accept", HTML)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

async fn page_forms_are_rate_limited_with_a_friendly_page(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("RATE_LIMIT_AUTH_PER_MIN", "2")]).await;
    let client = browser();
    let csrf = page_csrf(&app, &client, "/login").await;
    for _ in 0..2 {
        let res = post_form(
            &app,
            &client,
            "/login",
            &[("csrf", &csrf), ("email", "a@b.co"), ("password", "x")],
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = post_form(
        &app,
        &client,
        "/login",
        &[("csrf", &csrf), ("email", "a@b.co"), ("password", "x")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get("retry-after").is_some());
    assert!(res.text().await.unwrap().contains("Too many attempts"));
    assert_eq!(
        get(&app, &client, "/login").await.status(),
        StatusCode::OK,
        "pages still render"
    );
}

async fn https_portal_cookies_are_host_prefixed(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("APP_URL", "https://auth.clinic.example")]).await;
    app.register("jane@example.com").await;
    let page = get(&app, &browser(), "/login").await;
    let (seed, line) =
        set_cookie(page.headers(), "__Host-csrf").expect("__Host- prefixed form cookie");
    let csrf = csrf_of(&page.text().await.unwrap());
    // A cookie jar would not send Secure cookies back over plain http.
    let cookie = format!("__Host-csrf={seed}");
    let origin = "https://auth.clinic.example";
    let res = jane_login_form(&app, &browser(), &cookie, origin, &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, session) =
        set_cookie(res.headers(), "__Host-session").expect("__Host- prefixed session cookie");
    for line in [line, session] {
        assert!(
            line.contains("Secure") && line.contains("HttpOnly") && line.contains("Path=/"),
            "{line}"
        );
        assert!(
            !line.contains("Domain="),
            "__Host- cookies carry no Domain: {line}"
        );
    }
    assert!(res.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .contains("max-age="));
}

async fn login_page_explains_locks_and_unverified_addresses(backend: Backend) {
    let app = TestApp::with_jane(
        backend,
        &[
            ("LOGIN_MAX_FAILURES", "2"),
            ("REQUIRE_VERIFIED_EMAIL", "true"),
        ],
    )
    .await;
    let client = browser();
    // Right password, unverified address: the same 403 as the API.
    let res = sign_in(&app, &client, "jane@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let html = res.text().await.unwrap();
    assert!(html.contains("Confirm your email address first"), "{html}");
    assert!(html.contains("value=\"jane@example.com\""), "email kept");

    for _ in 0..2 {
        let res = sign_in(&app, &client, "nobody@example.com", "Wr0ng!Password99").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = sign_in(&app, &client, "nobody@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("Too many failed sign-ins for this email. Try again in 1 minute"),
        "{html}"
    );
}

async fn account_page_resends_the_verification_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("jane@example.com").await;
    common::wait_for_subject(&app.outbox(), common::VERIFY_SUBJECT, 1).await;
    let client = signed_in_browser(&app, "jane@example.com").await;
    let html = get(&app, &client, "/account").await.text().await.unwrap();
    assert!(html.contains("Not yet") && html.contains("Send the link again"));
    let csrf = csrf_of(&html);
    let res = post_form(&app, &client, "/account/verify-email", &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account");
    let html = get(&app, &client, "/account").await.text().await.unwrap();
    assert!(
        html.contains("We have sent a new verification link"),
        "{html}"
    );
    let emails = common::wait_for_subject(&app.outbox(), common::VERIFY_SUBJECT, 2).await;
    // Following the new link from this browser confirms the address.
    let link = link_path(&emails[1]);
    let res = get(&app, &client, &link).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("Go to your account"));
    let html = get(&app, &client, "/account").await.text().await.unwrap();
    assert!(!html.contains("Send the link again"));
    // Without a CSRF token nothing is sent.
    let res = post_form(
        &app,
        &client,
        "/account/verify-email",
        &[("csrf", "forged")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

async fn api_logout_with_the_page_refresh_cookie_ends_the_portal_session(backend: Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let client = browser();
    let res = sign_in(&app, &client, "jane@example.com", PASSWORD).await;
    let (refresh, _) = set_cookie(res.headers(), "refresh_token").unwrap();
    // Another portal sign-in of hers, which this logout must leave alone.
    let other = signed_in_browser(&app, "jane@example.com").await;
    assert_eq!(
        get(&app, &client, "/account").await.status(),
        StatusCode::OK
    );
    // The SPA on the same site signs out with the cookie the page set.
    let res = app.logout_with(&refresh).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // One sign-in, one end: the page session is over too.
    assert_eq!(
        location(&get(&app, &client, "/account").await),
        "/login?next=/account"
    );
    assert_eq!(get(&app, &other, "/account").await.status(), StatusCode::OK);
}
