//! Password hashing and verification, on a small pool of its own.
//!
//! argon2id at the OWASP parameters costs ~19 MiB and tens of milliseconds
//! of CPU per call. Run on the async workers it would stall every request;
//! run on tokio's blocking pool, every one of its (up to 512) threads would
//! end up with a 19 MiB buffer parked in its own malloc arena, so a
//! registration flood grows RSS without bound (see BENCHMARKS.md for the
//! numbers). So hashing runs on one thread
//! per core, each reusing one preallocated argon2 memory: RSS stays at
//! cores x 19 MiB whatever the load. The threads run at a lower scheduling
//! priority, so a login flood takes only the CPU that token checks and
//! health probes leave idle.
//!
//! The strength check of a new password runs on the same threads, in the
//! same job as its hash. zxcvbn's estimate grows with the square of the
//! length: a long password costs as much as a hash. On an async worker a
//! registration flood of long passwords stalled every other route (see
//! BENCHMARKS.md); here it waits in the same bounded queue as the hashes
//! and every other route stays responsive.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordVerifier as _, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{oneshot, OnceCell};

use crate::domain::{EmailAddress, FieldError, Password, PasswordHash, PasswordPolicy};

/// OWASP Password Storage Cheat Sheet: m=19456 KiB, t=2, p=1.
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
pub const ARGON2_ITERATIONS: u32 = 2;
pub const ARGON2_PARALLELISM: u32 = 1;

/// Niceness of the hashing threads: below the async workers, so latency of
/// everything else holds under a login flood.
const HASHER_NICENESS: i32 = 10;

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

/// The service's argon2id instance.
pub fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// One hashing thread's argon2 memory: `m_cost` blocks of 1 KiB, kept for
/// the thread's lifetime and reused by every hash it runs.
///
/// argon2 reads blocks all over its 19 MiB at random, so with 4 KiB pages
/// nearly every block access walks the page tables (4,864 pages, more than
/// the CPU's TLB holds). The memory is therefore aligned to 2 MiB and, on
/// Linux, advised as a transparent huge page region (the kernel's default
/// THP mode on most distributions is "madvise": nothing gets huge pages
/// unless it asks). Where the kernel says no, it is ordinary memory.
pub struct HashMemory {
    blocks: std::ptr::NonNull<Block>,
    len: usize,
}

/// A transparent huge page on x86-64 and aarch64 (4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

// The one owned allocation argon2 works in: see each SAFETY note.
#[allow(unsafe_code)]
impl HashMemory {
    pub fn new() -> Self {
        let len = params().block_count();
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (the block count of the
        // constant parameters). The pointer is checked for null, and the
        // zeroing below writes exactly the layout's bytes. An all-zero
        // `Block` is valid: it is a plain array of u64, and its `Default`.
        unsafe {
            let raw = std::alloc::alloc(layout);
            let Some(blocks) = std::ptr::NonNull::new(raw.cast::<Block>()) else {
                std::alloc::handle_alloc_error(layout)
            };
            advise_huge_pages(raw, layout.size());
            // After the advice, so the first touch faults in huge pages.
            std::ptr::write_bytes(raw, 0, layout.size());
            Self { blocks, len }
        }
    }

    pub fn blocks(&mut self) -> &mut [Block] {
        // SAFETY: `blocks` points to `len` initialised blocks owned by
        // `self`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_ptr(), self.len) }
    }

    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::array::<Block>(len)
            .and_then(|l| l.align_to(HUGE_PAGE))
            .expect("19 MiB of argon2 blocks is a valid layout")
    }
}

impl Default for HashMemory {
    fn default() -> Self {
        Self::new()
    }
}

#[allow(unsafe_code)] // dealloc: see the SAFETY note below
impl Drop for HashMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout, freed once.
        unsafe { std::alloc::dealloc(self.blocks.as_ptr().cast(), Self::layout(self.len)) }
    }
}

