//! Fault injection against the real binary (issue 16), with real faults:
//! kill -9 during mixed load, and a database whose disk fills up.
//!
//! What must hold: every operation a client saw succeed is in the store
//! and has its audit record, and the chain verifies; a write fault is a 503
//! `database_unavailable` with Retry-After within a bounded time (never a
//! 500, never a hang), `/health` says so, and everything recovers by itself
//! once the fault is gone.

mod common;
#[path = "support/process.rs"]
mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clinic_auth::config::Config;
use clinic_auth::domain::{EmailAddress, TokenHash};
use clinic_auth::storage::Store;
use common::{database_pair, refresh_cookie, Backend, PASSWORD};
use process::{assert_audit_verifies, configuration, Service};
use rand::Rng;
use serde_json::{json, Value};

backend_tests!(kill_9_during_mixed_load_loses_no_acknowledged_record);

/// Kill rounds per backend, each on the same database as the one before.
const ROUNDS: usize = 3;
/// Concurrent clients, each mixing registrations, sign-ins and refreshes.
const CLIENTS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Register,
    Login,
    Refresh,
}

/// Without the token.
impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}", self.kind, self.request_id)
    }
}

impl Kind {
    /// The audit event an acknowledged operation of this kind must have.
    fn event(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Login => "login_success",
            Kind::Refresh => "refresh",
        }
    }
}

/// An operation whose success answer reached the client.
struct Ack {
    kind: Kind,
    request_id: String,
    email: String,
    /// The refresh token it handed out (login, refresh).
    token: Option<String>,
}

/// kill -9 at a random moment of mixed load, three times on one database:
/// no acknowledged operation is without its write or its audit record, and
/// `audit verify` passes after each kill. Before issue 16 the audit writer
/// lingered up to 20 ms after the answer was sent, and the operations
/// acknowledged in those last milliseconds had no record.
async fn kill_9_during_mixed_load_loses_no_acknowledged_record(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let database = database_pair(backend, dir.path()).await;
    let vars = configuration(dir.path(), database.clone());
    for round in 0..ROUNDS {
        let mut service = Service::start(dir.path(), &vars).await;
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let signed_in = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                tokio::spawn(mixed_load(
                    service.base.clone(),
                    format!("r{round}c{client}"),
                    Arc::clone(&acks),
                    Arc::clone(&failures),
                    Arc::clone(&signed_in),
                ))
            })
            .collect();
        // The first registrations and sign-ins are argon2 work; the kill
        // falls at a random moment once every client is in its mix.
        let mixing_by = Instant::now() + Duration::from_secs(60);
        while signed_in.load(Ordering::SeqCst) < CLIENTS {
            assert!(Instant::now() < mixing_by, "the clients never signed in");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let kill_after = rand::thread_rng().gen_range(100..1000);
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        service.kill9();
        for client in clients {
            client.await.unwrap();
        }
        let failures = std::mem::take(&mut *failures.lock().unwrap());
        assert!(
            failures.is_empty(),
            "answers that are not success: {failures:?}"
        );
        let acks = std::mem::take(&mut *acks.lock().unwrap());
        assert!(
            acks.len() > 2 * CLIENTS,
            "round {round}: only {} operations acknowledged in {kill_after} ms:\n{}",
            acks.len(),
            service.logs()
        );
        let store = open_store(&database).await;
        let missing = without_record(store.as_ref(), &acks).await;
        assert!(
            missing.is_empty(),
            "round {round} (kill after {kill_after} ms): {} of {} acknowledged operations have \
             no audit record: {missing:?}",
            missing.len(),
            acks.len()
        );
        assert_writes_stored(store.as_ref(), &acks).await;
        assert_audit_verifies(dir.path(), &vars).await;
    }
}

