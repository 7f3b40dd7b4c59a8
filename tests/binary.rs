//! The real `clinic-auth` binary: start-up from nothing, configuration
//! errors, and graceful shutdown on SIGTERM.

#[path = "support/net.rs"]
mod net;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use net::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_clinic-auth");

/// Runs the binary in `dir` with only the given variables (plus PATH).
fn command(dir: &Path, vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

async fn wait_healthy(port: u16, child: &mut Child) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(res) = client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
        {
            assert_eq!(res.status(), 200);
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the binary exited early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the binary never became healthy");
}

fn stderr_of(output: std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout)
}

#[test]
fn bad_configuration_exits_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (vars, name) in [
        (vec![("PORT", "eighty")], "PORT"),
        (
            vec![("JWT_ACCESS_EXPIRES", "forever")],
            "JWT_ACCESS_EXPIRES",
        ),
        (vec![("APP_ENV", "production")], "JWT_ACCESS_SECRET"),
        (
            vec![
                ("APP_ENV", "production"),
                ("JWT_ACCESS_SECRET", "0123456789abcdef0123456789abcdef"),
                ("JWT_REFRESH_SECRET", "0123456789abcdef0123456789abcdef"),
            ],
            "JWT_REFRESH_SECRET",
        ),
    ] {
        let output = command(dir.path(), &vars).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{vars:?}");
        let text = stderr_of(output);
        assert_eq!(text.lines().count(), 1, "one clear line: {text}");
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn a_dotenv_file_is_read_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "PORT=not-a-port\nAPP_ENV=staging\n",
    )
    .unwrap();
    let output = command(dir.path(), &[("PORT", "8123")]).output().unwrap();
    let text = stderr_of(output);
    assert!(text.contains("APP_ENV") && !text.contains("PORT"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_from_nothing_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let port_text = port.to_string();
    let mut child = command(dir.path(), &[("PORT", &port_text)])
        .spawn()
        .unwrap();
    wait_healthy(port, &mut child).await;
    // Everything it needs was created in the working directory.
    assert!(dir.path().join("data/clinic-auth.db").exists());
    let secrets = dir.path().join("data/jwt-secrets");
    assert!(secrets.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        assert_eq!(mode(&dir.path().join("data/clinic-auth.db")), 0o600);
        assert_eq!(mode(&secrets), 0o600);
    }

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let body = serde_json::json!({"name": "Jane", "email": "jane@example.com", "password": "Str0ng!Pass123"});
    let res = client
        .post(format!("{base}/api/auth/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // Logins in flight (each costs an argon2 hash) when SIGTERM arrives must
    // still complete.
    let in_flight: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            let url = format!("{base}/api/auth/login");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&serde_json::json!({"email": "jane@example.com", "password": "Str0ng!Pass123"}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(15)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for request in in_flight {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let output = child.wait_with_output().unwrap();
    let logs = stderr_of(output);
    assert!(logs.contains("shutdown requested"), "{logs}");
    assert!(!logs.contains("Str0ng!Pass123"), "no passwords in logs");
}

/// Starts the binary in `dir` on a free port with `vars` (after `adjust`
/// has had its say on the command) and waits until it answers.
async fn start_with(
    dir: &Path,
    vars: &[(&str, &str)],
    adjust: impl FnOnce(&mut Command),
) -> (Child, String) {
    let port = free_port();
    let port_text = port.to_string();
    let mut vars = vars.to_vec();
    vars.push(("PORT", &port_text));
    let mut cmd = command(dir, &vars);
    adjust(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    wait_healthy(port, &mut child).await;
    (child, format!("http://127.0.0.1:{port}"))
}

async fn start(dir: &Path, vars: &[(&str, &str)]) -> (Child, String) {
    start_with(dir, vars, |_| {}).await
}

/// POSTs `body` as JSON to `base` + `path` and returns the status.
async fn post(client: &reqwest::Client, base: &str, path: &str, body: serde_json::Value) -> u16 {
    client
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn jane() -> serde_json::Value {
    serde_json::json!({"name": "Jane", "email": "jane@example.com", "password": "Str0ng!Pass123"})
}

/// Every file the service creates is readable by its owner only, and every
/// directory enterable by its owner only, from the first start: the SQLite
/// WAL and shared-memory files hold the same rows as the database, and
/// outbox emails hold live reset links.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_it_creates_is_private_from_the_first_start() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &base, "/api/auth/register", jane()).await,
        201
    );
    let forgot = serde_json::json!({"email": "jane@example.com"});
    assert_eq!(
        post(&client, &base, "/api/auth/forgot-password", forgot).await,
        202
    );
    // The verification and the reset email are written in the background.
    let outbox = dir.path().join("data/outbox");
    let deadline = Instant::now() + Duration::from_secs(10);
    let emails = loop {
        let emails = std::fs::read_dir(&outbox)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                    .count()
            })
            .unwrap_or(0);
        if emails >= 2 || Instant::now() > deadline {
            break emails;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(emails, 2, "the two emails reached the outbox");

    let mut seen = Vec::new();
    let mut pending = vec![dir.path().join("data")];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let name = path.strip_prefix(dir.path()).unwrap().display().to_string();
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{name} is {mode:o}");
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{name} is {mode:o}");
        }
        seen.push(name);
    }
    // The files the finding was about were there to be checked.
    for wanted in [
        "data/clinic-auth.db",
        "data/clinic-auth.db-wal",
        "data/clinic-auth.db-shm",
        "data/jwt-secrets",
        "data/outbox",
    ] {
        assert!(seen.iter().any(|s| s == wanted), "{wanted} in {seen:?}");
    }
    assert_eq!(seen.iter().filter(|s| s.ends_with(".eml")).count(), 2);
    child.kill().unwrap();
    child.wait().unwrap();
}
