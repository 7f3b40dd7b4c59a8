//! Storage conformance of second factors (`storage/mfa.rs`), against every
//! backend: what two-step sign-in relies on, above all that a code can be
//! used once however many requests present it at the same moment.

mod common;

use std::sync::Arc;

use chrono::Duration;
use clinic_auth::domain::mfa::{RecoveryCodeHash, SealedTotpSecret, TimeStep};
use clinic_auth::domain::{TokenHash, UserId};
use clinic_auth::storage::{CeremonyKind, Passkey, PasskeyCeremony, Store, StoreError};
use common::fixtures::{new_user, now};
use common::{fresh_store, winners, Backend};

backend_tests!(
    a_pending_authenticator_is_replaced_until_confirmed,
    a_confirmed_authenticator_accepts_only_later_steps,
    concurrent_accepts_of_one_step_have_one_winner,
    recovery_codes_are_single_use_and_replaced_whole,
    concurrent_uses_of_one_recovery_code_have_one_winner,
    passkeys_are_listed_renamed_used_and_removed_by_their_owner,
    unknown_users_have_no_factors,
    passkey_ceremonies_are_taken_once_by_kind_until_they_expire,
    concurrent_takes_of_one_ceremony_have_one_winner,
);

async fn user_in(store: &Arc<dyn Store>, email: &str) -> UserId {
    store.create_user(&new_user(email)).await.unwrap().id
}

/// Gives `user` a confirmed authenticator whose last accepted step is
/// `last_step`.
async fn enrol_at_step(store: &Arc<dyn Store>, user: &UserId, last_step: u64) {
    let secret = sealed("s");
    assert!(store.put_pending_totp(user, &secret, now()).await.unwrap());
    let confirmed = store.confirm_totp(user, &secret, step(last_step), now());
    assert!(confirmed.await.unwrap());
}

fn sealed(text: &str) -> SealedTotpSecret {
    SealedTotpSecret::from_stored(format!("v1:{text}"))
}

fn step(n: u64) -> TimeStep {
    TimeStep::from_stored(n)
}

/// `n` hashes named after `prefix`.
fn codes(prefix: &str, n: usize) -> Vec<RecoveryCodeHash> {
    (0..n)
        .map(|i| RecoveryCodeHash::from_stored(format!("{prefix}-{i:02}")))
        .collect()
}

async fn a_pending_authenticator_is_replaced_until_confirmed(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    assert!(store.totp_factor(&jane).await.unwrap().is_none());

    let t0 = now();
    assert!(store
        .put_pending_totp(&jane, &sealed("first"), t0)
        .await
        .unwrap());
    let pending = store.totp_factor(&jane).await.unwrap().unwrap();
    assert_eq!(pending.secret, sealed("first"));
    assert!(!pending.confirmed);
    assert_eq!(pending.created_at, t0);
    assert_eq!((pending.confirmed_at, pending.last_step), (None, None));
    assert!(
        !store.accept_totp_step(&jane, step(100)).await.unwrap(),
        "a pending authenticator signs no one in"
    );

    // A second setup (another tab) replaces the pending secret, and the
    // code checked against the first one confirms nothing.
    let t1 = t0 + Duration::seconds(5);
    assert!(store
        .put_pending_totp(&jane, &sealed("second"), t1)
        .await
        .unwrap());
    let t2 = t1 + Duration::seconds(5);
    assert!(!store
        .confirm_totp(&jane, &sealed("first"), step(100), t2)
        .await
        .unwrap());
    assert!(store
        .confirm_totp(&jane, &sealed("second"), step(100), t2)
        .await
        .unwrap());
    let confirmed = store.totp_factor(&jane).await.unwrap().unwrap();
    assert_eq!(confirmed.secret, sealed("second"));
    assert!(confirmed.confirmed);
    assert_eq!(confirmed.created_at, t1);
    assert_eq!(confirmed.confirmed_at, Some(t2));
    assert_eq!(
        confirmed.last_step,
        Some(step(100)),
        "the confirming code is used up"
    );
    assert!(
        !store
            .confirm_totp(&jane, &sealed("second"), step(101), t2)
            .await
            .unwrap(),
        "confirmed once"
    );

    // A setup never overwrites a confirmed authenticator.
    assert!(!store
        .put_pending_totp(&jane, &sealed("third"), t2)
        .await
        .unwrap());
    assert_eq!(store.totp_factor(&jane).await.unwrap().unwrap(), confirmed);

    assert!(store.delete_totp(&jane).await.unwrap());
    assert!(store.totp_factor(&jane).await.unwrap().is_none());
    assert!(!store.delete_totp(&jane).await.unwrap());
    assert!(store
        .put_pending_totp(&jane, &sealed("fourth"), t2)
        .await
        .unwrap());
}

