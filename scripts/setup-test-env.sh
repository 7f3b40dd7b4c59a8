#!/usr/bin/env bash
# Creates (or refreshes) .venv in the repository with the Python tools the
# tests need: nx-27017, the MongoDB wire-protocol stand-in that the MongoStore
# tests start, aiosmtpd for the email tests, schemathesis for
# tests/fuzz.rs, and hadolint, check-jsonschema and PyYAML for
# tests/deploy.rs. Idempotent; a re-run with nothing to do takes well under a
# second, so it can be called before every test run.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
requirements="$repo/scripts/requirements-test.txt"
# Records which requirements file the venv was last installed from, so an
# edited pin triggers a reinstall and an unchanged one skips pip entirely.
stamp="$venv/.requirements-test.sha256"

# A venv whose interpreter no longer runs (python3 upgraded or removed) is
# rebuilt rather than patched.
if [ -d "$venv" ] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    echo "setup-test-env: $venv is broken; recreating it" >&2
    rm -rf "$venv"
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup-test-env: creating $venv" >&2
    if ! python3 -m venv "$venv"; then
        echo "setup-test-env: 'python3 -m venv' failed (on Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$venv/bin/python" -c 'import nx_27017, neosqlite, schemathesis' >/dev/null 2>&1; then
    echo "setup-test-env: $venv is up to date" >&2
    exit 0
fi

echo "setup-test-env: installing $(basename "$requirements") into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$requirements"
echo "$want" >"$stamp"
