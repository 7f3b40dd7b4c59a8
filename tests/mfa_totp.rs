//! The second-factor use-cases (`services/mfa/`) on every backend, with
//! the test clock: enrolment takes effect only after a valid code, codes
//! allow one step of skew, a used code (authenticator or recovery) is
//! refused, and the secret is never stored in clear.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use clinic_auth::clock::{Clock, TestClock};
use clinic_auth::domain::mfa::{MfaKey, TimeStep, TotpSecret, RECOVERY_CODE_COUNT};
use clinic_auth::domain::User;
use clinic_auth::services::mfa::{MfaError, RecoveryCodes, TotpFactors};
use clinic_auth::storage::Store;
use common::fixtures::new_user;
use common::{fresh_store, winners, Backend};
use secrecy::ExposeSecret;

backend_tests!(
    enrolment_takes_effect_only_after_a_valid_code,
    a_second_setup_replaces_the_pending_secret,
    sign_in_codes_allow_one_step_of_skew_and_no_replay,
    concurrent_sign_ins_with_one_code_have_one_winner,
    the_secret_is_stored_sealed_and_opens_only_with_the_key,
    recovery_codes_work_once_each_until_regenerated,
    concurrent_uses_of_one_recovery_code_have_one_winner,
);

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Harness {
    store: Arc<dyn Store>,
    clock: Arc<TestClock>,
    totp: TotpFactors,
    recovery: Arc<RecoveryCodes>,
    jane: User,
    _dir: tempfile::TempDir,
}

/// A store with Jane in it, and the clock 5 s into a time step, so that a
/// test's few steps never straddle one by accident.
async fn harness(backend: Backend) -> Harness {
    let (store, dir) = fresh_store(backend).await;
    let jane = store
        .create_user(&new_user("jane@example.com"))
        .await
        .unwrap();
    let clock = Arc::new(TestClock::new());
    // 1_800_000_000 is a whole number of 30-second steps.
    clock.set(DateTime::from_timestamp(1_800_000_000 + 5, 0).unwrap());
    let (totp, recovery) = factors(&store, &clock, KEY);
    Harness {
        store,
        clock,
        totp,
        recovery,
        jane,
        _dir: dir,
    }
}

/// The use-cases over `store`, sealing and hashing under `key`.
fn factors(
    store: &Arc<dyn Store>,
    clock: &Arc<TestClock>,
    key: &str,
) -> (TotpFactors, Arc<RecoveryCodes>) {
    let key = MfaKey::from_hex(key).unwrap();
    let recovery = Arc::new(RecoveryCodes::new(
        store.clone(),
        key.clone(),
        clock.clone(),
    ));
    let totp = TotpFactors::new(
        store.clone(),
        key,
        clock.clone(),
        "Clinic Auth",
        Arc::clone(&recovery),
    );
    (totp, recovery)
}

impl Harness {
    /// The code Jane's app shows `steps` steps from now.
    fn code(&self, secret: &TotpSecret, steps: i64) -> String {
        let now = TimeStep::at(self.clock.now()).unwrap().value();
        secret.code_at(TimeStep::from_stored(
            now.checked_add_signed(steps).unwrap(),
        ))
    }

    /// Sets up and confirms an authenticator; the secret, as the app has it.
    async fn enrol(&self) -> TotpSecret {
        let setup = self.totp.setup(&self.jane).await.unwrap();
        let secret =
            TotpSecret::from_manual_entry_key(setup.manual_entry_key.expose_secret()).unwrap();
        self.totp
            .confirm(&self.jane.id, &self.code(&secret, 0))
            .await
            .unwrap();
        secret
    }

    fn step_forward(&self) {
        self.clock.advance(Duration::from_secs(30));
    }
}

