//! /openapi.json as the tools of the apps around the service read it: every
//! operation has an id of its own (code generators name functions after
//! them), openapi-spec-validator accepts the document, and a client that
//! openapi-python-client generates from it registers, signs in and reads
//! /me against the running app (tests/support/generated_client.py).
//!
//! The Python tools live in `.venv` (`scripts/setup-test-env.sh`, which
//! scripts/test.sh runs).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use common::{Backend, TestApp, PASSWORD};

/// The methods an OpenAPI path item may hold an operation under.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn venv_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/setup-test-env.sh` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Runs a command off the async workers (the app under test is served by
/// them) and fails the test with its output unless it succeeded.
async fn run(what: &str, mut command: Command) -> Output {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

async fn openapi(app: &TestApp) -> Value {
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Every operation's (method, path) by its operation id.
fn operations_by_id(doc: &Value) -> HashMap<String, Vec<String>> {
    let mut ids: HashMap<String, Vec<String>> = HashMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                let id = operation["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                ids.entry(id.to_owned())
                    .or_default()
                    .push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_ids_are_unique_and_the_document_is_valid() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = openapi(&app).await;

    let ids = operations_by_id(&doc);
    let shared: Vec<_> = ids.iter().filter(|(_, ops)| ops.len() > 1).collect();
    assert!(
        shared.is_empty(),
        "operation ids used more than once: {shared:?}"
    );
    // Generated clients make identifiers of them, and a bare verb says
    // nothing once the operations share a namespace (there were four
    // `list`s).
    const BARE_VERBS: [&str; 12] = [
        "list", "get", "detail", "update", "remove", "delete", "create", "start", "end", "status",
        "verify", "revoke",
    ];
    for id in ids.keys() {
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "operation id {id:?} is not snake_case"
        );
        assert!(
            !BARE_VERBS.contains(&id.as_str()),
            "operation id {id:?} names no object"
        );
    }
    // GET /health is the one a generated `health()` must call: it has the body.
    assert_eq!(ids["health"], ["GET /health"]);
    assert_eq!(ids["health_head"], ["HEAD /health"]);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let mut validator = Command::new(venv_bin("openapi-spec-validator"));
    validator.arg(&file);
    let output = run("openapi-spec-validator", validator).await;
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("OK"), "openapi-spec-validator said: {said}");
}

/// openapi-python-client's settings: a fixed package name for the script to
/// import, and no post-generation formatting (ruff), which only restyles.
const GENERATOR_CONFIG: &str = "\
project_name_override: clinic-auth-client
package_name_override: clinic_auth_client
post_hooks: []
";

async fn a_generated_python_client_registers_signs_in_and_reads_me(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = openapi(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("openapi.json");
    std::fs::write(&spec, serde_json::to_vec(&doc).unwrap()).unwrap();
    let config = dir.path().join("generator.yml");
    std::fs::write(&config, GENERATOR_CONFIG).unwrap();

    // --fail-on-warning: an operation or schema the generator had to skip
    // is a document that does not describe the API to its clients.
    let package = dir.path().join("generated").join("clinic_auth_client");
    let mut generate = Command::new(venv_bin("openapi-python-client"));
    generate
        .current_dir(dir.path())
        .args(["generate", "--meta", "none", "--fail-on-warning"])
        .arg("--path")
        .arg(&spec)
        .arg("--config")
        .arg(&config)
        .arg("--output-path")
        .arg(&package);
    run("openapi-python-client generate", generate).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/generated_client.py");
    let mut client = Command::new(venv_bin("python"));
    client
        .env("PYTHONPATH", dir.path().join("generated"))
        .arg(script)
        .arg(&app.base)
        .arg("jane@example.com")
        .arg(PASSWORD);
    let output = run("the generated client", client).await;
    println!("{}", String::from_utf8_lossy(&output.stdout));
}

backend_tests!(a_generated_python_client_registers_signs_in_and_reads_me);
