//! tests/requests.http, run top to bottom by httpyac against the app on a
//! fresh database, as a developer would send it by hand: every request must
//! get the status its `# @expect-status` line names (httpyac.config.js turns
//! those lines into httpyac tests). Part 2 runs too, with an admin made the
//! way an operator makes one; part 3 needs an email, an authenticator or a
//! passkey device, so httpyac skips it, and the test checks that exactly
//! part 3 was skipped.
//!
//! httpyac comes from npm (package-lock.json): `npm ci`, which
//! scripts/setup-browser.sh runs from scripts/test.sh.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use common::{admin_in, Backend, TestApp};

const FILE: &str = "tests/requests.http";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn httpyac() -> PathBuf {
    let path = repo().join("node_modules/.bin/httpyac");
    assert!(
        path.exists(),
        "{} is missing: run `npm ci` in the repository (scripts/setup-browser.sh, \
         which scripts/test.sh runs, does)",
        path.display()
    );
    path
}

/// How many requests the file holds, and how many of them need a variable
/// that only an email, an authenticator or a device gives (part 3).
fn requests_in_file() -> (usize, usize) {
    let text = std::fs::read_to_string(repo().join(FILE)).unwrap();
    let expected = text
        .lines()
        .filter(|l| l.starts_with("# @expect-status "))
        .count();
    let out_of_band = text
        .lines()
        .filter(|l| l.starts_with("# @disabled ") && !l.contains("admin_access_token"))
        .count();
    (expected, out_of_band)
}

async fn requests_http_runs_top_to_bottom_on_a_fresh_database(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin_access) = admin_in(&app, "admin@example.com").await;

    let mut command = Command::new(httpyac());
    command
        .current_dir(repo())
        // The answers themselves stay out of the report (`-o none`): node
        // exits before a report of several hundred kB has reached the pipe.
        .args(["send", FILE, "--all", "--json", "-o", "none"])
        // The file leaves `base` to the environment so that it can be
        // pointed anywhere; httpyac lets a variable set in the file win
        // over --var.
        .args(["--var", &format!("base={}", app.base)])
        .args(["--var", &format!("admin_access_token={admin_access}")]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("httpyac starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "httpyac did not report JSON ({e}; {}):\n{stdout}\n{stderr}",
            output.status
        )
    });

    let mut failures = Vec::new();
    let (mut passed, mut skipped) = (0, 0);
    for request in report["requests"].as_array().expect("requests") {
        let name = request["title"].as_str().unwrap_or("?");
        let results = request["testResults"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let statuses: Vec<&str> = results
            .iter()
            .filter_map(|r| r["status"].as_str())
            .collect();
        match statuses.as_slice() {
            ["SUCCESS"] => passed += 1,
            ["SKIPPED"] => skipped += 1,
            _ => failures.push(format!("{name}: {results:?}")),
        }
    }
    assert!(
        failures.is_empty() && output.status.success(),
        "requests.http did not run clean ({}):\n{}\n{stderr}",
        output.status,
        failures.join("\n")
    );
    let (in_file, out_of_band) = requests_in_file();
    assert_eq!(
        (passed, skipped),
        (in_file - out_of_band, out_of_band),
        "every request but part 3's must have run and passed"
    );
}

backend_tests!(requests_http_runs_top_to_bottom_on_a_fresh_database);
