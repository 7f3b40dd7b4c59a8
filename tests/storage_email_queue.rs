//! Storage conformance of the email queue (`storage/email_queue.rs`),
//! against every backend: what the outbox sender relies on.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{Duration, Utc};
use clinic_auth::domain::{TokenHash, UserId};
use clinic_auth::storage::{
    NewOneTimeToken, NewQueuedEmail, QueuedLink, Store, StoreError, TokenPurpose,
};
use common::fixtures::{new_user, new_user_with_link, now};
use common::{fresh_store, Backend};

backend_tests!(
    due_emails_are_claimed_earliest_first_and_only_once,
    only_the_claim_holder_finishes_or_reschedules,
    a_lapsed_claim_lets_another_sender_take_over,
    concurrent_claims_never_share_a_message,
    a_link_and_its_email_are_stored_together,
    a_new_user_and_its_verification_email_are_stored_together,
    queue_stats_count_and_date_what_is_waiting,
);

fn email(id: &str, due_in: Duration) -> NewQueuedEmail {
    NewQueuedEmail {
        id: id.into(),
        kind: "password_changed".into(),
        user_id: Some(UserId::new("u1")),
        link: None,
        payload: format!("sealed {id}").into_bytes(),
        created_at: now() - Duration::minutes(1),
        due_at: now() + due_in,
    }
}

/// A message due now carrying the link whose token is `raw`.
fn carrying(id: &str, purpose: TokenPurpose, raw: &str, user_id: Option<UserId>) -> NewQueuedEmail {
    NewQueuedEmail {
        kind: "link".into(),
        user_id,
        link: Some(QueuedLink {
            purpose,
            token_hash: TokenHash::of(raw),
        }),
        ..email(id, Duration::zero())
    }
}

fn lease() -> chrono::DateTime<Utc> {
    now() + Duration::minutes(1)
}

async fn claim_ids(store: &Arc<dyn Store>, claim: &str, limit: u32) -> Vec<String> {
    store
        .claim_due_emails(claim, now(), lease(), limit)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

async fn due_emails_are_claimed_earliest_first_and_only_once(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let first_queued = email("first", Duration::seconds(-5));
    store
        .queue_email(&email("later", Duration::seconds(-1)))
        .await
        .unwrap();
    store.queue_email(&first_queued).await.unwrap();
    store
        .queue_email(&email("future", Duration::hours(1)))
        .await
        .unwrap();
    store
        .queue_email(&email("second", Duration::seconds(-3)))
        .await
        .unwrap();

    let claimed = store
        .claim_due_emails("a", now(), lease(), 2)
        .await
        .unwrap();
    let ids: Vec<&str> = claimed.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["first", "second"],
        "earliest due first, at most the limit"
    );
    let first = &claimed[0];
    assert_eq!(first.attempts, 1);
    assert_eq!(first.claim, "a");
    assert_eq!(first.kind, "password_changed");
    assert_eq!(first.user_id, Some(UserId::new("u1")));
    assert_eq!(first.payload, b"sealed first");
    assert_eq!(first.created_at, first_queued.created_at);

    // Claimed ones are leased; the future one is not due.
    assert_eq!(claim_ids(&store, "b", 10).await, ["later"]);
    assert!(claim_ids(&store, "c", 10).await.is_empty());
}

async fn only_the_claim_holder_finishes_or_reschedules(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    store
        .queue_email(&email("m1", Duration::zero()))
        .await
        .unwrap();
    store
        .queue_email(&email("m2", Duration::zero()))
        .await
        .unwrap();
    assert_eq!(claim_ids(&store, "mine", 10).await.len(), 2);

    assert!(!store.finish_email("m1", "theirs").await.unwrap());
    assert!(!store.retry_email_at("m2", "theirs", now()).await.unwrap());
    assert!(store.finish_email("m1", "mine").await.unwrap());
    assert!(!store.finish_email("m1", "mine").await.unwrap(), "gone");

    // Rescheduled: free again, due when asked, with its attempts counted.
    assert!(store
        .retry_email_at("m2", "mine", now() - Duration::seconds(1))
        .await
        .unwrap());
    assert!(
        !store.finish_email("m2", "mine").await.unwrap(),
        "released by the retry"
    );
    let again = store
        .claim_due_emails("next", now(), lease(), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id.as_str(), again[0].attempts), ("m2", 2));
    // Rescheduled into the future: not due yet.
    assert!(store
        .retry_email_at("m2", "next", now() + Duration::hours(1))
        .await
        .unwrap());
    assert!(claim_ids(&store, "later", 10).await.is_empty());
}

