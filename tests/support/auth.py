"""Bearer tokens for tests: every test that calls an HTTP API gets its token from here.

Tokens come from the dev issuer (the key pair in the git-ignored state dir), which every
service accepts while no JWKS is configured: in-process apps and the service processes the
tests start alike. `staff_headers()` holds every role but customer (the default of the
suite's clients); `as_customer(...)`/`as_role(...)` narrow a test down to one role.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any, TypeVar

import httpx
from fastapi.testclient import TestClient

from fulfilment_kit import devauth
from fulfilment_kit.http import webhooks
from fulfilment_kit.http.auth import CUSTOMER, ROLES, STAFF
from shipping.gateway import SANDBOX_CARRIER, webhook_secret_name

C = TypeVar("C", httpx.AsyncClient, httpx.Client, TestClient)

STAFF_ROLES = tuple(r for r in ROLES if r in STAFF)


def token(roles: str | Iterable[str], sub: str | uuid.UUID | None = None, **claims: Any) -> str:
    """A dev-issuer token with `roles` for `sub` (a fresh subject when None)."""
    chosen = [roles] if isinstance(roles, str) else list(roles)
    return devauth.mint(chosen, str(sub or f"test-{uuid.uuid4()}"), ttl_s=3600, **claims)


def bearer(roles: str | Iterable[str], sub: str | uuid.UUID | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(roles, sub)}"}


def staff_headers() -> dict[str, str]:
    """Every role but customer: the suite's default caller (sees and may do everything)."""
    return bearer(STAFF_ROLES, "test-staff")


def customer_headers(customer_id: str | uuid.UUID) -> dict[str, str]:
    return bearer(CUSTOMER, customer_id)


def as_role(client: C, roles: str | Iterable[str], sub: str | uuid.UUID | None = None) -> C:
    """`client` now calling with a token of `roles` (for `sub`); returns the client."""
    client.headers.update(bearer(roles, sub))
    return client


def as_customer(client: C, customer_id: str | uuid.UUID) -> C:
    return as_role(client, CUSTOMER, customer_id)


def as_staff(client: C) -> C:
    client.headers.update(staff_headers())
    return client


def authorised(client: C) -> C:
    """The suite's default: `client` calling as staff."""
    return as_staff(client)


def webhook_secret(carrier: str = SANDBOX_CARRIER) -> bytes:
    """The carrier's webhook secret the services use by default (the dev one)."""
    return devauth.dev_secret(webhook_secret_name(carrier))


def signed(
    body: Any,
    *,
    carrier: str = SANDBOX_CARRIER,
    delivery_id: str | None = None,
    timestamp: int | None = None,
    secret: bytes | None = None,
) -> dict[str, Any]:
    """Keyword arguments of a client's `post` that send `body` as a carrier's signed webhook:
    `client.post("/carrier/webhooks", **signed(hook))`."""
    content = json.dumps(body).encode()
    headers = webhooks.signed_headers(
        secret or webhook_secret(carrier),
        carrier,
        delivery_id or f"dlv-{uuid.uuid4()}",
        content,
        timestamp=timestamp,
    )
    return {"content": content, "headers": {"content-type": "application/json", **headers}}
