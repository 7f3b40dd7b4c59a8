#!/usr/bin/env bash
# Installs what the browser tests (tests/browser.rs) need: Debian's Chromium
# and its chromedriver (/usr/bin/chromium, /usr/bin/chromedriver), and the
# test-only npm packages (package-lock.json, into node_modules/): axe-core,
# which the browser tests inject into every page state, httpyac
# (tests/requests_http.rs) and jose (tests/jwks_clients.rs).
# Idempotent: when all are installed it exits at once, without touching apt
# or npm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The npm packages, pinned by package-lock.json. npm keeps a copy of the lock it
# installed from in node_modules/.package-lock.json: when that is missing or
# older than package-lock.json, node_modules is missing or stale.
install_axe() {
    if [ -f node_modules/axe-core/axe.min.js ] && [ -f node_modules/.package-lock.json ] \
        && [ ! package-lock.json -nt node_modules/.package-lock.json ]; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "setup-browser: npm is missing (Node.js 18 or newer); install it, e.g. apt-get install npm" >&2
        exit 1
    fi
    echo "setup-browser: installing axe-core, httpyac and jose (npm ci)" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
}
install_axe

packages=(chromium chromium-driver)

installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

missing=()
for package in "${packages[@]}"; do
    installed "$package" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ] && [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "setup-browser: chromium and chromedriver are installed" >&2
    exit 0
fi
[ ${#missing[@]} -eq 0 ] && missing=(chromium chromium-driver)

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-browser: missing ${missing[*]} and apt-get is not available; install Chromium and chromedriver at /usr/bin/chromium and /usr/bin/chromedriver" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "setup-browser: installing ${missing[*]} needs root (or sudo)" >&2
        exit 1
    fi
fi

echo "setup-browser: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${missing[@]}"

for binary in /usr/bin/chromium /usr/bin/chromedriver; do
    if [ ! -x "$binary" ]; then
        echo "setup-browser: $binary is still missing after the install" >&2
        exit 1
    fi
done
echo "setup-browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium), $(/usr/bin/chromedriver --version 2>/dev/null | cut -d' ' -f1-2)" >&2
