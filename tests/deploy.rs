//! The deployment files, checked without a Docker engine (none runs in CI):
//! the Dockerfile is linted with hadolint, docker-compose.yml is validated
//! against the Compose Specification's JSON schema (check-jsonschema's
//! vendored copy, so offline) and its wiring is read back (PyYAML) and
//! checked against the Dockerfile and the configuration; and the image's
//! HEALTHCHECK command, `clinic-auth health`, is run against the real
//! binary. The tools live in `.venv` (`scripts/setup-test-env.sh`, which
//! `scripts/test.sh` runs).

mod common;
#[path = "support/process.rs"]
mod process;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{database_pair, Backend};
use process::{cli, configuration, Service};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A tool from `.venv`, or a failure that says how to install it.
fn venv_tool(name: &str) -> PathBuf {
    let path = repo(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/setup-test-env.sh` (scripts/test.sh does), which \
         installs it from scripts/requirements-test.txt",
        path.display()
    );
    path
}

/// Runs `cmd` in the repository; its exit status and everything it printed.
fn run(mut cmd: Command) -> (bool, String) {
    let output = cmd.current_dir(repo("")).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let mut cmd = Command::new(venv_tool("hadolint"));
    // Every rule at every level: a finding must be fixed, or ignored in
    // the Dockerfile with a comment saying why.
    cmd.args(["--failure-threshold", "info", "--no-color", "Dockerfile"]);
    let (ok, text) = run(cmd);
    assert!(ok, "hadolint found problems in the Dockerfile:\n{text}");
}

/// The Dockerfile's instructions (continuation lines joined), for the
/// checks hadolint does not make.
fn dockerfile() -> Vec<String> {
    let text = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

fn instruction<'a>(lines: &'a [String], keyword: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(keyword).map(str::trim))
        .collect()
}

#[test]
fn the_image_is_multi_stage_non_root_with_a_volume_and_a_health_check() {
    let lines = dockerfile();
    let from = instruction(&lines, "FROM ");
    assert_eq!(from.len(), 2, "a build stage and a run stage: {from:?}");
    assert!(from[0].ends_with(" AS build"), "{from:?}");
    assert!(from[1].contains("slim"), "the run stage is slim: {from:?}");
    assert!(
        instruction(&lines, "COPY ")
            .iter()
            .any(|c| c.starts_with("--from=build ")),
        "the binary comes from the build stage"
    );
    let user = instruction(&lines, "USER ");
    let uid = user.last().and_then(|u| u.split(':').next()).unwrap_or("0");
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid >= 1000),
        "the last USER is an unprivileged numeric id: {user:?}"
    );
    assert_eq!(
        instruction(&lines, "VOLUME "),
        [r#"["/var/lib/clinic-auth/data"]"#]
    );
    let health = instruction(&lines, "HEALTHCHECK ");
    assert!(
        health.len() == 1 && health[0].contains(r#"CMD ["clinic-auth", "health"]"#),
        "{health:?}"
    );
    assert_eq!(instruction(&lines, "EXPOSE "), ["8000"]);
}

#[test]
fn the_compose_file_follows_the_compose_specification() {
    let mut cmd = Command::new(venv_tool("check-jsonschema"));
    cmd.args([
        "--builtin-schema",
        "vendor.compose-spec",
        "docker-compose.yml",
    ]);
    let (ok, text) = run(cmd);
    assert!(
        ok,
        "docker-compose.yml does not follow the Compose Specification:\n{text}"
    );
}

/// docker-compose.yml as JSON, read by PyYAML.
fn compose() -> Value {
    let mut cmd = Command::new(venv_tool("python"));
    cmd.args([
        "-c",
        "import json, sys, yaml; json.dump(yaml.safe_load(open('docker-compose.yml')), sys.stdout)",
    ]);
    let (ok, text) = run(cmd);
    assert!(ok, "PyYAML could not read docker-compose.yml:\n{text}");
    serde_json::from_str(&text).unwrap()
}

/// The variable names .env.example documents.
fn documented_variables() -> BTreeSet<String> {
    std::fs::read_to_string(repo(".env.example"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect()
}

#[test]
fn compose_runs_the_app_wired_to_mongodb() {
    let compose = compose();
    let services = &compose["services"];
    for name in ["clinic-auth", "mongodb", "mongo-express"] {
        assert!(services[name].is_object(), "service {name}");
    }
    let app = &services["clinic-auth"];
    assert_eq!(app["build"], ".", "built from this repository's Dockerfile");
    assert_eq!(
        app["depends_on"]["mongodb"]["condition"], "service_healthy",
        "starts once MongoDB answers"
    );
    let env = app["environment"].as_object().expect("a mapping");
    let uri = env["MONGO_URI"].as_str().unwrap();
    assert!(
        uri.starts_with("mongodb://mongodb:27017/"),
        "MONGO_URI names the mongodb service: {uri}"
    );
    assert_eq!(
        services["mongo-express"]["environment"]["ME_CONFIG_MONGODB_URL"],
        "mongodb://mongodb:27017/"
    );
    assert_eq!(env["HOST"], "0.0.0.0");
    let documented = documented_variables();
    for name in env.keys() {
        assert!(
            documented.contains(name),
            "{name} is passed to the app but .env.example does not document it"
        );
    }
    // The port published is the one the image listens on.
    let port = env["PORT"].as_str().unwrap();
    let ports = strings(&app["ports"]);
    assert!(
        ports.iter().all(|p| p.starts_with("127.0.0.1:")),
        "published on loopback only: {ports:?}"
    );
    assert!(
        ports.iter().any(|p| p.ends_with(&format!(":{port}"))),
        "{ports:?} publishes PORT {port}"
    );
    // The data lives in a named volume mounted at the image's VOLUME.
    let volumes = strings(&app["volumes"]);
    let mounted = volumes
        .iter()
        .find_map(|v| v.strip_suffix(":/var/lib/clinic-auth/data"))
        .unwrap_or_else(|| panic!("the data volume is mounted: {volumes:?}"));
    assert!(
        compose["volumes"]
            .as_object()
            .is_some_and(|v| v.contains_key(mounted)),
        "{mounted} is a named volume"
    );
}

/// The strings of a YAML list (short-syntax ports and volumes).
fn strings(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The port a service started by `process::Service` listens on.
fn port_of(service: &Service) -> String {
    service.base.rsplit(':').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_reports_the_running_service() {
    let dir = tempfile::tempdir().unwrap();
    let vars = configuration(dir.path(), database_pair(Backend::Sqlite, dir.path()).await);
    let mut service = Service::start(dir.path(), &vars).await;
    let port = port_of(&service);
    // As the container runs it: HOST=0.0.0.0, asked on loopback.
    let with = |host: &str| {
        let mut vars = vars.clone();
        vars.retain(|(k, _)| k != "HOST");
        vars.push(("HOST".into(), host.into()));
        vars.push(("PORT".into(), port.clone()));
        vars
    };
    for host in ["127.0.0.1", "0.0.0.0"] {
        let output = cli(dir.path(), &with(host), &["health"]).await;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "HOST={host}: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.contains("answered 200"), "{text}");
    }
    let vars = with("0.0.0.0");

    service.terminate(Duration::from_secs(20)).await;
    let output = cli(dir.path(), &vars, &["health"]).await;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "nothing listens: {text}");
    assert!(text.contains("unhealthy"), "{text}");

    // A listener that accepts and never answers: the check gives up (5 s)
    // rather than hanging the container's health check.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut vars = vars.clone();
    vars.retain(|(k, _)| k != "PORT");
    vars.push((
        "PORT".into(),
        silent.local_addr().unwrap().port().to_string(),
    ));
    let started = Instant::now();
    let output = cli(dir.path(), &vars, &["health"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "gave up after {:?}",
        started.elapsed()
    );
    drop(silent);
}
