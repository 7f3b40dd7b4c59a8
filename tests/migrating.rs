//! MIGRATING.md, checked against the running app: each test names the row
//! of the guide it holds true ("row: ..." in every assertion message), so a
//! failure says which line of the guide has become false. Rows whose
//! outcome depends on the store run on both backends.

mod common;

use common::{expect_error, refresh_cookie, set_cookie, Backend, TestApp, PASSWORD};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    refresh_token_in_a_body_is_refused_not_ignored,
    the_original_variables_run_the_service,
    answers_differ_as_the_table_says,
    tokens_of_the_python_service_are_refused,
);

/// POST `path` with `body` as the raw request body (and `content_type`),
/// and `cookie` as the refresh cookie when given.
async fn post_raw(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> Response {
    let mut req = app.client.post(app.url(path)).body(body.to_owned());
    if let Some(token) = cookie {
        req = req.header("cookie", format!("refresh_token={token}"));
    }
    if let Some(content_type) = content_type {
        req = req.header("content-type", content_type);
    }
    req.send().await.unwrap()
}

const JSON: Option<&str> = Some("application/json");

/// Row "Refresh token": the Python service read it from the JSON body;
/// here it travels only in the HttpOnly cookie, and a body that still
/// carries it is a 400 that says so, never a silent no-op.
async fn refresh_token_in_a_body_is_refused_not_ignored(backend: Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (_, refresh) = app.login("jane@example.com", PASSWORD).await;
    let carrying = json!({ "refresh_token": refresh }).to_string();

    for path in ["/api/auth/refresh", "/api/auth/logout"] {
        // As the Python service's clients send it: the body alone...
        let res = post_raw(&app, path, None, JSON, &carrying).await;
        assert!(
            res.headers().get("set-cookie").is_none(),
            "row: refresh token: {path} refuses without touching the cookie"
        );
        let body = expect_error(res, StatusCode::BAD_REQUEST, "refresh_token_in_body").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("cookie"),
            "row: refresh token: {path}'s message says where the token goes: {message}"
        );
        assert!(
            !message.contains(&refresh),
            "row: refresh token: {path}'s message never echoes the token"
        );
        // ...or with the cookie as well: still refused, and nothing happened.
        let res = post_raw(&app, path, Some(&refresh), JSON, &carrying).await;
        expect_error(res, StatusCode::BAD_REQUEST, "refresh_token_in_body").await;
        // Whatever the Content-Type said, and whatever the value.
        let res = post_raw(&app, path, None, None, r#"{"refresh_token": null}"#).await;
        expect_error(res, StatusCode::BAD_REQUEST, "refresh_token_in_body").await;
        let res = post_raw(&app, path, None, Some("text/plain"), &carrying).await;
        expect_error(res, StatusCode::BAD_REQUEST, "refresh_token_in_body").await;
    }
    // Neither refusal ended or rotated the sign-in: the cookie still works.
    let res = app.refresh_with(&refresh).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "row: refresh token: a refused body changed nothing"
    );

    // A body without the field, or no body, is today's behaviour exactly:
    // the body is not read for anything else.
    for (content_type, body) in [
        (JSON, "{}"),
        (JSON, r#"{"other": 1}"#),
        (JSON, "not json"),
        (JSON, r#"["refresh_token"]"#),
        (Some("application/x-www-form-urlencoded"), "a=b"),
        (None, ""),
    ] {
        let (_, signed_in) = app.login("jane@example.com", PASSWORD).await;
        let res = post_raw(
            &app,
            "/api/auth/refresh",
            Some(&signed_in),
            content_type,
            body,
        )
        .await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "row: refresh token: refresh with a body {body:?} without the field works as before"
        );
        let rotated = refresh_cookie(res.headers()).expect("a new refresh cookie");
        let res = post_raw(&app, "/api/auth/logout", Some(&rotated), content_type, body).await;
        assert_eq!(
            res.status(),
            StatusCode::NO_CONTENT,
            "row: refresh token: logout with a body {body:?} without the field signs out as before"
        );
        let res = app.refresh_with(&rotated).await;
        expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    }
}

/// Section "The same variables": the original's .env as its README shows
/// it runs this service unchanged (in development). Two values are not
/// the original's: PORT (0: the tests pick a free port) and MAIL_SERVER
/// (empty: the tests have no internet for smtp.ethereal.email).
async fn the_original_variables_run_the_service(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("APP_NAME", "clinic-auth-api"),
            ("APP_URL", "http://localhost:8000"),
            ("JWT_ACCESS_SECRET", "your-super-secret-access-key"),
            ("JWT_REFRESH_SECRET", "your-super-secret-refresh-key"),
            ("JWT_ACCESS_EXPIRES", "15m"),
            ("JWT_REFRESH_EXPIRES", "7d"),
            ("RESET_TOKEN_EXPIRES_MIN", "30"),
            ("CORS_ORIGINS", "http://localhost:3000"),
            ("MAIL_FROM", "Clinic Auth <no-reply@example.com>"),
            ("MAIL_PORT", "587"),
            ("MAIL_USERNAME", ""),
            ("MAIL_PASSWORD", ""),
            ("MAIL_TLS", "True"),
        ],
    )
    .await;
    app.register("jane@example.com").await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let claims = common::jwt_claims(&access);
    assert_eq!(
        claims["aud"], "clinic-auth-api",
        "row: variables: APP_NAME is the audience"
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900,
        "row: variables: JWT_ACCESS_EXPIRES=15m"
    );
    assert_eq!(
        app.me(&access).await.status(),
        StatusCode::OK,
        "row: variables"
    );
}

