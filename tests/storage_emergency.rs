//! Storage conformance of emergency access (`storage/emergency.rs`), against
//! every backend: one open use per user whatever races, each use ended and
//! reviewed once, the queue's order, and the per-user permission.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use clinic_auth::domain::{EmergencyEnd, EmergencyReason, EmergencyReview, EmergencyUse, UserId};
use clinic_auth::storage::{EmergencyFilter, Store};
use common::fixtures::{new_user, now};
use common::{fresh_store, winners, Backend};

backend_tests!(
    one_open_use_per_user_until_it_ends,
    concurrent_starts_and_ends_have_one_winner,
    the_queue_waits_oldest_first_and_reviews_happen_once,
    the_permission_is_granted_and_withdrawn,
);

async fn user_in(store: &Arc<dyn Store>, email: &str) -> UserId {
    store.create_user(&new_user(email)).await.unwrap().id
}

fn window(id: &str, user: &UserId, started_at: DateTime<Utc>) -> EmergencyUse {
    EmergencyUse {
        id: id.to_owned(),
        user_id: user.clone(),
        reason: EmergencyReason::parse("Patient in bay 3 unconscious, record needed").unwrap(),
        started_at,
        expires_at: started_at + Duration::hours(1),
        ended_at: None,
        ended_how: None,
        review: None,
    }
}

async fn one_open_use_per_user_until_it_ends(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let john = user_in(&store, "john@example.com").await;
    let t = now();
    assert!(store.open_emergency_use(&jane).await.unwrap().is_none());
    let first = window("u1", &jane, t);
    assert!(store.start_emergency_use(&first).await.unwrap());
    assert!(!store
        .start_emergency_use(&window("u2", &jane, t))
        .await
        .unwrap());
    assert!(store
        .start_emergency_use(&window("u3", &john, t))
        .await
        .unwrap());
    assert_eq!(store.open_emergency_use(&jane).await.unwrap(), Some(first));
    assert_eq!(store.find_emergency_use("u2").await.unwrap(), None);

    // Expired but open: the sweep finds it (and only it).
    let later = t + Duration::hours(1);
    let expired = store.expired_open_emergency_uses(later, 10).await.unwrap();
    assert_eq!(expired.len(), 2);
    assert!(store
        .expired_open_emergency_uses(t + Duration::minutes(59), 10)
        .await
        .unwrap()
        .is_empty());

    assert!(store
        .end_emergency_use("u1", later, EmergencyEnd::Expired)
        .await
        .unwrap());
    assert!(!store
        .end_emergency_use("u1", later, EmergencyEnd::EndedByUser)
        .await
        .unwrap());
    assert!(!store
        .end_emergency_use("nope", later, EmergencyEnd::Expired)
        .await
        .unwrap());
    let ended = store.find_emergency_use("u1").await.unwrap().unwrap();
    assert_eq!(ended.ended_at, Some(later));
    assert_eq!(ended.ended_how, Some(EmergencyEnd::Expired));
    assert!(store.open_emergency_use(&jane).await.unwrap().is_none());
    assert_eq!(
        store
            .expired_open_emergency_uses(later, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Ended, a new one may start.
    assert!(store
        .start_emergency_use(&window("u4", &jane, later))
        .await
        .unwrap());
}

async fn concurrent_starts_and_ends_have_one_winner(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let t = now();
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let starts = winners(8, || {
        let store = Arc::clone(&store);
        let jane = jane.clone();
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            store
                .start_emergency_use(&window(&format!("s{n}"), &jane, t))
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(starts, 1);
    let open = store.open_emergency_use(&jane).await.unwrap().unwrap();
    let ends = winners(8, || {
        let store = Arc::clone(&store);
        let id = open.id.clone();
        async move {
            store
                .end_emergency_use(&id, t, EmergencyEnd::EndedByUser)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(ends, 1);
}

async fn the_queue_waits_oldest_first_and_reviews_happen_once(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let admin = user_in(&store, "admin@example.com").await;
    let t = now();
    for (i, email) in ["a@example.com", "b@example.com", "c@example.com"]
        .iter()
        .enumerate()
    {
        let user = user_in(&store, email).await;
        let started = t + Duration::minutes(i as i64);
        assert!(store
            .start_emergency_use(&window(&format!("w{i}"), &user, started))
            .await
            .unwrap());
    }
    let ids = |uses: Vec<EmergencyUse>| uses.into_iter().map(|u| u.id).collect::<Vec<_>>();
    let all = store
        .list_emergency_uses(EmergencyFilter::All, 10)
        .await
        .unwrap();
    assert_eq!(ids(all), ["w2", "w1", "w0"]);
    let queue = store
        .list_emergency_uses(EmergencyFilter::Unreviewed, 2)
        .await
        .unwrap();
    assert_eq!(ids(queue), ["w0", "w1"]);
    assert_eq!(
        store
            .count_unreviewed_emergency_uses(t + Duration::minutes(1))
            .await
            .unwrap(),
        1
    );

    let review = EmergencyReview {
        by: admin.clone(),
        at: t + Duration::hours(2),
        note: "Checked with the ward".to_owned(),
    };
    let reviews = winners(6, || {
        let store = Arc::clone(&store);
        let review = review.clone();
        async move { store.review_emergency_use("w0", &review).await.unwrap() }
    })
    .await;
    assert_eq!(reviews, 1);
    assert!(!store.review_emergency_use("nope", &review).await.unwrap());
    let reviewed = store.find_emergency_use("w0").await.unwrap().unwrap();
    assert_eq!(reviewed.review, Some(review));
    let done = store
        .list_emergency_uses(EmergencyFilter::Reviewed, 10)
        .await
        .unwrap();
    assert_eq!(ids(done), ["w0"]);
    let queue = store
        .list_emergency_uses(EmergencyFilter::Unreviewed, 10)
        .await
        .unwrap();
    assert_eq!(ids(queue), ["w1", "w2"]);
    assert_eq!(
        store
            .count_unreviewed_emergency_uses(t + Duration::hours(1))
            .await
            .unwrap(),
        2
    );
}

async fn the_permission_is_granted_and_withdrawn(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let read = |store: Arc<dyn Store>, id: UserId| async move {
        store
            .find_user_by_id(&id)
            .await
            .unwrap()
            .unwrap()
            .emergency_access
    };
    assert!(!read(Arc::clone(&store), jane.clone()).await);
    assert!(store
        .set_emergency_access(&jane, true, now())
        .await
        .unwrap());
    assert!(read(Arc::clone(&store), jane.clone()).await);
    assert!(store
        .set_emergency_access(&jane, false, now())
        .await
        .unwrap());
    assert!(!read(Arc::clone(&store), jane.clone()).await);
    assert!(!store
        .set_emergency_access(&UserId::new("nobody"), true, now())
        .await
        .unwrap());
    // Administrators are found for the emails they get.
    let admin = user_in(&store, "admin@example.com").await;
    let at = now();
    store
        .set_user_role(&admin, &clinic_auth::domain::Role::admin(), at, at)
        .await
        .unwrap();
    let admins = store.find_active_admins().await.unwrap();
    assert_eq!(admins.len(), 1);
    assert_eq!(admins[0].id, admin);
    store.set_user_disabled(&admin, Some(at), at).await.unwrap();
    assert!(store.find_active_admins().await.unwrap().is_empty());
}
