"""Drives a running Clinic Auth through a client that openapi-python-client
generated from the service's own /openapi.json (tests/openapi_clients.rs
generates it and runs this script with .venv's python).

It uses the client the way a clinic's developer would: health, register,
sign in, then /me with the access token. Any error, unexpected status or
answer the generated models cannot parse exits non-zero with the reason.

Usage: generated_client.py BASE_URL EMAIL PASSWORD
(the generated package, clinic_auth_client, must be on PYTHONPATH)
"""

import sys

from clinic_auth_client import AuthenticatedClient, Client
from clinic_auth_client.api.auth import get_me, login, register
from clinic_auth_client.api.system import health
from clinic_auth_client.models import (
    HealthResponse,
    LoginRequest,
    RegisterRequest,
    UserResponse,
)


def fail(step, response):
    sys.exit(
        f"{step}: status {response.status_code}, parsed {response.parsed!r}, "
        f"body {response.content[:500]!r}"
    )


def main():
    base, email, password = sys.argv[1:4]
    # raise_on_unexpected_status: a status the document does not list is an
    # error in the document, not something to step over.
    client = Client(base_url=base, raise_on_unexpected_status=True)

    # GET, with a parsed body: HEAD has an operation of its own.
    answer = health.sync_detailed(client=client)
    if answer.status_code != 200 or not isinstance(answer.parsed, HealthResponse):
        fail("health", answer)
    if answer.parsed.status != "ok":
        fail("health", answer)

    answer = register.sync_detailed(
        client=client,
        body=RegisterRequest(name="Dr Jane Smith", email=email, password=password),
    )
    if answer.status_code != 201 or not isinstance(answer.parsed, UserResponse):
        fail("register", answer)
    user_id = answer.parsed.id

    answer = login.sync_detailed(
        client=client, body=LoginRequest(email=email, password=password)
    )
    token = getattr(answer.parsed, "access_token", None)
    if answer.status_code != 200 or not isinstance(token, str) or not token:
        fail("login", answer)

    authed = AuthenticatedClient(
        base_url=base, token=token, raise_on_unexpected_status=True
    )
    answer = get_me.sync_detailed(client=authed)
    if answer.status_code != 200 or not isinstance(answer.parsed, UserResponse):
        fail("me", answer)
    if answer.parsed.id != user_id or answer.parsed.email != email:
        fail("me", answer)
    print(f"generated client: health, register, login and me answered as documented ({user_id})")


if __name__ == "__main__":
    main()
