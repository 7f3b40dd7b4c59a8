//! MongoStore over the real wire protocol (nx-27017, or `TEST_MONGO_URI`).
//!
//! The backend-neutral behaviour is also covered by the shared storage
//! suite; this file proves what is specific to MongoDB: the document shapes
//! the original Python service reads and writes, BSON types surviving
//! `$set`, the indexes, and starting and recovering without a reachable
//! server.

#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "support/mongo_server.rs"]
mod mongo_server;
#[path = "support/net.rs"]
mod net;

use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use chrono::TimeDelta;
use clinic_auth::domain::{EmailAddress, PasswordHash, Role, TokenHash, UserId};
use clinic_auth::storage::mongo::MongoStore;
use clinic_auth::storage::{
    HealthProbe, NewRefreshToken, RefreshTokenRecord, RefreshTokenStore, Rotation, Store,
    StoreError, UserStore,
};
use mongodb::Database;

use fixtures::{new_user, now as now_ms};
use mongo_server::{test_mongo_uri, MongoServer};

/// A store on a fresh database, plus a raw handle on the same database for
/// checking the stored documents themselves.
async fn store() -> (MongoStore, Database) {
    let uri = test_mongo_uri().await;
    let store = MongoStore::connect(&uri).await.expect("connect");
    (store, raw_db(&uri).await)
}

async fn raw_db(uri: &str) -> Database {
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .expect("raw client");
    client
        .default_database()
        .expect("test URIs name a database")
}

fn refresh(user: &UserId, name: &str, expires_in: TimeDelta) -> (NewRefreshToken, TokenHash) {
    let hash = TokenHash::of(name);
    let now = now_ms();
    let token = NewRefreshToken {
        user_id: user.clone(),
        jti: format!("jti-{name}"),
        token_hash: hash.clone(),
        family_id: "family-1".into(),
        user_agent: Some("Firefox".into()),
        ip_address: Some("127.0.0.1".into()),
        expires_at: now + expires_in,
        created_at: now,
    };
    (token, hash)
}

fn some_user_id() -> UserId {
    UserId::new(ObjectId::new().to_hex())
}

async fn raw_one(db: &Database, collection: &str, filter: Document) -> Document {
    db.collection::<Document>(collection)
        .find_one(filter)
        .await
        .expect("raw read")
        .expect("document exists")
}

#[tokio::test]
async fn creates_and_finds_users_in_the_python_document_shape() {
    let (store, db) = store().await;
    let new = new_user("Jane.Smith@Example.com");
    let user = store.create_user(&new).await.unwrap();

    assert_eq!(user.email.as_str(), "jane.smith@example.com");
    assert_eq!(user.role, Role::parse("doctor").unwrap());
    assert!(!user.verified);
    assert_eq!(user.created_at, new.created_at);
    assert_eq!(user.updated_at, new.created_at);
    let oid = ObjectId::parse_str(user.id.as_str()).expect("UserId is ObjectId hex");

    let by_email = store
        .find_user_by_email(&new.email)
        .await
        .unwrap()
        .expect("found by email");
    assert_eq!(by_email.id, user.id);
    assert_eq!(by_email.name.as_str(), "Dr Jane Smith");
    assert_eq!(by_email.password_hash.expose(), new.password_hash.expose());
    assert_eq!(by_email.created_at, new.created_at);
    let by_id = store.find_user_by_id(&user.id).await.unwrap().unwrap();
    assert_eq!(by_id.email, new.email);

    let raw = raw_one(&db, "users", doc! { "_id": oid }).await;
    assert_eq!(raw.get_str("email").unwrap(), "jane.smith@example.com");
    assert_eq!(raw.get_str("role").unwrap(), "doctor");
    assert_eq!(raw.get("verified"), Some(&Bson::Boolean(false)));
    assert!(matches!(raw.get("created_at"), Some(Bson::DateTime(_))));
    assert!(matches!(raw.get("updated_at"), Some(Bson::DateTime(_))));
    assert!(raw
        .get_str("password_hash")
        .unwrap()
        .starts_with("$argon2id$"));

    let unknown = EmailAddress::parse("nobody@example.com").unwrap();
    assert!(store.find_user_by_email(&unknown).await.unwrap().is_none());
    assert!(store
        .find_user_by_id(&some_user_id())
        .await
        .unwrap()
        .is_none());
    for bad in ["", "not-an-object-id", "0193a0b2c3d4e5f60718293a4b5c6d7e"] {
        assert!(
            store
                .find_user_by_id(&UserId::new(bad))
                .await
                .unwrap()
                .is_none(),
            "{bad:?}"
        );
    }
}