/// Every row of the table "What a client meets" that one request shows.
async fn answers_differ_as_the_table_says(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    // Row "Register": 201 and the user, with `id` (never `_id`).
    let res = app
        .post_json(
            "/api/auth/register",
            json!({"name": "Dr Jane Smith", "email": "Jane@Example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "row: register status");
    let user: Value = res.json().await.unwrap();
    let id = user["id"].as_str().expect("row: id: the user has `id`");
    assert!(user.get("_id").is_none(), "row: id: no `_id`: {user}");
    assert!(
        user.get("password_hash").is_none(),
        "row: id: no hash: {user}"
    );
    assert_eq!(
        user["email"], "jane@example.com",
        "row: email: stored lowercase"
    );
    if backend == Backend::Mongo {
        assert!(
            id.len() == 24 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "row: id: on MongoDB the document's ObjectId as hex: {id}"
        );
    }

    // Row "Login": the access token in the body, token_type `Bearer`, the
    // refresh token only in its HttpOnly cookie.
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK, "row: login");
    let (refresh, line) =
        set_cookie(res.headers(), "refresh_token").expect("row: refresh token: a cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/api/auth"] {
        assert!(
            line.contains(attribute),
            "row: refresh token: cookie {attribute}: {line}"
        );
    }
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer", "row: token_type");
    assert!(
        body.get("refresh_token").is_none(),
        "row: refresh token: not in the body: {body}"
    );
    assert_eq!(body["user"]["id"], id, "row: id");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["id"], id, "row: id: /me");
    assert!(me.get("_id").is_none(), "row: id: /me");

    // Row "Error body": `error.code` and `error.message`, never `detail`.
    let res = app
        .post_json(
            "/api/auth/login",
            json!({"email": "jane@example.com", "password": "Wr0ng!Password99"}),
        )
        .await;
    let body = expect_error(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert!(body.get("detail").is_none(), "row: error body: {body}");

    // Row "Validation errors": 422 with the problems per field.
    let res = app
        .post_json(
            "/api/auth/register",
            json!({"name": "Dr Who", "email": "who@example.com", "password": "short"}),
        )
        .await;
    let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        body["error"]["fields"]["password"].is_array(),
        "row: validation errors: {body}"
    );

    // Row "Malformed JSON": 400, not 422.
    let res = post_raw(&app, "/api/auth/login", None, JSON, "{\"email\": ").await;
    expect_error(res, StatusCode::BAD_REQUEST, "malformed_json").await;

    // Row "Fields the API does not know": refused, not ignored.
    let res = app
        .post_json(
            "/api/auth/register",
            json!({"name": "Dr Who", "email": "who@example.com", "password": PASSWORD, "role": "admin"}),
        )
        .await;
    let body = expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        body["error"]["fields"]["role"].is_array(),
        "row: unknown fields: {body}"
    );

    // Row "Password rules".
    for (password, accepted) in [
        (PASSWORD, true),
        ("password1234", false),
        ("Sh0rt!pass1", false),
        (&"Zq7!".repeat(33)[..129], false),
        ("correct horse battery staple", true),
    ] {
        let email = format!("rules{}@example.com", password.len());
        let res = app
            .post_json(
                "/api/auth/register",
                json!({"name": "Dr Rules", "email": email, "password": password}),
            )
            .await;
        if accepted {
            assert_eq!(
                res.status(),
                StatusCode::CREATED,
                "row: password rules: {password:?} is accepted"
            );
        } else {
            let body =
                expect_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
            assert!(
                body["error"]["fields"]["password"].is_array(),
                "row: password rules: {password:?}: {body}"
            );
        }
    }

    // Row "Form login": the OAuth2 password form is not accepted.
    let res = post_raw(
        &app,
        "/api/auth/login",
        None,
        Some("application/x-www-form-urlencoded"),
        "username=jane%40example.com&password=Str0ng%21Pass123",
    )
    .await;
    expect_error(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    // Row "Trailing slashes": no redirect, the path is not found.
    let res = app
        .post_json(
            "/api/auth/login/",
            json!({"email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = common::send_bearer(&app, reqwest::Method::GET, "/api/auth/me/", &access, None).await;
    expect_error(res, StatusCode::NOT_FOUND, "not_found").await;

    // The original's documentation routes are where they were.
    let docs = app.get("/docs").await.status();
    assert!(
        docs.is_success() || docs.is_redirection(),
        "routes: /docs answers {docs}"
    );
    assert_eq!(
        app.get("/openapi.json").await.status(),
        StatusCode::OK,
        "routes: /openapi.json"
    );

    // Row "Forgot password": 202.
    let res = app
        .post_json(
            "/api/auth/forgot-password",
            json!({"email": "jane@example.com"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "row: forgot status");
    let body: Value = res.json().await.unwrap();
    assert!(body["message"].is_string(), "row: forgot status: {body}");

    // Row "Logout": 204 with no body, the cookie cleared.
    let res = app.logout_with(&refresh).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT, "row: logout status");
    let (_, line) =
        set_cookie(res.headers(), "refresh_token").expect("row: logout: cookie cleared");
    assert!(line.contains("Max-Age=0"), "row: logout: {line}");
    assert!(
        res.bytes().await.unwrap().is_empty(),
        "row: logout status: no body"
    );
}

/// Section "Switching over": a token the Python service signed with the
/// same JWT_ACCESS_SECRET lacks the claims this service requires, so it
/// is refused and its user signs in again.
async fn tokens_of_the_python_service_are_refused(backend: Backend) {
    let app = TestApp::with_jane(backend, &[]).await;
    let (access, _) = app.login("jane@example.com", PASSWORD).await;
    let sub = common::jwt_claims(&access)["sub"].clone();
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let old_access = sign(
        json!({"sub": sub, "type": "access", "iat": now, "exp": now + 600}),
        common::ACCESS_SECRET,
    );
    common::expect_unauthorized(app.me(&old_access).await, "invalid_token").await;
    let old_refresh = sign(
        json!({"sub": sub, "type": "refresh", "jti": "python-jti", "iat": now, "exp": now + 600}),
        common::REFRESH_SECRET,
    );
    let res = app.refresh_with(&old_refresh).await;
    let body = expect_error(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Sign in again"),
        "row: switching over: {body}"
    );
}

/// Section "Your MongoDB data": documents exactly as the Python service
/// wrote them (an ObjectId `_id`, a passlib bcrypt hash, BSON dates, a
/// reset link stored as the hex SHA-256 of its token) are read as they
/// are; the first sign-in upgrades the hash to argon2id and changes no
/// other field the Python service wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_services_documents_are_read_as_they_are() {
    use bson::{doc, Document};
    use sha2::{Digest, Sha256};

    let app = TestApp::spawn(Backend::Mongo).await;
    let (_, uri) = app.database_env();
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let db = client
        .default_database()
        .expect("the URI names the database");
    let users = db.collection::<Document>("users");
    let oid = bson::oid::ObjectId::new();
    let hash = bcrypt::hash_with_result(PASSWORD, 12)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoB);
    let created = bson::DateTime::from_millis(1_700_000_000_000);
    users
        .insert_one(doc! {
            "_id": oid, "email": "legacy@example.com", "password_hash": &hash,
            "name": "Dr Legacy", "role": "doctor", "verified": false,
            "created_at": created, "updated_at": created,
        })
        .await
        .unwrap();

    let (access, _) = app.login("legacy@example.com", PASSWORD).await;
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(
        me["id"],
        oid.to_hex(),
        "row: users read as-is: id is the ObjectId"
    );
    assert_eq!(me["name"], "Dr Legacy", "row: users read as-is");
    assert_eq!(me["role"], "doctor", "row: users read as-is");
    assert_eq!(me["verified"], false, "row: users read as-is");
    assert_eq!(
        me["created_at"], "2023-11-14T22:13:20Z",
        "row: users read as-is"
    );
    let stored = users.find_one(doc! { "_id": oid }).await.unwrap().unwrap();
    assert!(
        stored
            .get_str("password_hash")
            .unwrap()
            .starts_with("$argon2id$"),
        "row: bcrypt hashes keep working and are upgraded at the first sign-in"
    );
    for (field, value) in [
        ("email", "legacy@example.com"),
        ("name", "Dr Legacy"),
        ("role", "doctor"),
    ] {
        assert_eq!(
            stored.get_str(field).unwrap(),
            value,
            "row: users read as-is: {field} unchanged"
        );
    }
    assert_eq!(
        stored.get_datetime("created_at").unwrap(),
        &created,
        "row: users read as-is"
    );

    // Row "Password rules": they apply when a password is set, never at
    // sign-in, so a short one the Python service accepted still works.
    let short = "Sh0rt!pw1";
    let short_hash = bcrypt::hash_with_result(short, 12)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoB);
    users
        .insert_one(doc! {
            "_id": bson::oid::ObjectId::new(), "email": "short@example.com",
            "password_hash": &short_hash, "name": "Dr Short", "role": "doctor",
            "verified": true, "created_at": created, "updated_at": created,
        })
        .await
        .unwrap();
    app.login("short@example.com", short).await;

    // A reset link the Python service emailed and stored before the switch.
    let token = "python-reset-token-0123456789";
    let now = chrono::Utc::now();
    db.collection::<Document>("reset_tokens")
        .insert_one(doc! {
            "_id": bson::oid::ObjectId::new(), "user_id": oid.to_hex(),
            "token_hash": hex::encode(Sha256::digest(token.as_bytes())),
            "expires_at": bson::DateTime::from_chrono(now + chrono::Duration::minutes(30)),
            "created_at": bson::DateTime::from_chrono(now),
        })
        .await
        .unwrap();
    let res = app.reset_password(token, "N3w!Passphrase-2026").await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "row: reset_tokens read as-is: an open link still works"
    );
    app.login("legacy@example.com", "N3w!Passphrase-2026").await;
}
