//! Storage conformance: the contract in `storage/mod.rs`, checked against
//! every backend with the same tests.

mod common;

use std::sync::Arc;

use chrono::Duration;
use clinic_auth::domain::{EmailAddress, PasswordHash, PersonName, Role, TokenHash, UserId};
use clinic_auth::storage::{
    NewOneTimeToken, NewRefreshToken, NewUser, Rotated, Rotation, Store, StoreError, TokenPurpose,
    UserQuery, WebSessionRecord,
};
use common::fixtures::{new_user, new_user_with_link, now};
use common::{fresh_store, Backend};

backend_tests!(
    users_round_trip,
    duplicate_email_is_a_conflict,
    a_user_is_created_with_its_first_link,
    unknown_and_malformed_ids_are_none,
    password_hash_can_be_replaced,
    users_outside_the_clinics_roles_are_counted,
    refresh_rotation_retires_the_old_token,
    rotation_refuses_revoked_expired_and_unknown,
    concurrent_rotation_has_one_winner,
    concurrent_rotations_of_many_tokens_each_get_their_child,
    a_rotation_whose_child_collides_retires_nothing,
    revocation_by_token_and_by_user,
    one_time_tokens_are_single_use_and_expire,
    newer_one_time_token_replaces_older,
    purge_removes_only_expired_tokens,
    ping_answers,
    families_are_listed_and_revoked_one_at_a_time,
    revoke_all_can_keep_one_family,
    web_sessions_round_trip_and_expire,
    web_sessions_are_listed_and_deleted_per_user,
    replay_outside_grace_revokes_the_whole_family,
    replay_inside_grace_adds_a_sibling_to_a_live_family,
    one_time_token_purposes_never_mix,
    email_can_be_marked_verified,
    login_failures_are_counted_locked_and_cleared,
    concurrent_login_failures_are_all_counted,
    purge_forgets_idle_login_throttles,
    a_retired_token_gets_one_grace_sibling,
    concurrent_grace_replays_get_one_sibling,
    concurrent_failures_after_an_expired_window_are_all_counted,
    web_sessions_of_one_family_are_deleted,
    users_are_listed_filtered_and_paged_by_email,
    a_user_is_anonymised_keeping_its_id,
    invitations_are_one_per_address_and_listed,
    invitation_links_expire_renew_and_are_taken_once,
    concurrent_invitation_accepts_have_one_winner,
);

fn refresh(user: &UserId, jti: &str, family: &str, expires_in: Duration) -> NewRefreshToken {
    NewRefreshToken {
        user_id: user.clone(),
        jti: jti.into(),
        token_hash: TokenHash::of(jti),
        family_id: family.into(),
        user_agent: Some("Mozilla/5.0 (test)".into()),
        ip_address: Some("127.0.0.1".into()),
        expires_at: now() + expires_in,
        created_at: now(),
    }
}

async fn user_in(store: &Arc<dyn Store>, email: &str) -> UserId {
    store.create_user(&new_user(email)).await.unwrap().id
}

/// Rotates the token with `hash` into `child` now, which must succeed.
async fn rotate_active(
    store: &Arc<dyn Store>,
    hash: &TokenHash,
    child: &NewRefreshToken,
) -> Rotated {
    let rotation = store
        .rotate_refresh_token(hash, now(), Duration::zero(), child)
        .await
        .unwrap();
    let Rotation::Rotated(rotated) = rotation else {
        panic!("{}: expected a rotation, got {rotation:?}", child.jti);
    };
    rotated
}

async fn users_round_trip(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let input = new_user("jane@example.com");
    let created = store.create_user(&input).await.unwrap();
    assert_eq!(created.email.as_str(), "jane@example.com");
    assert_eq!(created.role, Role::parse("doctor").unwrap());
    assert!(!created.verified);
    assert_eq!(created.created_at, input.created_at);
    assert_eq!(created.updated_at, input.created_at);
    let by_email = store
        .find_user_by_email(&input.email)
        .await
        .unwrap()
        .unwrap();
    let by_id = store.find_user_by_id(&created.id).await.unwrap().unwrap();
    for found in [&by_email, &by_id] {
        assert_eq!(found.id, created.id);
        assert_eq!(found.name.as_str(), "Dr Jane Smith");
        assert_eq!(found.password_hash.expose(), input.password_hash.expose());
        assert_eq!(found.created_at, input.created_at);
    }
    let other = store
        .create_user(&new_user("john@example.com"))
        .await
        .unwrap();
    assert_ne!(other.id, created.id, "ids are unique");
}