fn rotated(rotation: Rotation) -> RefreshTokenRecord {
    match rotation {
        Rotation::Rotated(rotated) => rotated.retired,
        other => panic!("expected a rotation, got {other:?}"),
    }
}

#[tokio::test]
async fn creates_the_documented_indexes() {
    let (store, db) = store().await;
    store.ensure_indexes().await.unwrap();
    // Second call: already done, must not fail.
    store.ensure_indexes().await.unwrap();

    let mut found = Vec::new();
    for collection in [
        "users",
        "refresh_tokens",
        "reset_tokens",
        "verification_tokens",
        "rate_limits",
    ] {
        let mut cursor = db
            .collection::<Document>(collection)
            .list_indexes()
            .await
            .unwrap();
        while cursor.advance().await.unwrap() {
            let index = cursor.deserialize_current().unwrap();
            let keys: Vec<String> = index.keys.keys().cloned().collect();
            let unique = index
                .options
                .as_ref()
                .and_then(|o| o.unique)
                .unwrap_or(false);
            found.push(format!("{collection}.{} unique={unique}", keys.join(",")));
        }
    }
    for expected in [
        "users.email unique=true",
        "refresh_tokens.jti unique=true",
        "refresh_tokens.token_hash unique=true",
        "refresh_tokens.user_id unique=false",
        "refresh_tokens.family_id unique=false",
        "refresh_tokens.expires_at unique=false",
        "reset_tokens.token_hash unique=true",
        "reset_tokens.user_id unique=false",
        "reset_tokens.expires_at unique=false",
        "verification_tokens.token_hash unique=true",
        "verification_tokens.user_id unique=false",
        "verification_tokens.expires_at unique=false",
        "rate_limits.expires_at unique=false",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "missing {expected}; found {found:?}"
        );
    }
}

#[tokio::test]
async fn values_keep_their_bson_types_after_set() {
    // Guards the nx-27017 workaround in scripts/nx_mongo.py (its SQL update
    // path stores $set dates as strings and booleans as integers), and would
    // catch the same corruption from any other server.
    let (store, db) = store().await;
    let user = store
        .create_user(&new_user("jane@example.com"))
        .await
        .unwrap();
    let now = now_ms();
    assert!(store
        .set_password_hash(&user.id, &PasswordHash::new("h".into()), now)
        .await
        .unwrap());
    let oid = ObjectId::parse_str(user.id.as_str()).unwrap();
    let raw = raw_one(&db, "users", doc! { "_id": oid }).await;
    assert_eq!(
        raw.get("updated_at"),
        Some(&Bson::DateTime(bson::DateTime::from_chrono(now)))
    );

    // update_one path.
    let (a, a_hash) = refresh(&user.id, "a", TimeDelta::hours(1));
    store.insert_refresh_token(&a).await.unwrap();
    assert!(store.revoke_refresh_token(&a_hash, now).await.unwrap());
    let raw = raw_one(&db, "refresh_tokens", doc! { "jti": "jti-a" }).await;
    assert_eq!(raw.get("revoked"), Some(&Bson::Boolean(true)));
    assert!(matches!(raw.get("revoked_at"), Some(Bson::DateTime(_))));
    assert!(matches!(raw.get("expires_at"), Some(Bson::DateTime(_))));

    // find_one_and_update path.
    let (b, b_hash) = refresh(&user.id, "b", TimeDelta::hours(1));
    let (c, _) = refresh(&user.id, "c", TimeDelta::hours(1));
    store.insert_refresh_token(&b).await.unwrap();
    rotated(
        store
            .rotate_refresh_token(&b_hash, now, TimeDelta::zero(), &c)
            .await
            .unwrap(),
    );
    let raw = raw_one(&db, "refresh_tokens", doc! { "jti": "jti-b" }).await;
    assert_eq!(raw.get("revoked"), Some(&Bson::Boolean(true)));
    assert_eq!(
        raw.get("revoked_at"),
        Some(&Bson::DateTime(bson::DateTime::from_chrono(now)))
    );
    assert_eq!(raw.get_str("replaced_by").unwrap(), "jti-c");

    // update_many path.
    assert_eq!(
        store
            .revoke_user_refresh_tokens(&user.id, None, now)
            .await
            .unwrap(),
        1
    );
    let raw = raw_one(&db, "refresh_tokens", doc! { "jti": "jti-c" }).await;
    assert_eq!(raw.get("revoked"), Some(&Bson::Boolean(true)));
    assert!(matches!(raw.get("revoked_at"), Some(Bson::DateTime(_))));
}