// SAFETY: `HashMemory` owns its allocation exclusively, like a `Box<[Block]>`.
#[allow(unsafe_code)]
unsafe impl Send for HashMemory {}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // madvise: see the SAFETY note below
fn advise_huge_pages(start: *mut u8, len: usize) {
    // SAFETY: the range is one live allocation of ours; MADV_HUGEPAGE only
    // changes how the kernel backs it, never its contents.
    let result = unsafe { libc::madvise(start.cast(), len, libc::MADV_HUGEPAGE) };
    if result != 0 {
        tracing::debug!("the kernel declined huge pages for argon2 memory");
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_start: *mut u8, _len: usize) {}

fn params() -> Params {
    Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_PARALLELISM,
        None,
    )
    .expect("constant argon2 parameters are valid")
}

/// Hashes with the caller's preallocated argon2 memory; returns the PHC
/// string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
pub fn hash_with_memory(password: &[u8], blocks: &mut [Block]) -> anyhow::Result<String> {
    let mut salt_bytes = [0u8; 16];
    OsRng.fill_bytes(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let argon2 = argon2();
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        argon2
            .hash_password_into_with_memory(password, &salt_bytes, out, &mut *blocks)
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
    let phc = argon2::PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params()).map_err(|e| anyhow::anyhow!("params: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

fn verify_blocking(
    secret: &SecretString,
    stored: &PasswordHash,
    blocks: &mut [Block],
) -> Verification {
    let stored = stored.expose();
    let password = secret.expose_secret().as_bytes();
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
    let ours = params();
    let current = parsed.algorithm == Algorithm::Argon2id.ident()
        && Params::try_from(&parsed).is_ok_and(|p| {
            p.m_cost() == ours.m_cost()
                && p.t_cost() == ours.t_cost()
                && p.p_cost() == ours.p_cost()
        });
    let valid = match (&parsed.hash, &parsed.salt) {
        // Current parameters: recompute in the thread's own memory.
        (Some(expected), Some(salt)) if current => {
            let mut salt_buf = [0u8; 64];
            let computed = salt.decode_b64(&mut salt_buf).ok().and_then(|salt| {
                Output::init_with(expected.len(), |out| {
                    argon2()
                        .hash_password_into_with_memory(password, salt, out, &mut *blocks)
                        .map_err(|_| argon2::password_hash::Error::Crypto)
                })
                .ok()
            });
            // Output's equality is constant-time.
            computed.is_some_and(|c| &c == expected)
        }
        // Older or foreign parameters: the generic (allocating) path.
        _ => argon2().verify_password(password, &parsed).is_ok(),
    };
    if !valid {
        return Verification::Invalid;
    }
    let strong_enough = parsed.algorithm == Algorithm::Argon2id.ident()
        && Params::try_from(&parsed)
            .is_ok_and(|p| p.m_cost() >= ARGON2_MEMORY_KIB && p.t_cost() >= ARGON2_ITERATIONS);
    Verification::Valid {
        needs_rehash: !strong_enough,
    }
}

type Job = Box<dyn FnOnce(&mut [Block]) + Send>;

pub struct Passwords {
    /// `Sender` is `Sync`: every request sends on the same one, unlocked.
    jobs: mpsc::Sender<Job>,
    /// Hash verified for unknown emails so that "no such user" costs the
    /// same time as "wrong password" (no account enumeration by timing).
    dummy: OnceCell<PasswordHash>,
}

impl Passwords {
    /// Starts `threads` hashing threads; callers beyond that queue up without
    /// holding a thread or any argon2 memory. Fails when the OS refuses a
    /// thread (the threads already started end as the sender is dropped).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        // Workers take turns at the one receiver.
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&rx))?;
        }
        Ok(Self {
            jobs: tx,
            dummy: OnceCell::new(),
        })
    }

    /// One hashing thread per core: more would only add memory and queueing.
    pub fn for_this_machine() -> std::io::Result<Self> {
        Self::new(std::thread::available_parallelism().map_or(2, usize::from))
    }

    pub async fn hash(&self, password: &Password) -> anyhow::Result<PasswordHash> {
        let secret = SecretString::from(password.expose().to_owned());
        let phc = self
            .run(move |blocks| hash_with_memory(secret.expose_secret().as_bytes(), blocks))
            .await??;
        Ok(PasswordHash::new(phc))
    }

    /// Checks a new password against the policy (see
    /// [`Password::check_new`]) without hashing it: for a form that is
    /// refused anyway but should list every problem at once.
    pub async fn check_new(
        &self,
        password: &Password,
        policy: &PasswordPolicy,
        email: Option<&EmailAddress>,
        field: &'static str,
    ) -> anyhow::Result<Result<(), FieldError>> {
        let candidate = Password::new(password.expose().to_owned());
        let (policy, email) = (*policy, email.cloned());
        self.run(move |_| candidate.check_new(&policy, email.as_ref(), field))
            .await
    }

    /// Checks a new password against the policy and, when it passes,
    /// hashes it, in one job: the answer is the policy's refusal or the
    /// hash to store.
    pub async fn check_and_hash_new(
        &self,
        password: &Password,
        policy: &PasswordPolicy,
        email: Option<&EmailAddress>,
        field: &'static str,
    ) -> anyhow::Result<Result<PasswordHash, FieldError>> {
        let candidate = Password::new(password.expose().to_owned());
        let (policy, email) = (*policy, email.cloned());
        let outcome = self
            .run(
                move |blocks| match candidate.check_new(&policy, email.as_ref(), field) {
                    Ok(()) => hash_with_memory(candidate.expose().as_bytes(), blocks)
                        .map(|phc| Ok(PasswordHash::new(phc))),
                    Err(refused) => Ok(Err(refused)),
                },
            )
            .await??;
        Ok(outcome)
    }

    pub async fn verify(
        &self,
        password: &Password,
        stored: &PasswordHash,
    ) -> anyhow::Result<Verification> {
        let secret = SecretString::from(password.expose().to_owned());
        let stored = stored.clone();
        self.run(move |blocks| verify_blocking(&secret, &stored, blocks))
            .await
    }

    /// Spends the same work as a real verification, for an unknown account.
    pub async fn verify_dummy(&self, password: &Password) -> anyhow::Result<()> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let secret = Password::new("dummy password for timing".to_owned());
                self.hash(&secret).await
            })
            .await?
            .clone();
        self.verify(password, &dummy).await.map(|_| ())
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let queue = metrics::gauge!(crate::metrics::HASH_QUEUE);
        queue.increment(1.0);
        // Decrement however this future ends (a client that hangs up drops it).
        let _queued = scopeguard(move || queue.decrement(1.0));
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |blocks| {
            // The caller hung up while queued (a flood that disconnects):
            // skip the work rather than hash for nobody.
            if done.is_closed() {
                return;
            }
            let started = std::time::Instant::now();
            let value = job(blocks);
            metrics::histogram!(crate::metrics::HASH_DURATION)
                .record(started.elapsed().as_secs_f64());
            // The caller may have gone away; nothing to do then.
            let _ = done.send(value);
        });
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("password hasher is shut down"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("password hashing thread failed"))
    }
}

fn worker(rx: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    // Allocated on first use: an idle service holds no argon2 memory.
    let mut memory: Option<HashMemory> = None;
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(memory.get_or_insert_with(HashMemory::new).blocks()),
            // Every sender is gone: the service is shutting down.
            Err(_) => return,
        }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // gettid and setpriority: see the SAFETY note below
fn lower_priority() {
    // On Linux a thread id is a valid PRIO_PROCESS target and affects only
    // that thread.
    // SAFETY: plain syscalls with no pointers.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, HASHER_NICENESS)
    };
    if result != 0 {
        tracing::debug!("could not lower the hashing thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

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
mod tests;
