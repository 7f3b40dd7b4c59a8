//! Password hashing and verification, kept off the async workers.
//!
//! argon2id at the OWASP parameters costs ~19 MiB and tens of milliseconds
//! of CPU per call. Run inline it would stall every request on the same
//! worker; run unbounded, a login flood would allocate 19 MiB per request.
//! So each hash runs on the blocking pool behind a semaphore sized to the
//! cores: throughput stays at what the CPU can do and memory stays bounded.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OnceCell, Semaphore};

use crate::domain::{Password, PasswordHash};

/// OWASP Password Storage Cheat Sheet: m=19456 KiB, t=2, p=1.
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
pub const ARGON2_ITERATIONS: u32 = 2;
pub const ARGON2_PARALLELISM: u32 = 1;

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Valid {
        /// The hash uses an older scheme (bcrypt from the original service,
        /// or weaker argon2 parameters) and should be replaced now that we
        /// briefly hold the plaintext.
        needs_rehash: bool,
    },
    Invalid,
}

pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Hash verified for unknown emails so that "no such user" costs the
    /// same time as "wrong password" (no account enumeration by timing).
    dummy: OnceCell<PasswordHash>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_PARALLELISM,
        None,
    )
    .expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(secret: &SecretString) -> anyhow::Result<PasswordHash> {
    let salt = SaltString::generate(&mut OsRng);
    let phc = argon2()
        .hash_password(secret.expose_secret().as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
    Ok(PasswordHash::new(phc.to_string()))
}

fn verify_blocking(secret: &SecretString, stored: &PasswordHash) -> Verification {
    let stored = stored.expose();
    if stored.starts_with("$2") {
        // Legacy bcrypt from the Python service ($2b$12$...).
        return match bcrypt::verify(secret.expose_secret(), stored) {
            Ok(true) => Verification::Valid { needs_rehash: true },
            _ => Verification::Invalid,
        };
    }
    let Ok(parsed) = argon2::PasswordHash::new(stored) else {
        return Verification::Invalid;
    };
    if argon2()
        .verify_password(secret.expose_secret().as_bytes(), &parsed)
        .is_err()
    {
        return Verification::Invalid;
    }
    let current = parsed.algorithm.as_str() == "argon2id"
        && Params::try_from(&parsed)
            .is_ok_and(|p| p.m_cost() >= ARGON2_MEMORY_KIB && p.t_cost() >= ARGON2_ITERATIONS);
    Verification::Valid {
        needs_rehash: !current,
    }
}

impl Passwords {
    /// `concurrency` hashes may run at once; callers beyond that wait their
    /// turn without holding a thread.
    pub fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy: OnceCell::new(),
        }
    }

    /// Sized to the machine's cores: more would only add memory and queueing.
    pub fn for_this_machine() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, usize::from))
    }

    pub async fn hash(&self, password: &Password) -> anyhow::Result<PasswordHash> {
        let secret = SecretString::from(password.expose().to_owned());
        self.run(move || hash_blocking(&secret)).await?
    }

    pub async fn verify(
        &self,
        password: &Password,
        stored: &PasswordHash,
    ) -> anyhow::Result<Verification> {
        let secret = SecretString::from(password.expose().to_owned());
        let stored = stored.clone();
        self.run(move || verify_blocking(&secret, &stored)).await
    }

    /// Spends the same work as a real verification, for an unknown account.
    pub async fn verify_dummy(&self, password: &Password) -> anyhow::Result<()> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let secret = SecretString::from("dummy password for timing".to_owned());
                self.run(move || hash_blocking(&secret)).await?
            })
            .await?
            .clone();
        self.verify(password, &dummy).await.map(|_| ())
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let queue = metrics::gauge!(crate::metrics::HASH_QUEUE);
        queue.increment(1.0);
        // Decrement however this future ends (a client that hangs up drops it).
        let _queued = scopeguard(move || queue.decrement(1.0));
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| anyhow::anyhow!("password hasher is shut down"))?;
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| anyhow::anyhow!("password hashing task failed: {e}"));
        metrics::histogram!(crate::metrics::HASH_DURATION).record(started.elapsed().as_secs_f64());
        result
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let passwords = Passwords::new(2);
        let pw = Password::new("Str0ng!Pass123".into());
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
    }

    #[tokio::test]
    async fn legacy_bcrypt_verifies_and_asks_for_rehash() {
        let passwords = Passwords::new(1);
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
}
