#!/usr/bin/env bash
# The one command that runs every check and test on a fresh machine:
# installs what the tests need (Rust components, a Python virtualenv with the
# MongoDB wire-protocol server), then format check, clippy and the full suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain components"
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
        rustup component add "$component"
    fi
done

step "build dependencies (OpenSSL headers and pkg-config, for webauthn-rs)"
bash scripts/setup-build.sh

step "test dependencies (Python virtualenv: MongoDB wire-protocol server, SMTP server, schemathesis)"
bash scripts/setup-test-env.sh

step "browser for the end-to-end tests (Chromium + chromedriver from Debian)"
bash scripts/setup-browser.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test"
cargo test --all-targets --locked