#[tokio::test]
async fn stores_and_rotates_refresh_tokens() {
    let (store, db) = store().await;
    let user = some_user_id();
    let (first, first_hash) = refresh(&user, "first", TimeDelta::days(7));
    store.insert_refresh_token(&first).await.unwrap();

    let raw = raw_one(&db, "refresh_tokens", doc! { "jti": "jti-first" }).await;
    assert_eq!(raw.get_str("user_id").unwrap(), user.as_str());
    assert_eq!(raw.get_str("token_hash").unwrap(), first_hash.as_str());
    assert_eq!(raw.get("revoked"), Some(&Bson::Boolean(false)));
    assert!(matches!(raw.get("_id"), Some(Bson::ObjectId(_))));

    let found = store
        .find_refresh_token(&first_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.user_id, user);
    assert_eq!(found.jti, "jti-first");
    assert_eq!(found.family_id, "family-1");
    assert_eq!(found.user_agent.as_deref(), Some("Firefox"));
    assert_eq!(found.ip_address.as_deref(), Some("127.0.0.1"));
    assert!(!found.revoked && found.replaced_by.is_none() && found.revoked_at.is_none());
    assert_eq!(found.expires_at, first.expires_at);
    assert_eq!(found.created_at, first.created_at);

    // The same jti again is refused.
    let (mut dup, _) = refresh(&user, "other", TimeDelta::days(7));
    dup.jti = first.jti.clone();
    let err = store.insert_refresh_token(&dup).await;
    assert!(matches!(err, Err(StoreError::Conflict)), "{err:?}");

    let now = now_ms();
    let (second, second_hash) = refresh(&user, "second", TimeDelta::days(7));
    let retired = rotated(
        store
            .rotate_refresh_token(&first_hash, now, TimeDelta::zero(), &second)
            .await
            .unwrap(),
    );
    assert_eq!(retired.jti, "jti-first");
    assert!(retired.revoked);
    assert_eq!(retired.replaced_by.as_deref(), Some("jti-second"));
    assert_eq!(retired.revoked_at, Some(now));
    let replacement = store
        .find_refresh_token(&second_hash)
        .await
        .unwrap()
        .unwrap();
    assert!(!replacement.revoked);
    assert_eq!(replacement.family_id, "family-1");

    // A rotated (revoked) token cannot rotate again, and nothing is stored.
    let (third, third_hash) = refresh(&user, "third", TimeDelta::days(7));
    assert!(matches!(
        store
            .rotate_refresh_token(&first_hash, now, TimeDelta::zero(), &third)
            .await
            .unwrap(),
        Rotation::ReuseDetected { revoked: 1, .. }
    ));
    assert!(matches!(
        store
            .rotate_refresh_token(&TokenHash::of("unknown"), now, TimeDelta::zero(), &third)
            .await
            .unwrap(),
        Rotation::Rejected
    ));
    assert!(store
        .find_refresh_token(&third_hash)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn reads_refresh_tokens_written_by_the_python_service() {
    // The Python service stored no rotation fields and null client details.
    let (store, db) = store().await;
    let user = some_user_id();
    let hash = TokenHash::of("legacy");
    let expires = now_ms() + TimeDelta::days(7);
    db.collection::<Document>("refresh_tokens")
        .insert_one(doc! {
            "_id": ObjectId::new(),
            "user_id": user.as_str(),
            "jti": "legacy-jti",
            "token_hash": hash.as_str(),
            "user_agent": Bson::Null,
            "ip_address": Bson::Null,
            "revoked": false,
            "expires_at": bson::DateTime::from_chrono(expires),
            "created_at": bson::DateTime::from_chrono(now_ms()),
        })
        .await
        .unwrap();

    let found = store.find_refresh_token(&hash).await.unwrap().unwrap();
    assert_eq!(found.family_id, "legacy-jti");
    assert!(found.user_agent.is_none() && found.ip_address.is_none());
    assert_eq!(found.expires_at, expires);

    let (next, _) = refresh(&user, "after-legacy", TimeDelta::days(7));
    let retired = rotated(
        store
            .rotate_refresh_token(&hash, now_ms(), TimeDelta::zero(), &next)
            .await
            .unwrap(),
    );
    assert_eq!(retired.replaced_by.as_deref(), Some(next.jti.as_str()));
}

#[tokio::test]
async fn pings_and_names_itself() {
    let (store, _db) = store().await;
    store.ping().await.unwrap();
    assert_eq!(store.backend(), "mongodb");
    assert!(store.database_name().starts_with("test_"));

    // Nothing is contacted here: the client connects lazily.
    let default = MongoStore::connect("mongodb://127.0.0.1:9").await.unwrap();
    assert_eq!(default.database_name(), "clinic_auth");
    let named = MongoStore::connect("mongodb://127.0.0.1:9/other_db?appName=x")
        .await
        .unwrap();
    assert_eq!(named.database_name(), "other_db");
}

#[tokio::test]
async fn an_invalid_uri_is_an_error_that_does_not_echo_it() {
    let err = MongoStore::connect("postgres://user:s3cret@host/db")
        .await
        .err()
        .expect("not a MongoDB URI");
    assert!(!format!("{err:#}").contains("s3cret"), "{err:#}");
}

#[tokio::test]
async fn starts_without_a_server_and_reports_it_unavailable_quickly() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let store = MongoStore::connect(&format!("mongodb://127.0.0.1:{port}/clinic_auth"))
        .await
        .expect("connect must not need the server");
    assert!(started.elapsed() < Duration::from_secs(1));

    let started = Instant::now();
    let ping = store.ping().await;
    assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "ping took {:?}",
        started.elapsed()
    );

    let create = store.create_user(&new_user("jane@example.com")).await;
    assert!(
        matches!(create, Err(StoreError::Unavailable(_))),
        "{create:?}"
    );
    let find = store
        .find_user_by_email(&EmailAddress::parse("jane@example.com").unwrap())
        .await;
    assert!(matches!(find, Err(StoreError::Unavailable(_))), "{find:?}");
}