async fn enrolment_takes_effect_only_after_a_valid_code(backend: Backend) {
    let h = harness(backend).await;
    let jane = &h.jane.id;
    let setup = h.totp.setup(&h.jane).await.unwrap();
    let key = setup.manual_entry_key.expose_secret();
    assert!(!format!("{setup:?}").contains(key));
    let uri = setup.otpauth_uri.expose_secret();
    assert!(
        uri.starts_with("otpauth://totp/Clinic%20Auth:jane@example.com?secret="),
        "{uri}"
    );
    assert!(
        uri.contains(&format!("secret={key}&issuer=Clinic%20Auth")),
        "{uri}"
    );
    assert!(setup.qr_svg.contains("<svg"));

    // Pending: sign-in asks for nothing yet.
    assert!(!h.totp.is_enabled(jane).await.unwrap());
    let secret = TotpSecret::from_manual_entry_key(key).unwrap();
    let err = h.totp.verify(jane, &h.code(&secret, 0)).await.unwrap_err();
    assert!(matches!(err, MfaError::NotEnabled), "{err:?}");

    let wrong = if h.code(&secret, 0) == "000000" {
        "000001"
    } else {
        "000000"
    };
    let err = h.totp.confirm(jane, wrong).await.unwrap_err();
    assert!(matches!(err, MfaError::WrongCode), "{err:?}");
    assert!(!h.totp.is_enabled(jane).await.unwrap());
    assert_eq!(h.store.recovery_codes_left(jane).await.unwrap(), 0);

    let code = h.code(&secret, 0);
    let codes = h.totp.confirm(jane, &code).await.unwrap();
    assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
    assert!(h.totp.is_enabled(jane).await.unwrap());
    assert_eq!(
        h.store.recovery_codes_left(jane).await.unwrap(),
        RECOVERY_CODE_COUNT as u32
    );
    // The confirming code is used up, and confirming is done once.
    let err = h.totp.verify(jane, &code).await.unwrap_err();
    assert!(matches!(err, MfaError::WrongCode), "{err:?}");
    let err = h.totp.confirm(jane, &h.code(&secret, 1)).await.unwrap_err();
    assert!(matches!(err, MfaError::NothingToConfirm), "{err:?}");
    // A confirmed authenticator is not replaced by a new setup.
    let err = h.totp.setup(&h.jane).await.unwrap_err();
    assert!(matches!(err, MfaError::AlreadyEnabled), "{err:?}");
    h.step_forward();
    assert!(h.totp.verify(jane, &h.code(&secret, 0)).await.is_ok());
}

async fn a_second_setup_replaces_the_pending_secret(backend: Backend) {
    let h = harness(backend).await;
    let first = h.totp.setup(&h.jane).await.unwrap();
    let second = h.totp.setup(&h.jane).await.unwrap();
    let [first, second] = [first, second]
        .map(|s| TotpSecret::from_manual_entry_key(s.manual_entry_key.expose_secret()).unwrap());
    let err = h
        .totp
        .confirm(&h.jane.id, &h.code(&first, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, MfaError::WrongCode), "{err:?}");
    h.totp
        .confirm(&h.jane.id, &h.code(&second, 0))
        .await
        .unwrap();
    assert!(h.totp.is_enabled(&h.jane.id).await.unwrap());
}

async fn sign_in_codes_allow_one_step_of_skew_and_no_replay(backend: Backend) {
    let h = harness(backend).await;
    let jane = &h.jane.id;
    let secret = h.enrol().await;
    h.step_forward();
    h.step_forward();

    // Two steps either side: refused (and nothing is used up).
    for steps in [-2, 2] {
        let err = h
            .totp
            .verify(jane, &h.code(&secret, steps))
            .await
            .unwrap_err();
        assert!(matches!(err, MfaError::WrongCode), "{steps}: {err:?}");
    }
    // One step behind (a phone a little slow): accepted, once.
    let behind = h.code(&secret, -1);
    h.totp.verify(jane, &behind).await.unwrap();
    let err = h.totp.verify(jane, &behind).await.unwrap_err();
    assert!(matches!(err, MfaError::WrongCode), "replay: {err:?}");
    // Now's code is later than the used one: accepted, once.
    let now = h.code(&secret, 0);
    h.totp.verify(jane, &now).await.unwrap();
    let err = h.totp.verify(jane, &now).await.unwrap_err();
    assert!(matches!(err, MfaError::WrongCode), "replay: {err:?}");
    // Still refused later in its window, and a step later (within skew).
    h.clock.advance(Duration::from_secs(20));
    assert!(h.totp.verify(jane, &now).await.is_err());
    h.step_forward();
    assert!(h.totp.verify(jane, &now).await.is_err());
    // One step ahead (a phone a little fast) works.
    h.totp.verify(jane, &h.code(&secret, 1)).await.unwrap();
}

