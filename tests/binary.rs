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
