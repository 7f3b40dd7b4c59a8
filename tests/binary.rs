//! The real `clinic-auth` binary: start-up from nothing, configuration
//! errors, and graceful shutdown on SIGTERM.

#[path = "support/fds.rs"]
mod fds;
#[path = "support/net.rs"]
mod net;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fds::open_fds;
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
        // ES256 by default (issue 20): only the refresh secret is needed.
        (vec![("APP_ENV", "production")], "JWT_REFRESH_SECRET"),
        (
            vec![("APP_ENV", "production"), ("JWT_ACCESS_ALGORITHM", "HS256")],
            "JWT_ACCESS_SECRET",
        ),
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
        // So does the key that seals authenticator secrets (issue 18).
        (
            vec![
                ("APP_ENV", "production"),
                ("JWT_ACCESS_SECRET", "0123456789abcdef0123456789abcdef"),
                ("JWT_REFRESH_SECRET", "fedcba9876543210fedcba9876543210"),
                (
                    "AUDIT_KEY",
                    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                ),
            ],
            "MFA_ENCRYPTION_KEY",
        ),
        (
            vec![("MFA_ENCRYPTION_KEY", "0123456789abcdef")],
            "MFA_ENCRYPTION_KEY",
        ),
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

/// `--help` at every level, and each exit code the help and the README
/// document, from the real binary: 0 help, 1 the service cannot start,
/// 2 usage or configuration error, 3 the database cannot be opened.
#[test]
fn the_command_line_helps_and_its_exit_codes_are_true() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], vars: &[(&str, &str)]| {
        let mut cmd = command(dir.path(), vars);
        cmd.args(args);
        let output = exits_within(cmd, Duration::from_secs(20));
        let code = output.status.code();
        (code, stderr_of(output))
    };

    for (args, mentions) in [
        (
            &["--help"][..],
            &["audit verify", "user set-role", "Exit codes"][..],
        ),
        (&["audit", "--help"], &["verify", "Usage"]),
        (
            &["audit", "verify", "--help"],
            &["AUDIT_CHECKPOINT_FILE", "Exit codes"],
        ),
        (&["user", "--help"], &["set-role"]),
        (
            &["user", "set-role", "--help"],
            &["<EMAIL>", "<ROLE>", "admin", "doctor", "ROLES"],
        ),
        (&["help", "audit"], &["verify"]),
    ] {
        let (code, text) = run(args, &[]);
        assert_eq!(code, Some(0), "{args:?}: {text}");
        for mention in mentions {
            assert!(
                text.contains(mention),
                "{args:?} should mention {mention}: {text}"
            );
        }
    }

    // 2: usage errors, before any configuration is read.
    for args in [
        &["frobnicate"][..],
        &["audit"],
        &["audit", "check"],
        &["serve", "now"],
        &["user", "set-role", "a@b.c"],
        &["user", "set-role", "a@b.c", "Root!"],
    ] {
        let (code, text) = run(args, &[("APP_ENV", "staging")]);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(text.contains("Usage"), "{args:?}: {text}");
        assert!(!text.contains("APP_ENV"), "{args:?}: {text}");
    }
    // 2: a configuration error, for the commands as for the service.
    for args in [
        &["audit", "verify"][..],
        &["user", "set-role", "a@b.c", "admin"],
    ] {
        let (code, text) = run(args, &[("APP_ENV", "staging")]);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(text.contains("APP_ENV"), "{args:?}: {text}");
    }

    // 3: the database cannot be opened (its directory would be a file).
    std::fs::write(dir.path().join("not-a-dir"), "").unwrap();
    let data = dir.path().join("data");
    let unreachable = [
        ("DATABASE_URL", "sqlite://not-a-dir/clinic-auth.db"),
        ("DATA_DIR", data.to_str().unwrap()),
    ];
    for args in [
        &["audit", "verify"][..],
        &["user", "set-role", "a@b.c", "admin"],
    ] {
        let (code, text) = run(args, &unreachable);
        assert_eq!(code, Some(3), "{args:?}: {text}");
        assert!(
            text.contains("cannot open the database"),
            "{args:?}: {text}"
        );
    }

    // 1: the service cannot start (its port is taken).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, text) = run(&[], &[("PORT", &port)]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot start"), "{text}");
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