async fn concurrent_sign_ins_with_one_code_have_one_winner(backend: Backend) {
    let h = Arc::new(harness(backend).await);
    let secret = h.enrol().await;
    h.step_forward();
    let code = h.code(&secret, 0);
    let wins = winners(8, || {
        let (h, code) = (Arc::clone(&h), code.clone());
        async move { h.totp.verify(&h.jane.id, &code).await.is_ok() }
    })
    .await;
    assert_eq!(wins, 1);
}

async fn the_secret_is_stored_sealed_and_opens_only_with_the_key(backend: Backend) {
    let h = harness(backend).await;
    let setup = h.totp.setup(&h.jane).await.unwrap();
    let key = setup.manual_entry_key.expose_secret().to_owned();
    let stored = h.store.totp_factor(&h.jane.id).await.unwrap().unwrap();
    assert!(stored.secret.as_str().starts_with("v1:"));
    assert!(!stored.secret.as_str().contains(&key));
    if backend == Backend::Sqlite {
        // Nothing in the database files (WAL included) spells the secret.
        for file in std::fs::read_dir(h._dir.path().join("data")).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&key));
        }
    }
    // Another MFA_ENCRYPTION_KEY cannot use it: an error, never a pass.
    let (other, _) = factors(&h.store, &h.clock, &"ff".repeat(32));
    let secret = TotpSecret::from_manual_entry_key(&key).unwrap();
    let err = other
        .confirm(&h.jane.id, &h.code(&secret, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, MfaError::Sealed(_)), "{err:?}");
    h.totp
        .confirm(&h.jane.id, &h.code(&secret, 0))
        .await
        .unwrap();
}

async fn recovery_codes_work_once_each_until_regenerated(backend: Backend) {
    let h = harness(backend).await;
    let jane = &h.jane.id;
    let setup = h.totp.setup(&h.jane).await.unwrap();
    let secret = TotpSecret::from_manual_entry_key(setup.manual_entry_key.expose_secret()).unwrap();
    let first: Vec<String> = h
        .totp
        .confirm(jane, &h.code(&secret, 0))
        .await
        .unwrap()
        .iter()
        .map(|c| c.formatted().expose_secret().to_owned())
        .collect();

    // As typed from paper: upper case, a blank for the dash.
    let typed = first[0].to_uppercase().replace('-', " ");
    assert_eq!(h.recovery.use_code(jane, &typed).await.unwrap(), 9);
    for again in [typed.as_str(), first[0].as_str(), "not-a-code", ""] {
        let err = h.recovery.use_code(jane, again).await.unwrap_err();
        assert!(matches!(err, MfaError::WrongCode), "{again:?}: {err:?}");
    }
    let john = h
        .store
        .create_user(&new_user("john@example.com"))
        .await
        .unwrap();
    let err = h.recovery.use_code(&john.id, &first[1]).await.unwrap_err();
    assert!(
        matches!(err, MfaError::WrongCode),
        "jane's code for john: {err:?}"
    );
    assert_eq!(h.recovery.left(jane).await.unwrap(), 9);

    // A new set replaces the whole old one.
    let second = h.recovery.regenerate(jane).await.unwrap();
    assert_eq!(h.recovery.left(jane).await.unwrap(), 10);
    let err = h.recovery.use_code(jane, &first[1]).await.unwrap_err();
    assert!(matches!(err, MfaError::WrongCode), "{err:?}");
    let code = second[0].formatted();
    assert_eq!(
        h.recovery
            .use_code(jane, code.expose_secret())
            .await
            .unwrap(),
        9
    );
}

async fn concurrent_uses_of_one_recovery_code_have_one_winner(backend: Backend) {
    let h = Arc::new(harness(backend).await);
    let codes = h.recovery.regenerate(&h.jane.id).await.unwrap();
    let code = codes[3].formatted().expose_secret().to_owned();
    let wins = winners(8, || {
        let (h, code) = (Arc::clone(&h), code.clone());
        async move { h.recovery.use_code(&h.jane.id, &code).await.is_ok() }
    })
    .await;
    assert_eq!(wins, 1);
    assert_eq!(h.recovery.left(&h.jane.id).await.unwrap(), 9);
}