async fn a_confirmed_authenticator_accepts_only_later_steps(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let john = user_in(&store, "john@example.com").await;
    enrol_at_step(&store, &jane, 1_000).await;

    for (presented, accepted) in [
        (999, false),
        (1_000, false),
        (1_001, true),
        (1_001, false),
        (1_000, false),
        (1_003, true),
    ] {
        assert_eq!(
            store
                .accept_totp_step(&jane, step(presented))
                .await
                .unwrap(),
            accepted,
            "step {presented}"
        );
    }
    let factor = store.totp_factor(&jane).await.unwrap().unwrap();
    assert_eq!(factor.last_step, Some(step(1_003)));
    assert!(
        !store.accept_totp_step(&john, step(2_000)).await.unwrap(),
        "john has none"
    );
}

async fn concurrent_accepts_of_one_step_have_one_winner(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    enrol_at_step(&store, &jane, 1_000).await;
    let wins = winners(8, || {
        let (store, jane) = (Arc::clone(&store), jane.clone());
        async move { store.accept_totp_step(&jane, step(1_001)).await.unwrap() }
    })
    .await;
    assert_eq!(wins, 1);
    let factor = store.totp_factor(&jane).await.unwrap().unwrap();
    assert_eq!(factor.last_step, Some(step(1_001)));
}

async fn recovery_codes_are_single_use_and_replaced_whole(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let john = user_in(&store, "john@example.com").await;
    let old = codes("old", 10);
    store
        .replace_recovery_codes(&jane, &old, now())
        .await
        .unwrap();
    store
        .replace_recovery_codes(&john, &codes("john", 10), now())
        .await
        .unwrap();
    assert_eq!(store.recovery_codes_left(&jane).await.unwrap(), 10);

    assert!(store.use_recovery_code(&jane, &old[3]).await.unwrap());
    assert!(
        !store.use_recovery_code(&jane, &old[3]).await.unwrap(),
        "used up"
    );
    assert_eq!(store.recovery_codes_left(&jane).await.unwrap(), 9);
    assert!(
        !store.use_recovery_code(&john, &old[4]).await.unwrap(),
        "jane's code is not john's"
    );
    let unknown = RecoveryCodeHash::from_stored("unknown".into());
    assert!(!store.use_recovery_code(&jane, &unknown).await.unwrap());
    assert_eq!(store.recovery_codes_left(&john).await.unwrap(), 10);

    // Regenerating replaces the whole set: no old code works after.
    let new = codes("new", 10);
    store
        .replace_recovery_codes(&jane, &new, now())
        .await
        .unwrap();
    assert_eq!(store.recovery_codes_left(&jane).await.unwrap(), 10);
    for code in &old {
        assert!(
            !store.use_recovery_code(&jane, code).await.unwrap(),
            "{code:?}"
        );
    }
    assert!(store.use_recovery_code(&jane, &new[0]).await.unwrap());
    assert_eq!(store.recovery_codes_left(&jane).await.unwrap(), 9);

    store
        .replace_recovery_codes(&jane, &[], now())
        .await
        .unwrap();
    assert_eq!(store.recovery_codes_left(&jane).await.unwrap(), 0);
    assert!(!store.use_recovery_code(&jane, &new[1]).await.unwrap());
    assert_eq!(
        store.recovery_codes_left(&john).await.unwrap(),
        10,
        "john's untouched"
    );
}