/// Open descriptors of a running process.
#[cfg(target_os = "linux")]
/// A flood of idle connections neither runs the process out of file
/// descriptors (the accept loop stops at MAX_CONNECTIONS until one closes)
/// nor stops it answering: the header timeout (the only timing here)
/// frees the slots, and a real request gets its turn.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_cannot_exhaust_descriptors() {
    const CAP: usize = 20;
    const FLOOD: usize = 200;
    // Far below the flood: without a cap the accept loop runs out of
    // descriptors (EMFILE) long before the flood is in.
    const FD_LIMIT: libc::rlim_t = 128;
    let header_timeout = Duration::from_secs(1);

    let dir = tempfile::tempdir().unwrap();
    let cap = CAP.to_string();
    let vars = [
        ("MAX_CONNECTIONS", cap.as_str()),
        ("HTTP_HEADER_TIMEOUT", "1s"),
    ];
    let (mut child, base) =
        start_with(dir.path(), &vars, |cmd| fds::limit_fds(cmd, FD_LIMIT)).await;
    let pid = child.id();
    let addr = base.trim_start_matches("http://").to_owned();
    // Opens the database connections a request needs, so they count in
    // the baseline rather than as growth.
    assert_eq!(
        post(&reqwest::Client::new(), &base, "/api/auth/register", jane()).await,
        201
    );
    let baseline = open_fds(pid);

    let mut idle = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // A real client behind the flood: answered once the header timeout has
    // cleared the idle connections ahead of it, a round of CAP at a time.
    let started = Instant::now();
    let answer = tokio::spawn(
        reqwest::Client::new()
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(60))
            .send(),
    );
    let mut most = 0;
    while !answer.is_finished() {
        most = most.max(open_fds(pid));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let res = answer
        .await
        .unwrap()
        .expect("the request behind the flood was answered");
    let waited = started.elapsed();
    // Shown with a failure: how the run went.
    eprintln!("answered after {waited:?}; at most {most} descriptors (baseline {baseline})");
    assert_eq!(res.status(), 200);
    let rounds = (FLOOD / CAP + 2) as u32;
    assert!(
        waited < header_timeout * rounds + Duration::from_secs(3),
        "answered only after {waited:?}"
    );
    assert!(
        most <= baseline + CAP + 8,
        "{most} descriptors open during the flood (baseline {baseline}, cap {CAP})"
    );
    drop(idle);

    // Still serving afterwards, through the whole stack.
    let login = serde_json::json!({"email": "jane@example.com", "password": "Str0ng!Pass123"});
    assert_eq!(
        post(&reqwest::Client::new(), &base, "/api/auth/login", login).await,
        200
    );
    child.kill().unwrap();
    let logs = stderr_of(child.wait_with_output().unwrap());
    assert!(!logs.contains("accept failed"), "{logs}");
}

/// Set in the copy of a test that runs inside its own network namespace.
const IN_NETNS: &str = "CLINIC_AUTH_TEST_IN_NETNS";

/// Runs `test` (a test of this file) again in a private network namespace,
/// where it may add addresses to `lo` without touching the host, and fails
/// with its output unless it passed there. Root (as in CI) gets a plain
/// `unshare --net`; anyone else a user namespace that maps them to root.
/// Not being able to make the namespace is a failure, never a skip.
fn run_in_network_namespace(test: &str) {
    let exe = std::env::current_exe().unwrap();
    let mut refused = String::new();
    for map_root in [false, true] {
        let mut cmd = Command::new("unshare");
        if map_root {
            cmd.arg("--map-root-user");
        }
        let output = cmd
            .arg("--net")
            .arg(&exe)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(IN_NETNS, "1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run `unshare` (util-linux) for {test}: {e}"));
        let text = stderr_of(output.clone());
        if output.status.success() {
            assert!(
                text.contains("1 passed"),
                "{test} did not run in the namespace:\n{text}"
            );
            return;
        }
        // unshare itself refused (not root, no user namespaces): try the
        // other way. The test failing inside is final.
        if !text.starts_with("unshare:") {
            panic!("{test} failed inside its network namespace:\n{text}");
        }
        refused = text;
    }
    panic!(
        "{test} needs a private network namespace (`unshare --net` as root, as CI runs, \
         or unprivileged user namespaces); neither was allowed here:\n{refused}"
    );
}

/// Inside the namespace: brings `lo` up with the given IPv6 addresses.
fn loopback_with(addresses: &[&str]) {
    let ip = |args: &[&str]| {
        let status = Command::new("ip").args(args).status().unwrap();
        assert!(status.success(), "ip {args:?}");
    };
    ip(&["link", "set", "lo", "up"]);
    for address in addresses {
        // nodad: usable at once, without duplicate address detection.
        ip(&["-6", "addr", "add", address, "dev", "lo", "nodad"]);
    }
}

