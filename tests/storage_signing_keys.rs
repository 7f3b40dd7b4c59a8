//! Storage conformance of the access-token signing keys
//! (`storage/signing_keys.rs`), against every backend: one record per
//! kid, listed oldest first, retired all but one at once, and pruned by
//! retirement time with the kids removed reported.

mod common;

use chrono::{DateTime, Duration, Utc};
use clinic_auth::storage::{SigningKeyRecord, StoreError};
use common::fixtures::now;
use common::{fresh_store, Backend};

backend_tests!(
    keys_are_stored_once_and_listed_oldest_first,
    retiring_and_pruning,
);

fn key(kid: &str, created_at: DateTime<Utc>) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.to_owned(),
        alg: "ES256".to_owned(),
        public_jwk: format!(r#"{{"kty":"EC","crv":"P-256","x":"{kid}x","y":"{kid}y"}}"#),
        private_sealed: format!("v1:sealed-{kid}"),
        created_at,
        retired_at: None,
    }
}

async fn keys_are_stored_once_and_listed_oldest_first(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    assert!(store.list_signing_keys().await.unwrap().is_empty());
    let t = now();
    store.insert_signing_key(&key("b", t)).await.unwrap();
    store
        .insert_signing_key(&key("a", t + Duration::seconds(1)))
        .await
        .unwrap();
    // Same time as "b": the kid breaks the tie.
    store.insert_signing_key(&key("c", t)).await.unwrap();
    assert!(matches!(
        store.insert_signing_key(&key("a", t)).await,
        Err(StoreError::Conflict)
    ));
    let listed = store.list_signing_keys().await.unwrap();
    let kids: Vec<&str> = listed.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["b", "c", "a"]);
    // Read back as written (the millisecond is what both backends keep).
    let a = listed.last().unwrap();
    assert_eq!(a, &key("a", t + Duration::seconds(1)));
    assert_eq!(a.created_at, t + Duration::seconds(1));
    assert!(!format!("{a:?}").contains("sealed"), "{a:?}");
}

async fn retiring_and_pruning(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let t = now();
    for (i, kid) in ["k1", "k2", "k3"].into_iter().enumerate() {
        store
            .insert_signing_key(&key(kid, t + Duration::seconds(i as i64)))
            .await
            .unwrap();
    }
    let at = t + Duration::minutes(1);
    assert_eq!(store.retire_signing_keys_except("k3", at).await.unwrap(), 2);
    // Idempotent: what is retired keeps its first retirement time.
    assert_eq!(
        store
            .retire_signing_keys_except("k3", at + Duration::minutes(5))
            .await
            .unwrap(),
        0
    );
    let listed = store.list_signing_keys().await.unwrap();
    let retired: Vec<Option<DateTime<Utc>>> = listed.iter().map(|k| k.retired_at).collect();
    assert_eq!(retired, [Some(at), Some(at), None]);

    // Not yet: retired exactly at the cut-off is kept.
    assert!(store
        .delete_signing_keys_retired_before(at)
        .await
        .unwrap()
        .is_empty());
    let mut removed = store
        .delete_signing_keys_retired_before(at + Duration::seconds(1))
        .await
        .unwrap();
    removed.sort();
    assert_eq!(removed, ["k1", "k2"]);
    let left: Vec<String> = store
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(left, ["k3"], "the unretired key is never pruned");
    assert!(store
        .delete_signing_keys_retired_before(at + Duration::days(365))
        .await
        .unwrap()
        .is_empty());
}
