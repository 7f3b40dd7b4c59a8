#!/usr/bin/env bash
# Installs what building the service needs beyond Rust: OpenSSL's headers
# and pkg-config (webauthn-rs, the passkeys library, links the system
# OpenSSL; at run time the binary needs libssl3, on every Debian).
# Idempotent: when both are installed it exits at once, without touching apt.
set -euo pipefail

packages=(libssl-dev pkg-config)

installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; then
    echo "setup-build: OpenSSL headers and pkg-config are installed" >&2
    exit 0
fi
missing=()
for package in "${packages[@]}"; do
    installed "$package" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && missing=("${packages[@]}")

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-build: missing ${missing[*]} and apt-get is not available; install OpenSSL's development files and pkg-config" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "setup-build: installing ${missing[*]} needs root (or sudo)" >&2
        exit 1
    fi
fi

echo "setup-build: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${missing[@]}"