/// One client: registers an account, signs in, refreshes, and again, until
/// the service is gone. Each request carries its own X-Request-Id, which the
/// service keeps and records in the audit trail.
async fn mixed_load(
    base: String,
    name: String,
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<Mutex<Vec<String>>>,
    signed_in: Arc<AtomicUsize>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let own = format!("{name}-0@example.com");
    let mut token: Option<String> = None;
    for n in 0.. {
        let request_id = format!("kill9-{name}-{n}");
        // Mostly refreshes (cheap: hundreds a second), so many operations
        // are acknowledged in the last milliseconds before the kill.
        let (kind, email, request) = match n % 12 {
            0 => {
                let email = format!("{name}-{n}@example.com");
                let body = json!({"name": "Dr Load", "email": email, "password": PASSWORD});
                let request = http.post(format!("{base}/api/auth/register")).json(&body);
                (Kind::Register, email, request)
            }
            // The first sign-in needs the first registration; later ones
            // start a new refresh chain.
            1 => {
                let body = json!({"email": own, "password": PASSWORD});
                let request = http.post(format!("{base}/api/auth/login")).json(&body);
                (Kind::Login, own.clone(), request)
            }
            _ => {
                let Some(current) = &token else { continue };
                let request = http
                    .post(format!("{base}/api/auth/refresh"))
                    .header("cookie", format!("refresh_token={current}"));
                (Kind::Refresh, own.clone(), request)
            }
        };
        // A request the kill interrupted has no answer: not acknowledged.
        let Ok(res) = request.header("x-request-id", &request_id).send().await else {
            return;
        };
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            failures
                .lock()
                .unwrap()
                .push(format!("{request_id}: {status} {body}"));
            return;
        }
        let issued = refresh_cookie(res.headers());
        // The answer is complete only with its body.
        if res.bytes().await.is_err() {
            return;
        }
        if issued.is_some() {
            if token.is_none() {
                signed_in.fetch_add(1, Ordering::SeqCst);
            }
            token.clone_from(&issued);
        }
        acks.lock().unwrap().push(Ack {
            kind,
            request_id,
            email,
            token: issued,
        });
    }
}

async fn open_store(database: &(String, String)) -> Arc<dyn Store> {
    let config = Config::from_pairs(&[(database.0.as_str(), database.1.as_str())]).unwrap();
    clinic_auth::app::open_store(&config).await.unwrap()
}

/// Every audit record, as request id -> events.
async fn records_by_request(store: &dyn Store) -> HashMap<String, Vec<String>> {
    let mut by_request: HashMap<String, Vec<String>> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.audit_events_after(after, 1000).await.unwrap();
        let Some(last) = page.last() else {
            return by_request;
        };
        after = last.seq;
        for record in page {
            if let Some(id) = record.request_id {
                by_request
                    .entry(id)
                    .or_default()
                    .push(record.event.as_str().to_owned());
            }
        }
    }
}

/// The acknowledged operations whose audit record is not stored.
async fn without_record<'a>(store: &dyn Store, acks: &'a [Ack]) -> Vec<&'a Ack> {
    let records = records_by_request(store).await;
    acks.iter()
        .filter(|ack| {
            !records
                .get(&ack.request_id)
                .is_some_and(|events| events.iter().any(|e| e == ack.kind.event()))
        })
        .collect()
}

/// The acknowledged changes themselves: each registered account exists and
/// each refresh token handed out is stored.
async fn assert_writes_stored(store: &dyn Store, acks: &[Ack]) {
    for ack in acks {
        match ack.kind {
            Kind::Register => {
                let email = EmailAddress::parse(&ack.email).unwrap();
                assert!(
                    store.find_user_by_email(&email).await.unwrap().is_some(),
                    "acknowledged registration {} lost",
                    ack.request_id
                );
            }
            Kind::Login | Kind::Refresh => {
                let token = ack.token.as_deref().expect("a refresh cookie");
                assert!(
                    store
                        .find_refresh_token(&TokenHash::of(token))
                        .await
                        .unwrap()
                        .is_some(),
                    "refresh token of acknowledged {} lost",
                    ack.request_id
                );
            }
        }
    }
}

/// A small tmpfs mounted for one test, unmounted when dropped (also when
/// the test fails). Mounting needs root, which CI has.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(megabytes: u32) -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "this test mounts a {megabytes} MiB tmpfs to fill a real disk and needs root (CI \
             runs as root): run it as root, e.g. `sudo -E cargo test --test faults`"
        );
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m,mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cannot mount a tmpfs (it needs root with CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file of zeros until the file system is full; returns it.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 20, 4096, 512] {
            let zeros = vec![0u8; chunk];
            while file.write_all(&zeros).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.dir.path().to_owned();
        let unmounted = std::process::Command::new("umount")
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy: detach it now, the kernel frees it when unused.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&path)
                .status();
        }
    }
}

/// What one request during the outage got, and how long it took.
struct Outcome {
    status: u16,
    took: Duration,
    request_id: String,
}

