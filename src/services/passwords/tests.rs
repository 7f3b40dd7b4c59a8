//! Hashing, verification, the strength check and the worker pool.

use super::*;

#[tokio::test]
async fn hashes_are_argon2id_salted_and_verify() {
    let passwords = Passwords::new(2).unwrap();
    let pw = Password::new("Str0ng!Pass123".into());
    // Cross-check with the argon2 crate's own PHC implementation.
    let theirs = {
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::generate(&mut OsRng);
        PasswordHash::new(
            argon2()
                .hash_password(b"Str0ng!Pass123", &salt)
                .unwrap()
                .to_string(),
        )
    };
    assert_eq!(
        passwords.verify(&pw, &theirs).await.unwrap(),
        Verification::Valid {
            needs_rehash: false
        }
    );
    let a = passwords.hash(&pw).await.unwrap();
    let b = passwords.hash(&pw).await.unwrap();
    assert!(a.expose().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    assert_ne!(a.expose(), b.expose(), "salts must differ");
    assert_eq!(
        passwords.verify(&pw, &a).await.unwrap(),
        Verification::Valid {
            needs_rehash: false
        }
    );
    let wrong = Password::new("Str0ng!Pass124".into());
    assert_eq!(
        passwords.verify(&wrong, &a).await.unwrap(),
        Verification::Invalid
    );
    passwords.verify_dummy(&wrong).await.unwrap();
    let parsed = argon2::PasswordHash::new(a.expose()).unwrap();
    argon2()
        .verify_password(b"Str0ng!Pass123", &parsed)
        .expect("the argon2 crate accepts our PHC");
}

#[tokio::test]
async fn new_passwords_are_checked_in_the_hashing_queue() {
    let passwords = Arc::new(Passwords::new(1).unwrap());
    // Occupy the only hashing thread until told to stop.
    let (started, running) = oneshot::channel();
    let (release, wait) = mpsc::channel::<()>();
    let busy = {
        let passwords = Arc::clone(&passwords);
        tokio::spawn(async move {
            let job = move |_: &mut [Block]| {
                let _ = started.send(());
                let _ = wait.recv();
            };
            passwords.run(job).await
        })
    };
    running.await.unwrap();
    let policy = PasswordPolicy { min_chars: 12 };
    let email = EmailAddress::parse("jane@example.com").unwrap();
    let weak = Password::new("password1234".into());
    let check = passwords.check_new(&weak, &policy, Some(&email), "password");
    tokio::pin!(check);
    // The strength estimate waits for a hashing thread: it never runs
    // on the caller's (async) thread.
    let waited = tokio::time::timeout(std::time::Duration::from_millis(200), &mut check);
    assert!(waited.await.is_err(), "checked while every hasher was busy");
    release.send(()).unwrap();
    let refused = check.await.unwrap().unwrap_err();
    assert_eq!(refused.field, "password");
    assert!(refused.messages[0].contains("too common"), "{refused:?}");
    busy.await.unwrap().unwrap();

    // Refused: no hash. Accepted: the hash of exactly that password.
    let hashed = passwords.check_and_hash_new(&weak, &policy, Some(&email), "password");
    assert_eq!(hashed.await.unwrap().unwrap_err(), refused);
    let strong = Password::new("Str0ng!Pass123".into());
    let hash = passwords
        .check_and_hash_new(&strong, &policy, Some(&email), "password")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        passwords.verify(&strong, &hash).await.unwrap(),
        Verification::Valid {
            needs_rehash: false
        }
    );
}

#[test]
fn reused_hash_memory_gives_the_crates_own_result() {
    let mut memory = HashMemory::new();
    let blocks = memory.blocks();
    assert_eq!(blocks.len(), params().block_count());
    assert_eq!(blocks.as_ptr() as usize % HUGE_PAGE, 0);
    assert!(blocks.iter().all(|b| b.as_ref().iter().all(|w| *w == 0)));
    let salt = [7u8; 16];
    let mut expected = [0u8; 32];
    argon2()
        .hash_password_into(b"Str0ng!Pass123", &salt, &mut expected)
        .unwrap();
    // Twice on the same memory: the second run starts from the first
    // one's leftovers, which must not matter.
    for _ in 0..2 {
        let mut out = [0u8; 32];
        argon2()
            .hash_password_into_with_memory(b"Str0ng!Pass123", &salt, &mut out, &mut *blocks)
            .unwrap();
        assert_eq!(out, expected);
    }
}

/// Where the kernel offers transparent huge pages, the hashing memory
/// asks for them (`hg` in its mapping's flags).
#[cfg(target_os = "linux")]
#[test]
fn hash_memory_is_advised_as_huge_pages() {
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
        return;
    }
    let mut memory = HashMemory::new();
    let start = memory.blocks().as_ptr() as usize;
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut in_mapping = false;
    let mut flags = None;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    in_mapping = (a..b).contains(&start);
                    continue;
                }
            }
        }
        if in_mapping {
            if let Some(f) = line.strip_prefix("VmFlags:") {
                flags = Some(f.to_owned());
            }
        }
    }
    let flags = flags.expect("the hashing memory is mapped");
    assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
}

#[tokio::test]
async fn abandoned_requests_are_not_hashed() {
    let passwords = std::sync::Arc::new(Passwords::new(1).unwrap());
    let pw = Password::new("Str0ng!Pass123".into());
    let before = passwords.hash(&pw).await.unwrap();
    // Queue many hashes and drop them before they run.
    for _ in 0..50 {
        let p = std::sync::Arc::clone(&passwords);
        let pw = Password::new("Str0ng!Pass123".into());
        let task = tokio::spawn(async move { p.hash(&pw).await });
        tokio::task::yield_now().await;
        task.abort();
    }
    // 50 queued hashes would take ~1 s; skipped ones take nothing.
    let started = std::time::Instant::now();
    let after = passwords.hash(&pw).await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(before.expose(), after.expose());
}

#[tokio::test]
async fn weaker_argon2_parameters_verify_and_ask_for_rehash() {
    use argon2::password_hash::PasswordHasher as _;
    let weak = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(4096, 1, 1, None).unwrap(),
    );
    let salt = SaltString::generate(&mut OsRng);
    let stored = PasswordHash::new(
        weak.hash_password(b"Str0ng!Pass123", &salt)
            .unwrap()
            .to_string(),
    );
    let passwords = Passwords::new(1).unwrap();
    assert_eq!(
        passwords
            .verify(&Password::new("Str0ng!Pass123".into()), &stored)
            .await
            .unwrap(),
        Verification::Valid { needs_rehash: true }
    );
    assert_eq!(
        passwords
            .verify(&Password::new("nope".into()), &stored)
            .await
            .unwrap(),
        Verification::Invalid
    );
}

#[tokio::test]
async fn legacy_bcrypt_verifies_and_asks_for_rehash() {
    let passwords = Passwords::new(1).unwrap();
    let legacy = PasswordHash::new(bcrypt::hash("Str0ng!Pass123", 4).unwrap());
    let pw = Password::new("Str0ng!Pass123".into());
    assert_eq!(
        passwords.verify(&pw, &legacy).await.unwrap(),
        Verification::Valid { needs_rehash: true }
    );
    let wrong = Password::new("nope".into());
    assert_eq!(
        passwords.verify(&wrong, &legacy).await.unwrap(),
        Verification::Invalid
    );
    let garbage = PasswordHash::new("not a hash".into());
    assert_eq!(
        passwords.verify(&pw, &garbage).await.unwrap(),
        Verification::Invalid
    );
}
