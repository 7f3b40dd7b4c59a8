//! SPAs on another site (issue 20), over plain HTTP on every backend: the
//! refresh cookie's SameSite follows REFRESH_COOKIE_SAMESITE, and with
//! `none` refresh and logout answer only an allowed Origin, so a
//! cross-site form post cannot use the cookie.

mod common;

use common::{expect_error, set_cookie, Backend, TestApp, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::json;

backend_tests!(
    the_refresh_cookie_is_strict_by_default,
    cross_site_refresh_and_logout_need_an_allowed_origin,
);

const APP: &str = "https://app.example-clinic.org";
const AUTH: &str = "https://auth.example-clinic.com";
const COOKIE: &str = "__Secure-refresh_token";

/// Signs Jane in; the refresh cookie's value and its Set-Cookie line.
async fn sign_in(app: &TestApp, name: &str) -> (String, String) {
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    set_cookie(res.headers(), name).expect("a refresh cookie")
}

/// POSTs `path` with the refresh cookie by hand (a cookie jar would not
/// send a Secure cookie over the tests' plain http) and `origin`, if any.
async fn with_cookie(
    app: &TestApp,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(path))
        .header("cookie", format!("{COOKIE}={cookie}"));
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    req.send().await.unwrap()
}

async fn the_refresh_cookie_is_strict_by_default(backend: Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (_, line) = sign_in(&app, "refresh_token").await;
    assert!(line.contains("SameSite=Strict"), "{line}");
    assert!(!line.contains("Partitioned"), "{line}");
    assert!(
        line.contains("HttpOnly") && line.contains("Path=/api/auth"),
        "{line}"
    );
    // No Origin check under Strict: a client without one (curl, a native
    // app) refreshes as before.
    let cookie = common::refresh_cookie(
        app.post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await
        .headers(),
    )
    .unwrap();
    assert_eq!(app.refresh_with(&cookie).await.status(), StatusCode::OK);
}

async fn cross_site_refresh_and_logout_need_an_allowed_origin(backend: Backend) {
    let app = TestApp::with_jane(
        backend,
        &[
            ("APP_URL", AUTH),
            ("CORS_ORIGINS", APP),
            ("REFRESH_COOKIE_SAMESITE", "none"),
        ],
    )
    .await;
    let (cookie, line) = sign_in(&app, COOKIE).await;
    assert!(line.contains("SameSite=None"), "{line}");
    assert!(
        line.contains("Secure") && line.contains("HttpOnly"),
        "{line}"
    );
    // Partitioned (CHIPS): kept by browsers that block third-party
    // cookies (tests/browser.rs::the_example_spa_on_another_site).
    assert!(line.contains("Partitioned"), "{line}");

    // Refused before the cookie is read: no Origin, another site's, a
    // look-alike. The cookie still works afterwards.
    for origin in [
        None,
        Some("https://evil.example"),
        Some("https://app.example-clinic.org.evil.example"),
    ] {
        let res = with_cookie(&app, "/api/auth/refresh", &cookie, origin).await;
        let body = expect_error(res, StatusCode::FORBIDDEN, "origin_not_allowed").await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("CORS_ORIGINS"),
            "{body}"
        );
        let res = with_cookie(&app, "/api/auth/logout", &cookie, origin).await;
        expect_error(res, StatusCode::FORBIDDEN, "origin_not_allowed").await;
    }

    // The SPA's origin (and the service's own) may use it.
    let res = with_cookie(&app, "/api/auth/refresh", &cookie, Some(APP)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        APP,
        "the SPA may read the answer"
    );
    let (cookie, line) = set_cookie(res.headers(), COOKIE).expect("rotated cookie");
    assert!(line.contains("SameSite=None"), "{line}");
    let res = with_cookie(&app, "/api/auth/refresh", &cookie, Some(AUTH)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (cookie, _) = set_cookie(res.headers(), COOKIE).unwrap();

    // The browser's preflight for the SPA's credentialed fetch.
    let res = app
        .client
        .request(Method::OPTIONS, app.url("/api/auth/refresh"))
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(res.headers()["access-control-allow-origin"], APP);
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");

    // Signing out from the SPA ends the sign-in on the server.
    let res = with_cookie(&app, "/api/auth/logout", &cookie, Some(APP)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Cleared with the same attributes, or the partitioned cookie stays.
    let (_, cleared) = set_cookie(res.headers(), COOKIE).expect("a clearing cookie");
    assert!(
        cleared.contains("Max-Age=0") && cleared.contains("Partitioned"),
        "{cleared}"
    );
    let res = with_cookie(&app, "/api/auth/refresh", &cookie, Some(APP)).await;
    expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
}