/// The database's disk fills up under a running service: registrations,
/// sign-ins and refreshes answer 503 `database_unavailable` with
/// Retry-After within a bounded time, never 500 and never a hang; reads go
/// on; `/health` says `degraded`. Once space returns, everything works
/// again without a restart, the audit events that were queued while the
/// disk was full are stored, and `audit verify` passes. Before issue 16 a
/// full disk answered 500, `/health` stayed green, and one failed audit
/// append stopped the trail for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_recovers_without_a_restart() {
    // Declared first, dropped last: the service is gone before the unmount.
    let tmpfs = Tmpfs::mount(16);
    let dir = tempfile::tempdir().unwrap();
    let database = (
        "DATABASE_URL".to_owned(),
        format!("sqlite://{}/clinic-auth.db", tmpfs.path().display()),
    );
    let vars = configuration(dir.path(), database.clone());
    let mut service = Service::start(dir.path(), &vars).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let register = |email: &str| {
        let body = json!({"name": "Dr Jane", "email": email, "password": PASSWORD});
        http.post(service.url("/api/auth/register")).json(&body)
    };
    let login = |email: &str| {
        let body = json!({"email": email, "password": PASSWORD});
        http.post(service.url("/api/auth/login")).json(&body)
    };
    let res = register("jane@example.com").send().await.unwrap();
    assert_eq!(res.status(), 201);
    let res = login("jane@example.com").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut token = refresh_cookie(res.headers()).unwrap();
    let access = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let filler = tmpfs.fill();
    // The database's write-ahead log has room left from before; writes go
    // on until it is used up, then every write fails.
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut degraded = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in 0.. {
        assert!(
            Instant::now() < deadline,
            "no 503 and degraded /health within two minutes of the disk filling up:\n{}",
            service.logs()
        );
        let request_id = format!("full-{n}");
        let request = match n % 3 {
            // A new email each time: a failed sign-in is counted per email,
            // and five would lock one.
            0 => login(&format!("nobody{n}@example.com")),
            1 => register(&format!("full{n}@example.com")),
            _ => http
                .post(service.url("/api/auth/refresh"))
                .header("cookie", format!("refresh_token={token}")),
        };
        let started = Instant::now();
        let res = request
            .header("x-request-id", &request_id)
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        let status = res.status().as_u16();
        if let Some(next) = refresh_cookie(res.headers()).filter(|_| status == 200) {
            token = next;
        }
        assert!(
            took < Duration::from_secs(10),
            "{request_id} took {took:?}: a request must not hang on a full disk"
        );
        match status {
            200 | 201 | 401 => {}
            503 => {
                assert!(res.headers().get("retry-after").is_some(), "{request_id}");
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
            }
            other => panic!(
                "{request_id}: {other} {} on a full disk:\n{}",
                res.text().await.unwrap_or_default(),
                service.logs()
            ),
        }
        outcomes.push(Outcome {
            status,
            took,
            request_id,
        });
        let health = http.get(service.url("/health")).send().await.unwrap();
        if health.status() == 503 {
            let body: Value = health.json().await.unwrap();
            assert_eq!(
                body,
                json!({"status": "degraded", "database": "unavailable"})
            );
            degraded = true;
        }
        let unavailable = outcomes.iter().filter(|o| o.status == 503).count();
        if degraded && unavailable >= 3 {
            break;
        }
    }
    // Reading does not need the disk.
    let me = http
        .get(service.url("/api/auth/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "reads go on while writes fail");

    std::fs::remove_file(&filler).unwrap();
    let recovered_by = Instant::now() + Duration::from_secs(15);
    while http
        .get(service.url("/health"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(
            Instant::now() < recovered_by,
            "/health still degraded 15 s after space returned:\n{}",
            service.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = register("after@example.com").send().await.unwrap();
    assert_eq!(res.status(), 201, "writes work again without a restart");
    let res = login("after@example.com")
        .header("x-request-id", "after-login")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // A failed sign-in records its event before anything else is written,
    // so the first ones after the disk filled waited for their record
    // (RECORD_WAIT, 5 s) and answered 503 with the event still queued. It
    // is stored now that space is back.
    let queued: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status == 503 && o.took >= Duration::from_secs(4))
        .collect();
    assert!(
        !queued.is_empty(),
        "no request waited for a queued audit record: {:?}",
        outcomes
            .iter()
            .map(|o| (&o.request_id, o.status, o.took))
            .collect::<Vec<_>>()
    );
    let store = open_store(&database).await;
    let records = records_by_request(store.as_ref()).await;
    for outcome in &queued {
        assert!(
            records.contains_key(&outcome.request_id),
            "the audit event of {} (answered 503 after {:?}) was not stored once space \
             returned",
            outcome.request_id,
            outcome.took
        );
    }
    assert!(records.contains_key("after-login"));
    // Every acknowledged operation during the outage has its record too.
    for outcome in outcomes.iter().filter(|o| o.status < 300) {
        assert!(
            records.contains_key(&outcome.request_id),
            "{}",
            outcome.request_id
        );
    }
    assert_audit_verifies(dir.path(), &vars).await;
    let status = service.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", service.logs());
}
