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

/// Runs `cmd` to its end, killing it if it is still running after `limit`
/// (a configuration it should refuse would otherwise start the service and
/// hang the test).
fn exits_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {}", stderr_of(output));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
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
        // The audit chain's key lives outside the database: production
        // must be given one, and it must be 32 bytes of hex.
        (
            vec![
                ("APP_ENV", "production"),
                ("JWT_ACCESS_SECRET", "0123456789abcdef0123456789abcdef"),
                ("JWT_REFRESH_SECRET", "fedcba9876543210fedcba9876543210"),
            ],
            "AUDIT_KEY",
        ),
        (vec![("AUDIT_KEY", "0123456789abcdef")], "AUDIT_KEY"),
        (vec![("AUDIT_KEY", "g".repeat(64).as_str())], "AUDIT_KEY"),
    ] {
        let output = exits_within(command(dir.path(), &vars), Duration::from_secs(10));
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
    let audit_key = dir.path().join("data/audit-key");
    let checkpoints = dir.path().join("data/audit-checkpoints");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        assert_eq!(mode(&dir.path().join("data/clinic-auth.db")), 0o600);
        assert_eq!(mode(&secrets), 0o600);
        assert_eq!(mode(&audit_key), 0o600);
        assert_eq!(mode(&checkpoints), 0o600);
    }
    let key = std::fs::read_to_string(&audit_key).unwrap();
    assert!(
        key.trim().len() == 64 && key.trim().bytes().all(|b| b.is_ascii_hexdigit()),
        "a generated AUDIT_KEY is 32 bytes of hex"
    );

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
    assert!(
        !logs.contains(key.trim()),
        "the audit key never reaches the logs"
    );

    // The log copy of each stored audit event carries its place in the
    // chain, so the log system holds a second copy that anchors it.
    let stored: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("audit event stored"))
        .collect();
    assert_eq!(stored.len(), 7, "a registration and six sign-ins: {logs}");
    for (i, line) in stored.iter().enumerate() {
        assert!(line.contains(&format!(" seq={} ", i + 1)), "{line}");
        assert!(hex_after(line, "hash=").is_some(), "{line}");
    }
    // The shutdown checkpoint covers all seven, in the file and in the log.
    let last = std::fs::read_to_string(&checkpoints).unwrap();
    let last = last.lines().last().unwrap().to_owned();
    assert!(last.contains(" seq=7 "), "{last}");
    let head = hex_after(stored[6], "hash=").unwrap();
    assert!(last.contains(&format!(" head={head} ")), "{last}");
    assert!(
        logs.lines()
            .any(|l| l.contains("audit checkpoint") && l.contains(&last)),
        "{logs}"
    );
}

/// The 64 hex digits after `marker` in `line` (quoted or not).
fn hex_after(line: &str, marker: &str) -> Option<String> {
    let start = line.find(marker)? + marker.len();
    let value: String = line[start..]
        .trim_start_matches('"')
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    (value.len() == 64).then_some(value)
}