async fn duplicate_email_is_a_conflict(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    store
        .create_user(&new_user("jane@example.com"))
        .await
        .unwrap();
    let err = store
        .create_user(&new_user("jane@example.com"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
}

async fn a_user_is_created_with_its_first_link(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let purpose = TokenPurpose::EmailVerification;
    let jane = store
        .create_user(&new_user_with_link("jane@example.com", "first"))
        .await
        .unwrap();
    assert_eq!(jane.email.as_str(), "jane@example.com");
    assert!(!jane.verified);
    let by_email = store
        .find_user_by_email(&jane.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email.id, jane.id);
    let first = TokenHash::of("first");
    let owner = store.find_one_time_token(purpose, &first, now()).await;
    assert_eq!(owner.unwrap(), Some(jane.id.clone()));
    let other = TokenPurpose::PasswordReset;
    let none = store.find_one_time_token(other, &first, now()).await;
    assert_eq!(none.unwrap(), None, "only as a verification link");

    // A taken email stores nothing: neither a user nor its link.
    let err = store
        .create_user(&new_user_with_link("jane@example.com", "second"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    let second = TokenHash::of("second");
    let none = store.find_one_time_token(purpose, &second, now()).await;
    assert_eq!(none.unwrap(), None);
    let owner = store.find_one_time_token(purpose, &first, now()).await;
    assert_eq!(
        owner.unwrap(),
        Some(jane.id.clone()),
        "the first link lives"
    );

    // The store still takes writes after the refused one (no transaction
    // was left open on SQLite's writer).
    let john = store
        .create_user(&new_user_with_link("john@example.com", "third"))
        .await
        .unwrap();
    assert_ne!(john.id, jane.id);
    store.ping().await.unwrap();
}

async fn unknown_and_malformed_ids_are_none(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    for id in [
        "",
        "nope",
        "ffffffffffffffffffffffff",
        "0193a1b2c3d4e5f60718293a4b5c6d7e",
    ] {
        assert!(
            store
                .find_user_by_id(&UserId::new(id))
                .await
                .unwrap()
                .is_none(),
            "{id}"
        );
        assert!(!store
            .set_password_hash(&UserId::new(id), &PasswordHash::new("x".into()), now())
            .await
            .unwrap());
    }
    let nobody = EmailAddress::parse("nobody@example.com").unwrap();
    assert!(store.find_user_by_email(&nobody).await.unwrap().is_none());
}

async fn users_outside_the_clinics_roles_are_counted(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let role = |name: &str| Role::parse(name).unwrap();
    let known = [Role::admin(), role("doctor"), role("nurse")];
    assert_eq!(store.count_users_outside_roles(&known).await.unwrap(), 0);
    let jane = user_in(&store, "jane@example.com").await;
    let tom = user_in(&store, "tom@example.com").await;
    user_in(&store, "ann@example.com").await;
    for (id, name) in [(&jane, "pharmacist"), (&tom, "nurse")] {
        assert!(store
            .set_user_role(id, &role(name), now(), now())
            .await
            .unwrap());
    }
    assert_eq!(store.count_users_outside_roles(&known).await.unwrap(), 1);
    assert_eq!(
        store.count_users_outside_roles(&known[..2]).await.unwrap(),
        2
    );
    assert_eq!(store.count_users_outside_roles(&[]).await.unwrap(), 3);
}

async fn password_hash_can_be_replaced(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let id = user_in(&store, "jane@example.com").await;
    let later = now() + Duration::seconds(5);
    assert!(store
        .set_password_hash(&id, &PasswordHash::new("$argon2id$new".into()), later)
        .await
        .unwrap());
    let user = store.find_user_by_id(&id).await.unwrap().unwrap();
    assert_eq!(user.password_hash.expose(), "$argon2id$new");
    assert_eq!(user.updated_at, later);
}

async fn refresh_rotation_retires_the_old_token(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let user = user_in(&store, "jane@example.com").await;
    let first = refresh(&user, "jti-1", "fam-1", Duration::days(7));
    store.insert_refresh_token(&first).await.unwrap();
    let stored = store
        .find_refresh_token(&first.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.revoked && stored.replaced_by.is_none() && stored.revoked_at.is_none());
    assert_eq!(stored.user_agent.as_deref(), Some("Mozilla/5.0 (test)"));
    assert_eq!(stored.ip_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(stored.expires_at, first.expires_at);

    let second = refresh(&user, "jti-2", "fam-1", Duration::days(7));
    let at = now();
    let Rotation::Rotated(Rotated { retired, owner }) = store
        .rotate_refresh_token(&first.token_hash, at, Duration::zero(), &second)
        .await
        .unwrap()
    else {
        panic!("an active token rotates");
    };
    assert_eq!(retired.jti, "jti-1");
    assert_eq!(owner.expect("the owner is read back").id, user);
    assert_eq!(retired.user_id, user);
    assert_eq!(retired.family_id, "fam-1");
    let old = store
        .find_refresh_token(&first.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert!(old.revoked);
    assert_eq!(old.replaced_by.as_deref(), Some("jti-2"));
    assert_eq!(old.revoked_at, Some(at));
    let new = store
        .find_refresh_token(&second.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert!(!new.revoked);
    assert_eq!(new.family_id, "fam-1");

    let dup = store.insert_refresh_token(&second).await.unwrap_err();
    assert!(matches!(dup, StoreError::Conflict), "{dup:?}");
}

async fn rotation_refuses_revoked_expired_and_unknown(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let user = user_in(&store, "jane@example.com").await;
    let expired = refresh(&user, "old", "fam", Duration::seconds(-1));
    let revoked = refresh(&user, "rev", "fam", Duration::days(1));
    store.insert_refresh_token(&expired).await.unwrap();
    store.insert_refresh_token(&revoked).await.unwrap();
    assert!(store
        .revoke_refresh_token(&revoked.token_hash, now())
        .await
        .unwrap());
    for (label, hash) in [
        ("expired", expired.token_hash.clone()),
        ("revoked", revoked.token_hash.clone()),
        ("unknown", TokenHash::of("never stored")),
    ] {
        let replacement = refresh(&user, &format!("next-{label}"), "fam", Duration::days(1));
        assert!(
            matches!(
                store
                    .rotate_refresh_token(&hash, now(), Duration::seconds(5), &replacement)
                    .await
                    .unwrap(),
                Rotation::Rejected
            ),
            "{label}"
        );
        assert!(
            store
                .find_refresh_token(&replacement.token_hash)
                .await
                .unwrap()
                .is_none(),
            "{label}: no replacement stored"
        );
    }
}

async fn concurrent_rotation_has_one_winner(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let user = user_in(&store, "jane@example.com").await;
    let token = refresh(&user, "contested", "fam", Duration::days(1));
    store.insert_refresh_token(&token).await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = Arc::clone(&store);
            let hash = token.token_hash.clone();
            let next = refresh(&user, &format!("child-{i}"), "fam", Duration::days(1));
            tokio::spawn(async move {
                matches!(
                    store
                        .rotate_refresh_token(&hash, now(), Duration::zero(), &next)
                        .await
                        .unwrap(),
                    Rotation::Rotated(_)
                )
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
}

async fn revocation_by_token_and_by_user(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let john = user_in(&store, "john@example.com").await;
    let tokens = [
        refresh(&jane, "j1", "fa", Duration::days(1)),
        refresh(&jane, "j2", "fb", Duration::days(1)),
        refresh(&john, "k1", "fc", Duration::days(1)),
    ];
    for t in &tokens {
        store.insert_refresh_token(t).await.unwrap();
    }
    assert!(store
        .revoke_refresh_token(&tokens[0].token_hash, now())
        .await
        .unwrap());
    assert!(
        !store
            .revoke_refresh_token(&tokens[0].token_hash, now())
            .await
            .unwrap(),
        "already revoked"
    );
    assert!(!store
        .revoke_refresh_token(&TokenHash::of("unknown"), now())
        .await
        .unwrap());
    assert_eq!(
        store
            .revoke_user_refresh_tokens(&jane, None, now())
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .find_refresh_token(&tokens[1].token_hash)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(
        !store
            .find_refresh_token(&tokens[2].token_hash)
            .await
            .unwrap()
            .unwrap()
            .revoked,
        "other users untouched"
    );
}

const PURPOSES: [TokenPurpose; 3] = [
    TokenPurpose::PasswordReset,
    TokenPurpose::EmailVerification,
    TokenPurpose::MfaChallenge,
];

fn one_time(user: &UserId, raw: &str, expires_in: Duration) -> NewOneTimeToken {
    NewOneTimeToken {
        user_id: user.clone(),
        token_hash: TokenHash::of(raw),
        expires_at: now() + expires_in,
        created_at: now(),
    }
}

async fn one_time_tokens_are_single_use_and_expire(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let john = user_in(&store, "john@example.com").await;
    for purpose in PURPOSES {
        let live = one_time(&jane, "live", Duration::minutes(30));
        store.replace_one_time_token(purpose, &live).await.unwrap();
        assert_eq!(
            store
                .find_one_time_token(purpose, &live.token_hash, now())
                .await
                .unwrap(),
            Some(jane.clone())
        );
        assert_eq!(
            store
                .find_one_time_token(purpose, &live.token_hash, now())
                .await
                .unwrap(),
            Some(jane.clone()),
            "peeking does not consume"
        );
        // Judged by the time given, not by a TTL monitor.
        let later = now() + Duration::minutes(31);
        assert_eq!(
            store
                .find_one_time_token(purpose, &live.token_hash, later)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .consume_one_time_token(purpose, &live.token_hash, now())
                .await
                .unwrap(),
            Some(jane.clone())
        );
        assert_eq!(
            store
                .consume_one_time_token(purpose, &live.token_hash, now())
                .await
                .unwrap(),
            None,
            "single use"
        );
        assert_eq!(
            store
                .find_one_time_token(purpose, &live.token_hash, now())
                .await
                .unwrap(),
            None
        );

        let stale = one_time(&john, "stale", Duration::minutes(30));
        store.replace_one_time_token(purpose, &stale).await.unwrap();
        assert_eq!(
            store
                .consume_one_time_token(purpose, &stale.token_hash, later)
                .await
                .unwrap(),
            None,
            "expired"
        );

        let contested = one_time(&john, "contested", Duration::minutes(30));
        store
            .replace_one_time_token(purpose, &contested)
            .await
            .unwrap();
        let attempts = (0..8).map(|_| {
            let store = Arc::clone(&store);
            let hash = contested.token_hash.clone();
            tokio::spawn(async move {
                store
                    .consume_one_time_token(purpose, &hash, now())
                    .await
                    .unwrap()
                    .is_some()
            })
        });
        let wins = futures::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|r| *r.as_ref().unwrap())
            .count();
        assert_eq!(wins, 1);

        let mine = one_time(&jane, "mine", Duration::minutes(30));
        store.replace_one_time_token(purpose, &mine).await.unwrap();
        store
            .delete_user_one_time_tokens(purpose, &jane)
            .await
            .unwrap();
        assert_eq!(
            store
                .find_one_time_token(purpose, &mine.token_hash, now())
                .await
                .unwrap(),
            None
        );
    }
}

async fn newer_one_time_token_replaces_older(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let john = user_in(&store, "john@example.com").await;
    for purpose in PURPOSES {
        let older = one_time(&jane, "older", Duration::minutes(30));
        let newer = one_time(&jane, "newer", Duration::minutes(30));
        let johns = one_time(&john, "johns", Duration::minutes(30));
        store.replace_one_time_token(purpose, &older).await.unwrap();
        store.replace_one_time_token(purpose, &johns).await.unwrap();
        store.replace_one_time_token(purpose, &newer).await.unwrap();
        assert_eq!(
            store
                .find_one_time_token(purpose, &older.token_hash, now())
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .find_one_time_token(purpose, &newer.token_hash, now())
                .await
                .unwrap(),
            Some(jane.clone())
        );
        assert_eq!(
            store
                .find_one_time_token(purpose, &johns.token_hash, now())
                .await
                .unwrap(),
            Some(john.clone()),
            "other users untouched"
        );
    }
}

async fn purge_removes_only_expired_tokens(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let live = refresh(&jane, "live", "f1", Duration::days(1));
    let dead = refresh(&jane, "dead", "f2", Duration::seconds(1));
    store.insert_refresh_token(&live).await.unwrap();
    store.insert_refresh_token(&dead).await.unwrap();
    store
        .purge_expired(now() + Duration::hours(1), now() - Duration::days(1))
        .await
        .unwrap();
    assert!(store
        .find_refresh_token(&live.token_hash)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .find_refresh_token(&dead.token_hash)
        .await
        .unwrap()
        .is_none());
}

async fn ping_answers(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    store.ping().await.unwrap();
    assert!(!store.backend().is_empty());
}

async fn families_are_listed_and_revoked_one_at_a_time(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let john = user_in(&store, "john@example.com").await;
    let a1 = refresh(&jane, "a1", "fam-a", Duration::days(1));
    let b1 = refresh(&jane, "b1", "fam-b", Duration::days(1));
    let gone = refresh(&jane, "gone", "fam-c", Duration::seconds(-1));
    let johns = refresh(&john, "k1", "fam-k", Duration::days(1));
    for t in [&a1, &b1, &gone, &johns] {
        store.insert_refresh_token(t).await.unwrap();
    }
    let a2 = refresh(&jane, "a2", "fam-a", Duration::days(1));
    assert!(matches!(
        store
            .rotate_refresh_token(&a1.token_hash, now(), Duration::zero(), &a2)
            .await
            .unwrap(),
        Rotation::Rotated(_)
    ));

    let live = store.list_user_refresh_tokens(&jane, now()).await.unwrap();
    let mut jtis: Vec<&str> = live.iter().map(|t| t.jti.as_str()).collect();
    jtis.sort_unstable();
    assert_eq!(
        jtis,
        ["a2", "b1"],
        "active tokens only, expired and rotated ones left out"
    );

    assert_eq!(
        store
            .revoke_refresh_family(&john, "fam-a", now())
            .await
            .unwrap(),
        0,
        "not john's"
    );
    assert_eq!(
        store
            .revoke_refresh_family(&jane, "fam-a", now())
            .await
            .unwrap(),
        1
    );
    let live = store.list_user_refresh_tokens(&jane, now()).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].jti, "b1");
    assert!(
        !store
            .find_refresh_token(&johns.token_hash)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
}

async fn revoke_all_can_keep_one_family(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    for (jti, fam) in [("x1", "keep"), ("y1", "other"), ("z1", "third")] {
        store
            .insert_refresh_token(&refresh(&jane, jti, fam, Duration::days(1)))
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .revoke_user_refresh_tokens(&jane, Some("keep"), now())
            .await
            .unwrap(),
        2
    );
    let live = store.list_user_refresh_tokens(&jane, now()).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].family_id, "keep");
}

fn web_session(id: &str, user: Option<&UserId>, expires_in: Duration) -> WebSessionRecord {
    WebSessionRecord {
        id_hash: TokenHash::of(id),
        user_id: user.cloned(),
        data: format!("{{\"session\":\"{id}\"}}"),
        user_agent: Some("Mozilla/5.0 (front desk)".into()),
        ip_address: Some("10.0.0.7".into()),
        refresh_family: Some(format!("fam-{id}")),
        created_at: now(),
        last_used_at: now(),
        expires_at: now() + expires_in,
    }
}

async fn web_sessions_round_trip_and_expire(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let anonymous = web_session("anon", None, Duration::minutes(15));
    store.insert_web_session(&anonymous).await.unwrap();
    let dup = store.insert_web_session(&anonymous).await.unwrap_err();
    assert!(matches!(dup, StoreError::Conflict), "{dup:?}");
    let loaded = store
        .load_web_session(&anonymous.id_hash, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.data, anonymous.data);
    assert_eq!(loaded.user_id, None);

    // Signing in updates the same session; created_at stays.
    let mut signed_in = web_session("anon", Some(&jane), Duration::minutes(15));
    signed_in.refresh_family = Some("fam-signed-in".into());
    signed_in.created_at = now() + Duration::minutes(5);
    signed_in.last_used_at = now() + Duration::minutes(5);
    assert!(store.update_web_session(&signed_in, now()).await.unwrap());
    let loaded = store
        .load_web_session(&anonymous.id_hash, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.user_id.as_ref(), Some(&jane));
    assert_eq!(loaded.created_at, anonymous.created_at);
    assert_eq!(loaded.last_used_at, signed_in.last_used_at);
    assert_eq!(
        loaded.user_agent.as_deref(),
        Some("Mozilla/5.0 (front desk)")
    );
    assert_eq!(loaded.ip_address.as_deref(), Some("10.0.0.7"));
    assert_eq!(loaded.refresh_family.as_deref(), Some("fam-signed-in"));

    // An update never creates: a session that is not stored stays absent.
    let fresh = web_session("fresh", Some(&jane), Duration::minutes(15));
    let stored_at = |at| {
        let store = &store;
        let hash = &fresh.id_hash;
        async move { store.load_web_session(hash, at).await.unwrap().is_some() }
    };
    assert!(!store.update_web_session(&fresh, now()).await.unwrap());
    assert!(!stored_at(now()).await);
    // Expiry is judged by the time given.
    store.insert_web_session(&fresh).await.unwrap();
    assert!(stored_at(now()).await);
    assert!(!stored_at(now() + Duration::minutes(16)).await);
    // An expired session is not brought back by a late update either.
    assert!(!store
        .update_web_session(&fresh, now() + Duration::minutes(16))
        .await
        .unwrap());

    assert!(store.delete_web_session(&fresh.id_hash).await.unwrap());
    assert!(!store.delete_web_session(&fresh.id_hash).await.unwrap());
    // A deleted session stays deleted, whatever a late save says.
    assert!(!store.update_web_session(&fresh, now()).await.unwrap());
    assert!(!stored_at(now()).await);

    let stale = web_session("stale", None, Duration::seconds(1));
    store.insert_web_session(&stale).await.unwrap();
    store
        .purge_expired(now() + Duration::minutes(1), now() - Duration::days(1))
        .await
        .unwrap();
    assert!(store
        .load_web_session(&stale.id_hash, now())
        .await
        .unwrap()
        .is_none());
    assert!(
        store
            .load_web_session(&anonymous.id_hash, now())
            .await
            .unwrap()
            .is_some(),
        "live one kept"
    );
}

async fn web_sessions_are_listed_and_deleted_per_user(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let john = user_in(&store, "john@example.com").await;
    let mut older = web_session("older", Some(&jane), Duration::minutes(15));
    older.last_used_at = now() - Duration::minutes(3);
    let newer = web_session("newer", Some(&jane), Duration::minutes(15));
    let expired = web_session("expired", Some(&jane), Duration::seconds(-5));
    let johns = web_session("johns", Some(&john), Duration::minutes(15));
    for s in [&older, &newer, &expired, &johns] {
        store.insert_web_session(s).await.unwrap();
    }
    let listed = store.list_user_web_sessions(&jane, now()).await.unwrap();
    let hashes: Vec<&TokenHash> = listed.iter().map(|s| &s.id_hash).collect();
    assert_eq!(
        hashes,
        [&newer.id_hash, &older.id_hash],
        "live ones, most recently used first"
    );

    assert!(
        store
            .delete_user_web_sessions(&jane, Some(&newer.id_hash))
            .await
            .unwrap()
            >= 1
    );
    let listed = store.list_user_web_sessions(&jane, now()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id_hash, newer.id_hash);
    store.delete_user_web_sessions(&jane, None).await.unwrap();
    assert!(store
        .list_user_web_sessions(&jane, now())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .list_user_web_sessions(&john, now())
            .await
            .unwrap()
            .len(),
        1,
        "john untouched"
    );
}

async fn replay_outside_grace_revokes_the_whole_family(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let a1 = refresh(&jane, "a1", "fam-a", Duration::days(1));
    let other = refresh(&jane, "b1", "fam-b", Duration::days(1));
    store.insert_refresh_token(&a1).await.unwrap();
    store.insert_refresh_token(&other).await.unwrap();
    let t0 = now();
    let grace = Duration::seconds(5);
    let a2 = refresh(&jane, "a2", "fam-a", Duration::days(1));
    let a3 = refresh(&jane, "a3", "fam-a", Duration::days(1));
    assert!(matches!(
        store
            .rotate_refresh_token(&a1.token_hash, t0, grace, &a2)
            .await
            .unwrap(),
        Rotation::Rotated(_)
    ));
    assert!(matches!(
        store
            .rotate_refresh_token(&a2.token_hash, t0, grace, &a3)
            .await
            .unwrap(),
        Rotation::Rotated(_)
    ));
    // Six seconds later the first token comes back.
    let replay = refresh(&jane, "a-replay", "fam-a", Duration::days(1));
    match store
        .rotate_refresh_token(&a1.token_hash, t0 + Duration::seconds(6), grace, &replay)
        .await
        .unwrap()
    {
        Rotation::ReuseDetected { token, revoked } => {
            assert_eq!(token.jti, "a1");
            assert_eq!(token.family_id, "fam-a");
            assert_eq!(revoked, 1, "a3 was the family's only live token");
        }
        other => panic!("expected reuse detection, got {other:?}"),
    }
    for (hash, label) in [
        (&a3.token_hash, "descendant"),
        (&replay.token_hash, "replay"),
    ] {
        let found = store.find_refresh_token(hash).await.unwrap();
        assert!(found.is_none_or(|t| t.revoked), "{label} is dead");
    }
    assert!(
        !store
            .find_refresh_token(&other.token_hash)
            .await
            .unwrap()
            .unwrap()
            .revoked,
        "other families untouched"
    );
    // A second replay finds nothing left to revoke.
    assert!(matches!(
        store
            .rotate_refresh_token(&a2.token_hash, t0 + Duration::seconds(7), grace, &replay)
            .await
            .unwrap(),
        Rotation::ReuseDetected { revoked: 0, .. }
    ));
}

async fn replay_inside_grace_adds_a_sibling_to_a_live_family(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let a1 = refresh(&jane, "a1", "fam-a", Duration::days(1));
    store.insert_refresh_token(&a1).await.unwrap();
    let t0 = now();
    let grace = Duration::seconds(5);
    let a2 = refresh(&jane, "a2", "fam-a", Duration::days(1));
    store
        .rotate_refresh_token(&a1.token_hash, t0, grace, &a2)
        .await
        .unwrap();
    let sibling = refresh(&jane, "a2-sibling", "fam-a", Duration::days(1));
    match store
        .rotate_refresh_token(&a1.token_hash, t0 + Duration::seconds(2), grace, &sibling)
        .await
        .unwrap()
    {
        Rotation::GraceSibling(rotated) => {
            assert_eq!(rotated.retired.jti, "a1");
            assert_eq!(rotated.owner.unwrap().id, jane);
        }
        other => panic!("expected a sibling, got {other:?}"),
    }
    for hash in [&a2.token_hash, &sibling.token_hash] {
        let t = store.find_refresh_token(hash).await.unwrap().unwrap();
        assert!(!t.revoked && t.family_id == "fam-a");
    }
    // With no grace the same replay is a theft.
    let strict = refresh(&jane, "a2-strict", "fam-a", Duration::days(1));
    assert!(matches!(
        store
            .rotate_refresh_token(
                &a1.token_hash,
                t0 + Duration::seconds(2),
                Duration::zero(),
                &strict
            )
            .await
            .unwrap(),
        Rotation::ReuseDetected { revoked: 2, .. }
    ));
    // A family with nothing live left (here: signed out) gets no sibling,
    // even in the grace.
    let b1 = refresh(&jane, "b1", "fam-b", Duration::days(1));
    store.insert_refresh_token(&b1).await.unwrap();
    let b2 = refresh(&jane, "b2", "fam-b", Duration::days(1));
    store
        .rotate_refresh_token(&b1.token_hash, t0, grace, &b2)
        .await
        .unwrap();
    store
        .revoke_refresh_family(&jane, "fam-b", t0)
        .await
        .unwrap();
    let late = refresh(&jane, "b2-late", "fam-b", Duration::days(1));
    assert!(matches!(
        store
            .rotate_refresh_token(&b1.token_hash, t0 + Duration::seconds(3), grace, &late)
            .await
            .unwrap(),
        Rotation::Rejected
    ));
    assert!(store
        .find_refresh_token(&late.token_hash)
        .await
        .unwrap()
        .is_none());
}

async fn one_time_token_purposes_never_mix(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let reset = one_time(&jane, "reset-link", Duration::minutes(30));
    let verify = one_time(&jane, "verify-link", Duration::hours(24));
    store
        .replace_one_time_token(TokenPurpose::PasswordReset, &reset)
        .await
        .unwrap();
    store
        .replace_one_time_token(TokenPurpose::EmailVerification, &verify)
        .await
        .unwrap();
    // Replacing one purpose's token leaves the other's alone.
    assert_eq!(
        store
            .find_one_time_token(TokenPurpose::PasswordReset, &reset.token_hash, now())
            .await
            .unwrap(),
        Some(jane.clone())
    );
    assert_eq!(
        store
            .consume_one_time_token(TokenPurpose::EmailVerification, &reset.token_hash, now())
            .await
            .unwrap(),
        None,
        "a reset link does not verify"
    );
    assert_eq!(
        store
            .consume_one_time_token(TokenPurpose::PasswordReset, &verify.token_hash, now())
            .await
            .unwrap(),
        None,
        "a verification link does not reset"
    );
    store
        .delete_user_one_time_tokens(TokenPurpose::PasswordReset, &jane)
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_one_time_token(TokenPurpose::EmailVerification, &verify.token_hash, now())
            .await
            .unwrap(),
        Some(jane)
    );
}

async fn email_can_be_marked_verified(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    assert!(
        !store
            .find_user_by_id(&jane)
            .await
            .unwrap()
            .unwrap()
            .verified
    );
    let later = now() + Duration::seconds(3);
    assert!(store.set_verified(&jane, later).await.unwrap());
    let user = store.find_user_by_id(&jane).await.unwrap().unwrap();
    assert!(user.verified);
    assert_eq!(user.updated_at, later);
    assert!(!store
        .set_verified(&UserId::new("nobody"), later)
        .await
        .unwrap());
}

async fn login_failures_are_counted_locked_and_cleared(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let key = TokenHash::of("login-throttle:jane@example.com");
    let other = TokenHash::of("login-throttle:john@example.com");
    assert_eq!(store.login_throttle(&key).await.unwrap(), None);
    let t0 = now();
    let window = Duration::minutes(15);
    for n in 1..=3 {
        let state = store
            .add_login_failure(
                &key,
                t0 + Duration::seconds(n),
                t0 + Duration::seconds(n) - window,
            )
            .await
            .unwrap();
        assert_eq!(state.failures, u32::try_from(n).unwrap());
        assert_eq!(state.window_started_at, t0 + Duration::seconds(1));
        assert_eq!((state.locked_until, state.lock_count), (None, 0));
    }
    store
        .add_login_failure(&other, t0, t0 - window)
        .await
        .unwrap();

    // Lock: only one of two racing lockers wins.
    let until = t0 + Duration::minutes(1);
    assert!(store.lock_login(&key, until, t0).await.unwrap());
    assert!(!store.lock_login(&key, until, t0).await.unwrap());
    let locked = store.login_throttle(&key).await.unwrap().unwrap();
    assert_eq!(locked.locked_until, Some(until));
    assert_eq!((locked.failures, locked.lock_count), (0, 1));

    // After the lock, a new window: the lock count is remembered.
    let after = until + Duration::seconds(1);
    let state = store
        .add_login_failure(&key, after, after - window)
        .await
        .unwrap();
    assert_eq!((state.failures, state.lock_count), (1, 1));
    assert!(store
        .lock_login(&key, after + Duration::minutes(2), after)
        .await
        .unwrap());
    assert_eq!(
        store
            .login_throttle(&key)
            .await
            .unwrap()
            .unwrap()
            .lock_count,
        2
    );

    // A window that ran out restarts the count at one.
    let much_later = after + Duration::hours(1);
    let state = store
        .add_login_failure(&key, much_later, much_later - window)
        .await
        .unwrap();
    assert_eq!(state.failures, 1);
    assert_eq!(state.window_started_at, much_later);

    store.clear_login_throttle(&key).await.unwrap();
    assert_eq!(store.login_throttle(&key).await.unwrap(), None);
    assert_eq!(
        store
            .login_throttle(&other)
            .await
            .unwrap()
            .unwrap()
            .failures,
        1,
        "other keys untouched"
    );
}

/// `n` failures of `key` at once, each in a 15-minute window ending at its
/// own now; the failure counts they saw.
async fn concurrent_failures(store: &Arc<dyn Store>, key: &TokenHash, n: usize) -> Vec<u32> {
    let attempts = (0..n).map(|_| {
        let store = Arc::clone(store);
        let key = key.clone();
        tokio::spawn(async move {
            let at = now();
            store
                .add_login_failure(&key, at, at - Duration::minutes(15))
                .await
                .unwrap()
                .failures
        })
    });
    futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

async fn concurrent_login_failures_are_all_counted(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let key = TokenHash::of("login-throttle:contested");
    let t0 = now();
    store
        .add_login_failure(&key, t0, t0 - Duration::minutes(15))
        .await
        .unwrap();
    concurrent_failures(&store, &key, 10).await;
    assert_eq!(
        store.login_throttle(&key).await.unwrap().unwrap().failures,
        11
    );
}

async fn purge_forgets_idle_login_throttles(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let idle = TokenHash::of("login-throttle:idle");
    let recent = TokenHash::of("login-throttle:recent");
    let locked = TokenHash::of("login-throttle:locked");
    let t0 = now();
    let old = t0 - Duration::days(2);
    store
        .add_login_failure(&idle, old, old - Duration::minutes(15))
        .await
        .unwrap();
    store
        .add_login_failure(&recent, t0, t0 - Duration::minutes(15))
        .await
        .unwrap();
    store
        .add_login_failure(&locked, old, old - Duration::minutes(15))
        .await
        .unwrap();
    store
        .lock_login(&locked, t0 + Duration::hours(1), old)
        .await
        .unwrap();
    store
        .purge_expired(t0, t0 - Duration::days(1))
        .await
        .unwrap();
    assert_eq!(store.login_throttle(&idle).await.unwrap(), None);
    assert!(store.login_throttle(&recent).await.unwrap().is_some());
    assert!(
        store.login_throttle(&locked).await.unwrap().is_some(),
        "a lock still running is kept"
    );
}

async fn concurrent_rotations_of_many_tokens_each_get_their_child(backend: Backend) {
    // SQLite rotates whatever is queued as one batch: each caller must get
    // its own retired token back and its own child stored.
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let john = user_in(&store, "john@example.com").await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = Arc::clone(&store);
            let user = if i % 2 == 0 {
                jane.clone()
            } else {
                john.clone()
            };
            let family = format!("fam-{i}");
            let parent = refresh(&user, &format!("parent-{i}"), &family, Duration::days(1));
            let child = refresh(&user, &format!("child-{i}"), &family, Duration::days(1));
            tokio::spawn(async move {
                store.insert_refresh_token(&parent).await.unwrap();
                let Rotated { retired, owner } =
                    rotate_active(&store, &parent.token_hash, &child).await;
                assert_eq!(retired.jti, format!("parent-{i}"));
                assert_eq!(retired.replaced_by.as_deref(), Some(child.jti.as_str()));
                assert_eq!(owner.unwrap().id, user);
                let stored = store.find_refresh_token(&child.token_hash).await.unwrap();
                assert!(stored.is_some_and(|c| !c.revoked && c.family_id == family));
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn a_rotation_whose_child_collides_retires_nothing(backend: Backend) {
    // A child that cannot be stored (its hash is taken) fails that rotation
    // alone: its parent stays active and usable, and the rotations queued
    // beside it (one SQLite batch) still go through.
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let taken = refresh(&jane, "taken", "fam-taken", Duration::days(1));
    store.insert_refresh_token(&taken).await.unwrap();
    let parent = refresh(&jane, "parent", "fam", Duration::days(1));
    store.insert_refresh_token(&parent).await.unwrap();
    let colliding = NewRefreshToken {
        token_hash: taken.token_hash.clone(),
        ..refresh(&jane, "colliding", "fam", Duration::days(1))
    };
    let others: Vec<_> = (0..16)
        .map(|i| {
            let family = format!("fam-{i}");
            let other = refresh(&jane, &format!("other-{i}"), &family, Duration::days(1));
            let child = refresh(
                &jane,
                &format!("other-child-{i}"),
                &family,
                Duration::days(1),
            );
            (other, child)
        })
        .collect();
    for (other, _) in &others {
        store.insert_refresh_token(other).await.unwrap();
    }
    let mut tasks: Vec<_> = others
        .into_iter()
        .map(|(other, child)| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .rotate_refresh_token(&other.token_hash, now(), Duration::zero(), &child)
                    .await
            })
        })
        .collect();
    let store2 = Arc::clone(&store);
    let hash = parent.token_hash.clone();
    tasks.insert(
        8,
        tokio::spawn(async move {
            store2
                .rotate_refresh_token(&hash, now(), Duration::zero(), &colliding)
                .await
        }),
    );
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap();
        if i == 8 {
            assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
        } else {
            assert!(
                matches!(result, Ok(Rotation::Rotated(_))),
                "{i}: {result:?}"
            );
        }
    }
    let kept = store
        .find_refresh_token(&parent.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert!(!kept.revoked && kept.replaced_by.is_none(), "{kept:?}");
    let still = store
        .find_refresh_token(&taken.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.jti, "taken");
    // The store is still good for the next rotation of the same parent.
    let good = refresh(&jane, "good", "fam", Duration::days(1));
    let Rotated { retired, owner } = rotate_active(&store, &parent.token_hash, &good).await;
    assert_eq!(retired.replaced_by.as_deref(), Some("good"));
    assert_eq!(owner.unwrap().id, jane);
}

/// a1 rotated to a2 at `t0`, in a fresh store: the start of the grace tests.
async fn rotated_family(
    backend: Backend,
) -> (Arc<dyn Store>, tempfile::TempDir, UserId, NewRefreshToken) {
    let (store, guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let a1 = refresh(&jane, "a1", "fam-a", Duration::days(1));
    store.insert_refresh_token(&a1).await.unwrap();
    let a2 = refresh(&jane, "a2", "fam-a", Duration::days(1));
    rotate_active(&store, &a1.token_hash, &a2).await;
    (store, guard, jane, a1)
}

async fn a_retired_token_gets_one_grace_sibling(backend: Backend) {
    let (store, _guard, jane, a1) = rotated_family(backend).await;
    let grace = Duration::seconds(5);
    let sibling = refresh(&jane, "a2-sibling", "fam-a", Duration::days(1));
    let rotation = store
        .rotate_refresh_token(&a1.token_hash, now(), grace, &sibling)
        .await
        .unwrap();
    assert!(
        matches!(rotation, Rotation::GraceSibling(_)),
        "{rotation:?}"
    );
    // The second replay of the same retired token, still inside the grace
    // period, is a theft: the family ends, sibling included.
    let second = refresh(&jane, "a2-second", "fam-a", Duration::days(1));
    match store
        .rotate_refresh_token(&a1.token_hash, now(), grace, &second)
        .await
        .unwrap()
    {
        Rotation::ReuseDetected { token, revoked } => {
            assert_eq!(token.jti, "a1");
            assert_eq!(revoked, 2, "a2 and its sibling");
        }
        other => panic!("expected reuse detection, got {other:?}"),
    }
    for hash in [&sibling.token_hash, &second.token_hash] {
        let found = store.find_refresh_token(hash).await.unwrap();
        assert!(found.is_none_or(|t| t.revoked));
    }
}

async fn concurrent_grace_replays_get_one_sibling(backend: Backend) {
    let (store, _guard, jane, a1) = rotated_family(backend).await;
    let replays = (0..8).map(|n| {
        let store = Arc::clone(&store);
        let hash = a1.token_hash.clone();
        let sibling = refresh(&jane, &format!("a2-tab{n}"), "fam-a", Duration::days(1));
        tokio::spawn(async move {
            store
                .rotate_refresh_token(&hash, now(), Duration::seconds(5), &sibling)
                .await
                .unwrap()
        })
    });
    let mut siblings = 0;
    for rotation in futures::future::join_all(replays).await {
        match rotation.unwrap() {
            Rotation::GraceSibling(_) => siblings += 1,
            Rotation::ReuseDetected { .. } => {}
            other => panic!("expected a sibling or reuse, got {other:?}"),
        }
    }
    assert_eq!(siblings, 1, "one retired token, one sibling");
    // The replays after the first ended the family: nothing of it is live.
    assert!(!store
        .refresh_family_alive(&jane, "fam-a", now())
        .await
        .unwrap());
}

async fn concurrent_failures_after_an_expired_window_are_all_counted(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let key = TokenHash::of("login-throttle:expired-window");
    let long_ago = now() - Duration::hours(1);
    store
        .add_login_failure(&key, long_ago, long_ago - Duration::minutes(15))
        .await
        .unwrap();
    // Every one of these finds the window over: one restarts it, and the
    // others must count in the restarted window, not restart it again.
    // So must the first failures ever of a key: one inserts it, the others
    // count in its window.
    let fresh = TokenHash::of("login-throttle:never-seen");
    for key in [&key, &fresh] {
        let mut counts = concurrent_failures(&store, key, 20).await;
        counts.sort_unstable();
        assert_eq!(counts, (1..=20).collect::<Vec<u32>>());
        assert_eq!(
            store.login_throttle(key).await.unwrap().unwrap().failures,
            20
        );
    }
}
async fn web_sessions_of_one_family_are_deleted(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let john = user_in(&store, "john@example.com").await;
    let signed_out = web_session("signed-out", Some(&jane), Duration::minutes(15));
    let other_tab = web_session("other-tab", Some(&jane), Duration::minutes(15));
    // Another user's session naming the same family string is not hers.
    let mut johns = web_session("johns", Some(&john), Duration::minutes(15));
    johns.refresh_family = signed_out.refresh_family.clone();
    for s in [&signed_out, &other_tab, &johns] {
        store.insert_web_session(s).await.unwrap();
    }
    let family = signed_out.refresh_family.as_deref().unwrap();
    assert_eq!(
        store
            .delete_family_web_sessions(&jane, family)
            .await
            .unwrap(),
        1
    );
    assert!(store
        .load_web_session(&signed_out.id_hash, now())
        .await
        .unwrap()
        .is_none());
    for kept in [&other_tab, &johns] {
        assert!(store
            .load_web_session(&kept.id_hash, now())
            .await
            .unwrap()
            .is_some());
    }
    assert_eq!(
        store
            .delete_family_web_sessions(&jane, family)
            .await
            .unwrap(),
        0,
        "nothing left to end"
    );
}

async fn users_are_listed_filtered_and_paged_by_email(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let named = |email: &str, name: &str| NewUser {
        name: PersonName::parse(name).unwrap(),
        ..new_user(email)
    };
    for (email, name) in [
        ("zoe@example.com", "Zoë Ångström"),
        ("ann@example.com", "Ann Lee"),
        ("bob@example.com", "Janet Bob"),
        ("jan@example.com", "Jan Ek"),
        ("x_y@example.com", "Robert Percent%"),
        ("xay@example.com", "Ben Ray"),
    ] {
        store.create_user(&named(email, name)).await.unwrap();
    }
    let emails = |query: UserQuery| {
        let store = Arc::clone(&store);
        async move {
            let users = store.list_users(&query).await.unwrap();
            users
                .iter()
                .map(|u| u.email.as_str().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let all = UserQuery {
        limit: 200,
        ..UserQuery::default()
    };
    assert_eq!(
        emails(all.clone()).await,
        [
            "ann@example.com",
            "bob@example.com",
            "jan@example.com",
            "x_y@example.com",
            "xay@example.com",
            "zoe@example.com"
        ]
    );
    // A prefix of the email or of the name, in any case; sorted by email.
    let q = |prefix: &str| UserQuery {
        prefix: Some(prefix.to_owned()),
        ..all.clone()
    };
    assert_eq!(
        emails(q("jan")).await,
        ["bob@example.com", "jan@example.com"]
    );
    // Wildcards and regex characters mean themselves.
    assert_eq!(emails(q("x_")).await, ["x_y@example.com"]);
    assert!(emails(q("%")).await.is_empty());
    assert!(emails(q(".")).await.is_empty());
    assert!(
        emails(q("ee")).await.is_empty(),
        "a prefix, not a substring"
    );
    assert_eq!(emails(q("zo")).await, ["zoe@example.com"]);
    // Pages: the cursor is the last email, and no match is skipped.
    let page = |after: Option<&str>| UserQuery {
        prefix: Some("j".into()),
        after_email: after.map(str::to_owned),
        limit: 1,
        ..UserQuery::default()
    };
    assert_eq!(emails(page(None)).await, ["bob@example.com"]);
    assert_eq!(
        emails(page(Some("bob@example.com"))).await,
        ["jan@example.com"]
    );
    assert!(emails(page(Some("jan@example.com"))).await.is_empty());
    let two = UserQuery {
        limit: 2,
        after_email: Some("bob@example.com".into()),
        ..UserQuery::default()
    };
    assert_eq!(emails(two).await, ["jan@example.com", "x_y@example.com"]);

    // Role, disabled and verified filters.
    let ann = store
        .find_user_by_email(&EmailAddress::parse("ann@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    let bob = store
        .find_user_by_email(&EmailAddress::parse("bob@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    let nurse = Role::parse("nurse").unwrap();
    store
        .set_user_role(&ann.id, &nurse, now(), now())
        .await
        .unwrap();
    store
        .set_user_disabled(&bob.id, Some(now()), now())
        .await
        .unwrap();
    store.set_verified(&ann.id, now()).await.unwrap();
    let role = UserQuery {
        role: Some(nurse),
        ..all.clone()
    };
    assert_eq!(emails(role).await, ["ann@example.com"]);
    let disabled = UserQuery {
        disabled: Some(true),
        ..all.clone()
    };
    assert_eq!(emails(disabled).await, ["bob@example.com"]);
    let active = UserQuery {
        disabled: Some(false),
        prefix: Some("j".into()),
        ..all.clone()
    };
    assert_eq!(emails(active).await, ["jan@example.com"]);
    let verified = UserQuery {
        verified: Some(true),
        ..all.clone()
    };
    assert_eq!(emails(verified).await, ["ann@example.com"]);
    let unverified = UserQuery {
        verified: Some(false),
        limit: 1,
        ..all.clone()
    };
    assert_eq!(emails(unverified).await, ["bob@example.com"]);
}

async fn a_user_is_anonymised_keeping_its_id(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let id = user_in(&store, "jane@example.com").await;
    user_in(&store, "tom@example.com").await;
    let gone = EmailAddress::parse(&format!("deleted-{id}@invalid.example")).unwrap();
    let name = PersonName::parse("Deleted user").unwrap();
    let hash = PasswordHash::new("$argon2id$other".into());
    assert!(store
        .anonymise_user(&id, &gone, &name, &hash, now())
        .await
        .unwrap());
    let user = store.find_user_by_id(&id).await.unwrap().unwrap();
    assert_eq!(user.email, gone);
    assert_eq!(user.name.as_str(), "Deleted user");
    assert_eq!(user.password_hash.expose(), "$argon2id$other");
    let jane = EmailAddress::parse("jane@example.com").unwrap();
    assert!(store.find_user_by_email(&jane).await.unwrap().is_none());
    // Another user's address is refused; an unknown id changes nothing.
    let tom = EmailAddress::parse("tom@example.com").unwrap();
    assert!(matches!(
        store.anonymise_user(&id, &tom, &name, &hash, now()).await,
        Err(StoreError::Conflict)
    ));
    assert!(!store
        .anonymise_user(&UserId::new("nobody"), &gone, &name, &hash, now())
        .await
        .unwrap());
}

// ----- invitations (issue 19) -----

fn invitation(
    email: &str,
    token: &str,
    expires_in: Duration,
) -> clinic_auth::storage::NewInvitation {
    clinic_auth::storage::NewInvitation {
        email: EmailAddress::parse(email).unwrap(),
        name: clinic_auth::domain::PersonName::parse("Sam Lee").unwrap(),
        role: Role::parse("nurse").unwrap(),
        token_hash: TokenHash::of(token),
        invited_by: UserId::new("admin-1"),
        created_at: now(),
        expires_at: now() + expires_in,
    }
}

async fn invitations_are_one_per_address_and_listed(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let sam = store
        .create_invitation(&invitation("sam@example.com", "sam", Duration::hours(72)))
        .await
        .unwrap();
    assert_eq!(sam.email.as_str(), "sam@example.com");
    assert_eq!(sam.role.as_str(), "nurse");
    assert_eq!(sam.invited_by.as_str(), "admin-1");
    assert_eq!(sam.resend_count, 0);
    assert_eq!(sam.last_sent_at, sam.created_at);
    // A second invitation to the same address is refused, stores nothing.
    let again = store
        .create_invitation(&invitation("sam@example.com", "sam-2", Duration::hours(72)))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    assert!(store
        .find_invitation_by_token(&TokenHash::of("sam-2"), now())
        .await
        .unwrap()
        .is_none());
    let kim = store
        .create_invitation(&invitation("kim@example.com", "kim", Duration::hours(72)))
        .await
        .unwrap();
    let listed = store.list_invitations().await.unwrap();
    assert_eq!(listed, vec![sam.clone(), kim.clone()], "oldest first");
    assert_eq!(
        store.find_invitation(&kim.id).await.unwrap(),
        Some(kim.clone())
    );
    let email = EmailAddress::parse("sam@example.com").unwrap();
    assert_eq!(
        store.find_invitation_by_email(&email).await.unwrap(),
        Some(sam.clone())
    );
    // Unknown and malformed ids are none.
    for id in ["", "nope", "507f1f77bcf86cd799439011"] {
        assert_eq!(store.find_invitation(id).await.unwrap(), None, "{id}");
        assert!(!store.delete_invitation(id).await.unwrap(), "{id}");
    }
    assert!(store.delete_invitation(&sam.id).await.unwrap());
    assert!(!store.delete_invitation(&sam.id).await.unwrap(), "once");
    assert_eq!(store.list_invitations().await.unwrap(), vec![kim]);
    // Revoked, the address may be invited again.
    store
        .create_invitation(&invitation("sam@example.com", "sam-3", Duration::hours(72)))
        .await
        .unwrap();
}

async fn invitation_links_expire_renew_and_are_taken_once(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let sam = store
        .create_invitation(&invitation("sam@example.com", "old", Duration::hours(72)))
        .await
        .unwrap();
    let old = TokenHash::of("old");
    // Looking does not use it; the time given decides expiry.
    for _ in 0..2 {
        assert_eq!(
            store.find_invitation_by_token(&old, now()).await.unwrap(),
            Some(sam.clone())
        );
    }
    let later = now() + Duration::hours(73);
    assert_eq!(
        store.find_invitation_by_token(&old, later).await.unwrap(),
        None
    );
    assert_eq!(store.take_invitation(&old, later).await.unwrap(), None);
    assert!(
        store.find_invitation(&sam.id).await.unwrap().is_some(),
        "an expired invitation stays listed"
    );

    // Renewed: a new link and expiry, the old link dead, the send counted.
    let new = TokenHash::of("new");
    let renewed = store
        .renew_invitation(&sam.id, &new, later + Duration::hours(72), later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.resend_count, 1);
    assert_eq!(renewed.last_sent_at, later);
    assert_eq!(renewed.expires_at, later + Duration::hours(72));
    assert_eq!(renewed.created_at, sam.created_at);
    assert_eq!(
        store.find_invitation_by_token(&old, now()).await.unwrap(),
        None
    );
    assert_eq!(store.take_invitation(&old, now()).await.unwrap(), None);
    assert_eq!(
        store
            .renew_invitation("nope", &new, later, later)
            .await
            .unwrap(),
        None
    );

    // Taken once, then gone.
    assert_eq!(
        store.take_invitation(&new, later).await.unwrap(),
        Some(renewed)
    );
    assert_eq!(store.take_invitation(&new, later).await.unwrap(), None);
    assert_eq!(store.find_invitation(&sam.id).await.unwrap(), None);
}

async fn concurrent_invitation_accepts_have_one_winner(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    store
        .create_invitation(&invitation("sam@example.com", "race", Duration::hours(1)))
        .await
        .unwrap();
    let wins = common::winners(8, || {
        let store = Arc::clone(&store);
        async move {
            store
                .take_invitation(&TokenHash::of("race"), now())
                .await
                .unwrap()
                .is_some()
        }
    })
    .await;
    assert_eq!(wins, 1);
}
