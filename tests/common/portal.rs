//! Driving the portal like a browser over plain HTTP: a cookie-keeping
//! client, forms with their CSRF token, and sign-in through the login page.

use reqwest::{Client, Response, StatusCode};

use super::{TestApp, PASSWORD};

/// A browser-like client: keeps cookies, does not follow redirects.
pub fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub const HTML: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

pub async fn get(app: &TestApp, client: &Client, path: &str) -> Response {
    client
        .get(app.url(path))
        .header("accept", HTML)
        .send()
        .await
        .unwrap()
}

/// The CSRF token in a page's first form.
pub fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("page has a CSRF field") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

pub async fn page_csrf(app: &TestApp, client: &Client, path: &str) -> String {
    let res = get(app, client, path).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    csrf_of(&res.text().await.unwrap())
}

pub async fn post_form(
    app: &TestApp,
    client: &Client,
    path: &str,
    fields: &[(&str, &str)],
) -> Response {
    client
        .post(app.url(path))
        .header("accept", HTML)
        .header("origin", app.base.clone())
        .form(fields)
        .send()
        .await
        .unwrap()
}

pub fn location(res: &Response) -> String {
    res.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Posts a form that must answer with a redirect (Post/Redirect/Get);
/// returns where to.
pub async fn post_redirect(
    app: &TestApp,
    client: &Client,
    path: &str,
    fields: &[(&str, &str)],
) -> String {
    let res = post_form(app, client, path, fields).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "POST {path}");
    location(&res)
}

/// Signs a browser in through the login form.
pub async fn sign_in(app: &TestApp, client: &Client, email: &str, password: &str) -> Response {
    let csrf = page_csrf(app, client, "/login").await;
    post_form(
        app,
        client,
        "/login",
        &[
            ("csrf", &csrf),
            ("email", email),
            ("password", password),
            ("next", ""),
        ],
    )
    .await
}

pub async fn signed_in_browser(app: &TestApp, email: &str) -> Client {
    let client = browser();
    let res = sign_in(app, &client, email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account");
    client
}

/// Jane's sign-in form, posted with exactly `cookie` and `origin`: for
/// tests that present cookies by hand (Secure ones over plain http, or a
/// planted session id).
pub fn jane_login_form(
    app: &TestApp,
    client: &Client,
    cookie: &str,
    origin: &str,
    csrf: &str,
) -> reqwest::RequestBuilder {
    client
        .post(app.url("/login"))
        .header("cookie", cookie.to_owned())
        .header("origin", origin.to_owned())
        .header("accept", HTML)
        .form(&[
            ("csrf", csrf),
            ("email", "jane@example.com"),
            ("password", PASSWORD),
            ("next", ""),
        ])
}