async fn concurrent_uses_of_one_recovery_code_have_one_winner(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let set = codes("c", 10);
    store
        .replace_recovery_codes(&jane, &set, now())
        .await
        .unwrap();
    let wins = winners(8, || {
        let (store, jane, code) = (Arc::clone(&store), jane.clone(), set[5].clone());
        async move { store.use_recovery_code(&jane, &code).await.unwrap() }
    })
    .await;
    assert_eq!(wins, 1);
    assert_eq!(store.recovery_codes_left(&jane).await.unwrap(), 9);
}

fn passkey(id: &str, user: &UserId, credential_id: &str, age_seconds: i64) -> Passkey {
    Passkey {
        id: id.into(),
        user_id: user.clone(),
        credential_id: credential_id.into(),
        name: format!("key {id}"),
        credential: format!(r#"{{"cred":"{credential_id}","counter":0}}"#),
        counter: 0,
        created_at: now() - Duration::seconds(age_seconds),
        last_used_at: None,
    }
}

async fn passkeys_are_listed_renamed_used_and_removed_by_their_owner(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let john = user_in(&store, "john@example.com").await;
    let laptop = passkey("pk-laptop", &jane, "cred-laptop", 60);
    let phone = passkey("pk-phone", &jane, "cred-phone", 30);
    // Added newest first; listed oldest first.
    store.add_passkey(&phone).await.unwrap();
    store.add_passkey(&laptop).await.unwrap();
    store
        .add_passkey(&passkey("pk-john", &john, "cred-john", 10))
        .await
        .unwrap();

    let listed = store.passkeys(&jane).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["pk-laptop", "pk-phone"]);
    assert_eq!(listed[0].user_id, jane);
    assert_eq!(listed[0].credential_id, "cred-laptop");
    assert_eq!(listed[0].credential, laptop.credential);
    assert_eq!(listed[0].created_at, laptop.created_at);
    assert_eq!((listed[0].counter, listed[0].last_used_at), (0, None));

    // One authenticator cannot be registered twice, by anyone.
    let again = passkey("pk-other", &john, "cred-laptop", 0);
    let err = store.add_passkey(&again).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    let err = store
        .add_passkey(&passkey("pk-phone", &jane, "cred-new", 0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "same id: {err:?}");

    let found = store.find_passkey("cred-phone").await.unwrap().unwrap();
    assert_eq!((found.id.as_str(), &found.user_id), ("pk-phone", &jane));
    assert!(store.find_passkey("cred-none").await.unwrap().is_none());

    assert!(
        !store
            .rename_passkey(&john, "pk-phone", "mine")
            .await
            .unwrap(),
        "not john's"
    );
    assert!(store
        .rename_passkey(&jane, "pk-phone", "Jane's phone")
        .await
        .unwrap());
    assert!(!store.rename_passkey(&jane, "pk-none", "x").await.unwrap());

    let used = now();
    assert!(store
        .record_passkey_use("pk-phone", r#"{"counter":7}"#, 7, used)
        .await
        .unwrap());
    assert!(!store
        .record_passkey_use("pk-none", "{}", 1, used)
        .await
        .unwrap());
    let phone = store.find_passkey("cred-phone").await.unwrap().unwrap();
    assert_eq!(phone.name, "Jane's phone");
    assert_eq!(phone.credential, r#"{"counter":7}"#);
    assert_eq!((phone.counter, phone.last_used_at), (7, Some(used)));

    assert!(
        !store.delete_passkey(&john, "pk-phone").await.unwrap(),
        "not john's"
    );
    assert!(store.delete_passkey(&jane, "pk-phone").await.unwrap());
    assert!(!store.delete_passkey(&jane, "pk-phone").await.unwrap());
    let ids: Vec<String> = store
        .passkeys(&jane)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids, ["pk-laptop"]);
    assert_eq!(store.passkeys(&john).await.unwrap().len(), 1);
    // Its credential id is free again once removed.
    store
        .add_passkey(&passkey("pk-phone-2", &jane, "cred-phone", 0))
        .await
        .unwrap();
}

async fn unknown_users_have_no_factors(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    for id in [
        "nope",
        "ffffffffffffffffffffffff",
        "0193a1b2c3d4e5f60718293a4b5c6d7e",
    ] {
        let user = UserId::new(id);
        assert!(store.totp_factor(&user).await.unwrap().is_none(), "{id}");
        assert!(
            !store.accept_totp_step(&user, step(1)).await.unwrap(),
            "{id}"
        );
        assert!(!store.delete_totp(&user).await.unwrap(), "{id}");
        assert_eq!(store.recovery_codes_left(&user).await.unwrap(), 0, "{id}");
        assert!(
            !store
                .use_recovery_code(&user, &codes("x", 1)[0])
                .await
                .unwrap(),
            "{id}"
        );
        assert!(store.passkeys(&user).await.unwrap().is_empty(), "{id}");
        assert!(!store.delete_passkey(&user, "pk").await.unwrap(), "{id}");
    }
}

fn ceremony(handle: &str, kind: CeremonyKind, user: Option<&UserId>) -> PasskeyCeremony {
    let at = now();
    PasskeyCeremony {
        handle: TokenHash::of(handle),
        kind,
        user_id: user.cloned(),
        state: format!(r#"{{"challenge":"{handle}"}}"#),
        created_at: at,
        expires_at: at + Duration::minutes(5),
    }
}

async fn passkey_ceremonies_are_taken_once_by_kind_until_they_expire(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let register = ceremony("h-register", CeremonyKind::Register, Some(&jane));
    let sign_in = ceremony("h-sign-in", CeremonyKind::SignIn, None);
    store.put_passkey_ceremony(&register).await.unwrap();
    store.put_passkey_ceremony(&sign_in).await.unwrap();

    // A handle answers only the ceremony kind it was made for.
    let wrong = store.take_passkey_ceremony(&register.handle, CeremonyKind::SignIn, now());
    assert!(wrong.await.unwrap().is_none());
    let taken = store
        .take_passkey_ceremony(&register.handle, CeremonyKind::Register, now())
        .await
        .unwrap();
    assert_eq!(taken, Some(register.clone()));
    // Single use.
    let again = store.take_passkey_ceremony(&register.handle, CeremonyKind::Register, now());
    assert!(again.await.unwrap().is_none());

    // Expired: refused, and gone even for an earlier clock afterwards.
    let late = sign_in.expires_at + Duration::seconds(1);
    let expired = store.take_passkey_ceremony(&sign_in.handle, CeremonyKind::SignIn, late);
    assert!(expired.await.unwrap().is_none());
    let gone = store.take_passkey_ceremony(&sign_in.handle, CeremonyKind::SignIn, now());
    assert!(gone.await.unwrap().is_none());

    // The last instant before expiry still counts; user-less round-trips.
    let edge = ceremony("h-edge", CeremonyKind::SignIn, None);
    store.put_passkey_ceremony(&edge).await.unwrap();
    let just_before = edge.expires_at - Duration::milliseconds(1);
    let taken = store.take_passkey_ceremony(&edge.handle, CeremonyKind::SignIn, just_before);
    assert_eq!(taken.await.unwrap(), Some(edge));

    // The hourly purge removes unanswered expired ones.
    let stale = ceremony("h-stale", CeremonyKind::SignIn, None);
    store.put_passkey_ceremony(&stale).await.unwrap();
    let purged = store
        .purge_expired(stale.expires_at, stale.expires_at)
        .await
        .unwrap();
    assert!(purged >= 1);
    let after = store.take_passkey_ceremony(&stale.handle, CeremonyKind::SignIn, now());
    assert!(after.await.unwrap().is_none());
}

async fn concurrent_takes_of_one_ceremony_have_one_winner(backend: Backend) {
    let (store, _guard) = fresh_store(backend).await;
    let jane = user_in(&store, "jane@example.com").await;
    let c = ceremony("h-race", CeremonyKind::Register, Some(&jane));
    store.put_passkey_ceremony(&c).await.unwrap();
    let handle = c.handle.clone();
    let wins = winners(8, || {
        let store = Arc::clone(&store);
        let handle = handle.clone();
        async move {
            store
                .take_passkey_ceremony(&handle, CeremonyKind::Register, now())
                .await
                .unwrap()
                .is_some()
        }
    })
    .await;
    assert_eq!(wins, 1);
}