/// Polls `check` until it returns true or `within` has passed.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn recovers_when_the_server_comes_back() {
    let mut server = MongoServer::start().await;
    let uri = server.uri("clinic_auth");
    let store = MongoStore::connect(&uri).await.unwrap();
    let user = store
        .create_user(&new_user("jane@example.com"))
        .await
        .unwrap();

    server.stop().await;
    let ping = store.ping().await;
    assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
    let find = store.find_user_by_id(&user.id).await;
    assert!(matches!(find, Err(StoreError::Unavailable(_))), "{find:?}");

    server.restart().await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            store.ping().await.is_ok()
        })
        .await,
        "ping never recovered"
    );
    // Same port, same data.
    let again = store.find_user_by_id(&user.id).await.unwrap();
    assert_eq!(again.map(|u| u.email), Some(user.email));
}

#[tokio::test]
async fn creates_indexes_once_a_server_that_was_down_comes_up() {
    let mut server = MongoServer::start().await;
    server.stop().await;
    let uri = server.uri("clinic_auth");
    let store = MongoStore::connect(&uri).await.unwrap();
    // An attempt fails while the server is down: ours waits behind the
    // background task's first one (one attempt at a time), so by the time
    // it fails, the background task has failed at least once too.
    let attempt = store.ensure_indexes().await;
    assert!(
        matches!(attempt, Err(StoreError::Unavailable(_))),
        "{attempt:?}"
    );

    server.restart().await;
    let db = raw_db(&uri).await;
    let has_email_index = || async {
        let Ok(names) = db.collection::<Document>("users").list_index_names().await else {
            return false;
        };
        names.len() > 1
    };
    assert!(
        eventually(Duration::from_secs(40), has_email_index).await,
        "the background task never created the indexes"
    );
    drop(store);
}