/// One IPv6 /64 is one client: a botnet on one /64 shares a single per-IP
/// budget instead of getting one per address (RATE_LIMIT_IPV6_PREFIX,
/// default 64). Driven from real source addresses on the real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_of_one_ipv6_slash64_share_a_rate_limit() {
    if std::env::var_os(IN_NETNS).is_none() {
        return run_in_network_namespace("addresses_of_one_ipv6_slash64_share_a_rate_limit");
    }
    loopback_with(&[
        "2001:db8:1::1/64",
        "2001:db8:1::2/64",
        "2001:db8:1::3/64",
        "2001:db8:1::4/64",
        "2001:db8:1::5/64",
        "2001:db8:2::1/64",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let vars = [("HOST", "::"), ("RATE_LIMIT_AUTH_PER_MIN", "3")];
    let (mut child, base) = start(dir.path(), &vars).await;
    let port = base.rsplit(':').next().unwrap();
    let server = format!("http://[2001:db8:1::1]:{port}");
    let forgot = |from: &str| {
        // Connections that leave from `from`.
        let client = reqwest::Client::builder()
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap();
        let server = server.clone();
        async move {
            let body = serde_json::json!({"email": "nobody@example.com"});
            post(&client, &server, "/api/auth/forgot-password", body).await
        }
    };
    // Three addresses of one /64 use up its budget of three...
    for from in ["2001:db8:1::2", "2001:db8:1::3", "2001:db8:1::4"] {
        assert_eq!(forgot(from).await, 202, "{from}");
    }
    // ...so a fourth address of the same /64 is refused...
    assert_eq!(forgot("2001:db8:1::5").await, 429, "same /64");
    // ...while another /64 has a budget of its own.
    assert_eq!(forgot("2001:db8:2::1").await, 202, "another /64");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// With HOST=:: an IPv4 client reaches the IPv6 socket as ::ffff:a.b.c.d;
/// it is still the IPv4 address everywhere: TRUSTED_PROXIES matching, the
/// session list, the audit records and the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_clients_of_an_ipv6_socket_are_seen_as_ipv4() {
    if std::env::var_os(IN_NETNS).is_none() {
        return run_in_network_namespace("ipv4_clients_of_an_ipv6_socket_are_seen_as_ipv4");
    }
    loopback_with(&[]);
    let dir = tempfile::tempdir().unwrap();
    let vars = [("HOST", "::"), ("TRUSTED_PROXIES", "127.0.0.1")];
    let (child, base) = start(dir.path(), &vars).await;
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &base, "/api/auth/register", jane()).await,
        201
    );
    let login = |forwarded_for: Option<&'static str>| {
        let mut req = client
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({"email": "jane@example.com", "password": "Str0ng!Pass123"}));
        if let Some(ip) = forwarded_for {
            req = req.header("x-forwarded-for", ip);
        }
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            let body: serde_json::Value = res.json().await.unwrap();
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    // Straight from the IPv4 loopback, and through "our proxy" on it.
    login(None).await;
    let access = login(Some("198.51.100.7")).await;
    let sessions: Vec<serde_json::Value> = client
        .get(format!("{base}/api/auth/sessions"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ips: Vec<&str> = sessions
        .iter()
        .map(|s| s["ip_address"].as_str().unwrap())
        .collect();
    ips.sort_unstable();
    assert_eq!(ips, ["127.0.0.1", "198.51.100.7"], "{sessions:?}");

    // SIGTERM: the audit writer drains, and its copy of every record is in
    // the log stream.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let logs = stderr_of(child.wait_with_output().unwrap());
    let audit_lines = |event: &str| -> Vec<&str> {
        logs.lines()
            .filter(|l| l.contains("audit") && l.contains(event))
            .collect()
    };
    let registered = audit_lines("register");
    assert!(
        registered.len() == 1 && registered[0].contains("127.0.0.1"),
        "{registered:?}"
    );
    let logins = audit_lines("login_success");
    assert_eq!(logins.len(), 2, "{logs}");
    assert!(logins[0].contains("127.0.0.1"), "{logins:?}");
    assert!(logins[1].contains("198.51.100.7"), "{logins:?}");
    assert!(!logs.contains("::ffff:"), "{logs}");
}
