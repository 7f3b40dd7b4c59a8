//! A MongoDB for tests: the server named by `TEST_MONGO_URI`, or else
//! nx-27017 (the MongoDB wire protocol over SQLite) started from the repo's
//! `.venv` by `scripts/nx_mongo.py` (run `scripts/setup-test-env.sh` first).
//!
//! Every started server gets `--watch-parent <this pid>`: the launcher exits
//! as soon as the test binary is gone, however it ended, because statics are
//! never dropped and a killed run would otherwise leave servers behind.

// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::OnceCell;

/// How long a fresh nx-27017 may take to accept connections (Python start-up
/// on a busy 2-core CI machine that is also compiling).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts with a new port when the one picked was taken in between.
const START_ATTEMPTS: usize = 5;

/// The nx-27017 server shared by every test of this process.
static SHARED_PORT: OnceCell<u16> = OnceCell::const_new();

/// A URI for a database no other test uses (`mongodb://host:port/<fresh>`).
///
/// With `TEST_MONGO_URI` set, its server is used and only the database name
/// is replaced; otherwise one nx-27017 is started for the whole test process
/// on first use.
pub async fn test_mongo_uri() -> String {
    let db = fresh_db_name();
    if let Ok(uri) = std::env::var("TEST_MONGO_URI") {
        if !uri.trim().is_empty() {
            return with_database(uri.trim(), &db);
        }
    }
    let port = SHARED_PORT
        .get_or_init(|| async {
            let dir = tempfile::tempdir().expect("cannot create a temp dir for nx-27017");
            let (_child, port) = start_on_free_port(dir.path(), "memory").await;
            // The handle is dropped without killing (std never kills on
            // drop): the watchdog ends the server with this process. The
            // temp dir goes too; the running server keeps its open log file.
            port
        })
        .await;
    format!("mongodb://127.0.0.1:{port}/{db}")
}

/// A database name unique across tests, processes and runs against one
/// server (pid alone repeats across runs).
pub fn fresh_db_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or_default();
    format!(
        "test_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `uri` with its database (path) set to `db`, keeping credentials, hosts
/// and options.
fn with_database(uri: &str, db: &str) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("mongodb", uri));
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    // Hosts end at the first '/' (a password may not contain a raw '/').
    let hosts = before_query.split('/').next().unwrap_or(before_query);
    match query {
        Some(q) => format!("{scheme}://{hosts}/{db}?{q}"),
        None => format!("{scheme}://{hosts}/{db}"),
    }
}

/// A dedicated nx-27017 a test can stop and start again on the same port,
/// to see the app lose and regain its database. Its data lives in a file,
/// so it survives a restart as it would with a real mongod.
pub struct MongoServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl MongoServer {
    /// Starts a new server on a free port and waits until it accepts
    /// connections.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temp dir for nx-27017");
        let db = dir.path().join("nx.db");
        let (child, port) = start_on_free_port(dir.path(), db.to_str().unwrap()).await;
        Self {
            port,
            dir,
            child: Some(child),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URI for database `db` on this server.
    pub fn uri(&self, db: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{db}", self.port)
    }

    /// Kills the server (like a crash: no goodbye to clients) and waits until
    /// it is gone. Does nothing if it is already stopped.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    /// Starts the server again on the same port, with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        let db = self.dir.path().join("nx.db");
        let mut last_error = String::new();
        // The port was ours a moment ago; retrying covers a slow release.
        for _ in 0..START_ATTEMPTS {
            match start(self.dir.path(), db.to_str().unwrap(), self.port).await {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => {
                    last_error = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        panic!(
            "cannot restart nx-27017 on port {}: {last_error}",
            self.port
        );
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn start_on_free_port(dir: &Path, db: &str) -> (Child, u16) {
    let mut last_error = String::new();
    for _ in 0..START_ATTEMPTS {
        let port = super::net::free_port();
        match start(dir, db, port).await {
            Ok(child) => return (child, port),
            // Most likely someone took the port between our probe and the
            // server's bind; try another.
            Err(e) => last_error = e,
        }
    }
    panic!("cannot start nx-27017: {last_error}");
}

/// Spawns nx-27017 on `port` and waits until it accepts TCP connections.
/// On failure the server is killed and its log returned.
async fn start(dir: &Path, db: &str, port: u16) -> Result<Child, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    let launcher = root.join("scripts/nx_mongo.py");
    assert!(
        python.exists(),
        "{} not found: run `bash scripts/setup-test-env.sh` first (or set TEST_MONGO_URI)",
        python.display()
    );
    let log_path = dir.join(format!("nx-{port}.log"));
    let log = File::create(&log_path).map_err(|e| format!("cannot create log: {e}"))?;
    let mut child = Command::new(&python)
        .arg(&launcher)
        .args(["--watch-parent", &std::process::id().to_string()])
        .args(["--db", db, "--host", "127.0.0.1", "-p", &port.to_string()])
        .arg("--pid-file")
        .arg(dir.join(format!("nx-{port}.pid")))
        .args(["--log-file", "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "nx-27017 exited with {status} on port {port}:\n{}",
                read_log(&log_path)
            ));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "nx-27017 did not listen on port {port} within {START_TIMEOUT:?}:\n{}",
                read_log(&log_path)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced_or_appended() {
        assert_eq!(with_database("mongodb://h:1", "d"), "mongodb://h:1/d");
        assert_eq!(
            with_database("mongodb://u:p@h1:1,h2:2/old?replicaSet=rs", "d"),
            "mongodb://u:p@h1:1,h2:2/d?replicaSet=rs"
        );
        assert_eq!(
            with_database("mongodb://h:1/?tls=true", "d"),
            "mongodb://h:1/d?tls=true"
        );
    }
}
