"""Every operation of every service's OpenAPI is protected, as its OpenAPI says: without a
token or with a forged one 401, with a role it does not list 403, with each role it lists neither
401 nor 403.

The apps are the services' own `create_app()` (on SQLite, no Kafka started), so a route a
service adds anywhere is walked here: a new route cannot ship unprotected.
"""

from __future__ import annotations

import importlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fulfilment_kit.http.auth import BEARER_SCHEME, ROLES
from tests.support.auth import bearer, signed
from tests.unit.test_auth import signed_with_dev_key, unsigned_none

SERVICES = ("orders", "inventory", "payments", "shipping", "customer_service")
MIN_OPERATIONS = {"orders": 4, "inventory": 7, "payments": 3, "shipping": 4, "customer_service": 18}


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TestClient]]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FULFIL_PERSISTENCE", "sqlite")
        env.setenv("FULFIL_SQLITE_DIR", str(tmp_path_factory.mktemp("sqlite")))
        env.setenv("FULFIL_CONSUMERS_ENABLED", "false")
        env.setenv("FULFIL_TEST_CLOCK", "1")
        clients = {
            name: TestClient(
                importlib.import_module(f"{name}.main").create_app(),
                client=("127.0.0.1", 50000),
            )
            for name in SERVICES
        }
        yield clients


def operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation of the OpenAPI as anyone reads it (public, ADR 19): the same document
    a token holder gets, so nothing is hidden from this walk."""
    public = client.get("/openapi.json")
    assert public.status_code == 200, public.text
    schema = public.json()
    assert schema == client.get("/openapi.json", headers=bearer("ops")).json()
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def concrete(path: str, operation: dict[str, Any]) -> str:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            value = str(uuid.uuid4()) if parameter["schema"].get("format") == "uuid" else "SKU-1"
            path = path.replace("{" + parameter["name"] + "}", value)
    return path


def call(client: TestClient, method: str, url: str, headers: dict[str, str]) -> int:
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return client.request(method, url, headers=headers, **body).status_code


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_accepts_exactly_its_documented_roles(
    apps: dict[str, TestClient], service: str
) -> None:
    client = apps[service]
    walked = operations(client)
    assert len(walked) >= MIN_OPERATIONS[service], [f"{m} {p}" for m, p, _ in walked]
    for method, path, operation in walked:
        name = f"{service} {method} {path}"
        security = operation.get("security")
        assert security, f"{name} documents no security"
        url = concrete(path, operation)
        assert call(client, method, url, {}) == 401, name
        for forged in (unsigned_none(), signed_with_dev_key(exp=int(time.time()) - 120)):
            assert call(client, method, url, {"Authorization": f"Bearer {forged}"}) == 401, name
        if [list(r) for r in security] != [[BEARER_SCHEME]] * len(security):
            continue  # authenticated otherwise (a signed webhook): walked below
        roles = operation["x-roles"]
        assert [r[BEARER_SCHEME] for r in security] == [[role] for role in roles], name
        for role in ROLES:
            status = call(client, method, url, bearer(role, uuid.uuid4()))
            if role in roles:
                assert status not in (401, 403), f"{name} refused {role}: {status}"
            else:
                assert status == 403, f"{name} let {role} in: {status}"


def test_the_carrier_webhook_is_authenticated_by_its_signature_alone(
    apps: dict[str, TestClient],
) -> None:
    client = apps["shipping"]
    (operation,) = [op for m, p, op in operations(client) if p == "/carrier/webhooks"]
    assert operation["security"] == [{"carrierSignature": []}]
    hook = {"tracking_number": "SBX000000000000", "status": "delivered"}
    assert client.post("/carrier/webhooks", json=hook).status_code == 401
    assert client.post("/carrier/webhooks", json=hook, headers=bearer("ops")).status_code == 401
    assert client.post("/carrier/webhooks", **signed(hook)).status_code == 404


def test_a_route_without_roles_stops_the_app_from_being_built() -> None:
    from fastapi import APIRouter

    from fulfilment_kit.runtime import ServiceRuntime, create_http_app
    from orders.application import OrdersApplication

    careless = APIRouter()

    @careless.get("/secrets")
    async def secrets() -> dict[str, str]:
        return {"all": "of them"}

    runtime = ServiceRuntime(
        service="orders",
        app=OrdersApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}),
        mapper=lambda _: (),
        output_topics=[],
    )
    with pytest.raises(RuntimeError, match="/secrets declares no roles"):
        create_http_app(runtime, routers=[careless], title="careless")


def test_openapi_documents_the_bearer_scheme(apps: dict[str, TestClient]) -> None:
    for client in apps.values():
        schema = client.get("/openapi.json", headers=bearer("agent")).json()
        scheme = schema["components"]["securitySchemes"][BEARER_SCHEME]
        assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == (
            "http",
            "bearer",
            "JWT",
        )