async fn a_lapsed_claim_lets_another_sender_take_over(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    store
        .queue_email(&email("m", Duration::zero()))
        .await
        .unwrap();
    // A sender that died: its lease has already run out.
    let lapsed = store
        .claim_due_emails("dead", now(), now() - Duration::milliseconds(1), 1)
        .await
        .unwrap();
    assert_eq!(lapsed.len(), 1);
    assert_eq!(claim_ids(&store, "alive", 1).await, ["m"]);
    assert!(
        !store.finish_email("m", "dead").await.unwrap(),
        "the old claim decides nothing"
    );
    assert!(store.finish_email("m", "alive").await.unwrap());
}

async fn concurrent_claims_never_share_a_message(backend: Backend) {
    const MESSAGES: usize = 30;
    let (store, _guard) = fresh_store(backend).await;
    for i in 0..MESSAGES {
        store
            .queue_email(&email(&format!("m{i:02}"), Duration::zero()))
            .await
            .unwrap();
    }
    let senders: Vec<_> = (0..8)
        .map(|s| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = claim_ids(&store, &format!("sender{s}"), 3).await;
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for sender in senders {
        all.extend(sender.await.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), MESSAGES, "claimed: {all:?}");
    assert_eq!(distinct.len(), MESSAGES, "one sender per message");
}

async fn a_link_and_its_email_are_stored_together(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let user = store
        .create_user(&new_user("jane@example.com"))
        .await
        .unwrap();
    let purpose = TokenPurpose::PasswordReset;
    let token = |raw: &str| NewOneTimeToken {
        user_id: user.id.clone(),
        token_hash: TokenHash::of(raw),
        expires_at: now() + Duration::minutes(30),
        created_at: now(),
    };
    let linked = |id: &str, raw: &str| carrying(id, purpose, raw, Some(user.id.clone()));
    store
        .replace_link_and_queue(purpose, &token("first"), &linked("e1", "first"))
        .await
        .unwrap();
    let owner = store
        .find_one_time_token(purpose, &TokenHash::of("first"), now())
        .await
        .unwrap();
    assert_eq!(owner, Some(user.id.clone()));
    let claimed = store
        .claim_due_emails("s", now(), lease(), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].link,
        Some(QueuedLink {
            purpose,
            token_hash: TokenHash::of("first"),
        })
    );

    // A message that cannot be stored (its id is taken) is an error, and
    // then no link goes out without its token: on a store with
    // transactions the token is not replaced either.
    let err = store
        .replace_link_and_queue(purpose, &token("second"), &linked("e1", "second"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    let second = store
        .find_one_time_token(purpose, &TokenHash::of("second"), now())
        .await
        .unwrap();
    if backend == Backend::Sqlite {
        assert_eq!(second, None, "one transaction: nothing stored");
        let first = store
            .find_one_time_token(purpose, &TokenHash::of("first"), now())
            .await
            .unwrap();
        assert_eq!(first, Some(user.id.clone()), "the queued link still works");
    }
    // The store still takes writes (no transaction left open).
    store
        .queue_email(&email("e2", Duration::zero()))
        .await
        .unwrap();
}

async fn a_new_user_and_its_verification_email_are_stored_together(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let purpose = TokenPurpose::EmailVerification;
    // No user id yet: the store files it under the new user.
    let verification = |id: &str, raw: &str| carrying(id, purpose, raw, None);
    let jane = store
        .create_user_and_queue(
            &new_user_with_link("jane@example.com", "link"),
            &verification("v1", "link"),
        )
        .await
        .unwrap();
    let owner = store
        .find_one_time_token(purpose, &TokenHash::of("link"), now())
        .await
        .unwrap();
    assert_eq!(owner, Some(jane.id.clone()));
    let claimed = store
        .claim_due_emails("s", now(), lease(), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].user_id, Some(jane.id.clone()));

    // A taken address queues nothing.
    let err = store
        .create_user_and_queue(
            &new_user_with_link("jane@example.com", "other"),
            &verification("v2", "other"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(store.email_queue_stats().await.unwrap().depth, 1);
}

async fn queue_stats_count_and_date_what_is_waiting(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let empty = store.email_queue_stats().await.unwrap();
    assert_eq!(
        (empty.depth, empty.oldest_created_at, empty.next_due_at),
        (0, None, None)
    );
    let old = NewQueuedEmail {
        created_at: now() - Duration::hours(2),
        ..email("old", Duration::minutes(10))
    };
    let soon = email("soon", Duration::minutes(1));
    store.queue_email(&old).await.unwrap();
    store.queue_email(&soon).await.unwrap();
    let stats = store.email_queue_stats().await.unwrap();
    assert_eq!(stats.depth, 2);
    assert_eq!(stats.oldest_created_at, Some(old.created_at));
    assert_eq!(stats.next_due_at, Some(soon.due_at));
}
