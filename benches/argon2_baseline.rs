//! Raw argon2id throughput on this machine, with the service's parameters
//! and the service's parallelism: `available_parallelism` threads, each
//! hashing in a loop for a few seconds. The login and register routes can
//! at best reach this rate (every request costs one argon2id run), so
//! `scripts/bench.py` reports their throughput as a ratio to it.
//!
//! Run: `cargo bench --bench argon2_baseline` (harness = false).
//! Knobs (environment): ARGON2_BASELINE_SECS (default 5),
//! ARGON2_BASELINE_THREADS (default: available_parallelism).
//!
//! Prints one machine-readable line:
//! `ARGON2_BASELINE {"hashes_per_sec":..,"threads":..,...}`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use argon2::Block;
use clinic_auth::services::passwords::{
    hash_with_memory, HashMemory, ARGON2_ITERATIONS, ARGON2_MEMORY_KIB, ARGON2_PARALLELISM,
};

const PASSWORD: &[u8] = b"Str0ng!Pass123";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Exactly what the service does per hash: `hash_with_memory` with the
/// thread's own preallocated argon2 memory (`HashMemory`, huge pages and all), a fresh salt, PHC string out.
fn hash_once(blocks: &mut [Block]) -> String {
    hash_with_memory(PASSWORD, blocks).expect("argon2id hashing works")
}

/// CPU seconds (user + system, all threads) of this process so far, from
/// /proc/self/stat (Linux; ticks of USER_HZ = 100). None elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn main() {
    // cargo bench passes `--bench` (and maybe a filter); nothing to parse.
    let seconds: f64 = env_or("ARGON2_BASELINE_SECS", 5.0_f64).max(0.5);
    let threads: usize = env_or(
        "ARGON2_BASELINE_THREADS",
        std::thread::available_parallelism().map_or(2, usize::from),
    )
    .max(1);

    // One warm-up hash per thread (page faults of the first 19 MiB block,
    // lazy statics) before the clock starts.
    let start = Arc::new(Barrier::new(threads + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let start = Arc::clone(&start);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut memory = HashMemory::new();
                let blocks = memory.blocks();
                std::hint::black_box(hash_once(blocks));
                start.wait();
                let mut done = 0u64;
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    std::hint::black_box(hash_once(blocks));
                    latencies.push(t.elapsed());
                    done += 1;
                }
                (done, latencies)
            })
        })
        .collect();

    start.wait();
    let cpu_before = process_cpu_seconds();
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut hashes = 0u64;
    let mut latencies: Vec<Duration> = Vec::new();
    for h in handles {
        let (n, l) = h.join().expect("hashing thread panicked");
        hashes += n;
        latencies.extend(l);
    }
    // Threads finish the hash in flight after `stop`: count until the last one.
    let elapsed = began.elapsed().as_secs_f64();
    // CPU per hash is far less sensitive to other load on a shared machine
    // than hashes per second; bench.py compares the routes' CPU per request
    // with it.
    let cpu_ms_per_hash = match (cpu_before, process_cpu_seconds()) {
        (Some(a), Some(b)) if hashes > 0 => format!("{:.3}", (b - a) * 1000.0 / hashes as f64),
        _ => "null".to_owned(),
    };
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median_ms = latencies.get(latencies.len() / 2).map_or(0.0, |d| ms(*d));
    let hashes_per_sec = hashes as f64 / elapsed;

    eprintln!(
        "argon2id m={ARGON2_MEMORY_KIB} KiB t={ARGON2_ITERATIONS} p={ARGON2_PARALLELISM}: \
         {hashes} hashes on {threads} threads in {elapsed:.2} s = {hashes_per_sec:.1} hashes/s \
         (median {median_ms:.1} ms per hash, {cpu_ms_per_hash} ms CPU per hash)"
    );
    println!(
        "ARGON2_BASELINE {{\"hashes_per_sec\":{hashes_per_sec:.3},\"hashes\":{hashes},\
         \"threads\":{threads},\"seconds\":{elapsed:.3},\"median_ms_per_hash\":{median_ms:.3},\
         \"cpu_ms_per_hash\":{cpu_ms_per_hash},\
         \"m_kib\":{ARGON2_MEMORY_KIB},\"t\":{ARGON2_ITERATIONS},\"p\":{ARGON2_PARALLELISM}}}"
    );
}
