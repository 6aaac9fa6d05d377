"""POST /orders is served by a hot route (plain ASGI, no FastAPI per-request work): every
answer must be the one the FastAPI route gives, status, headers and body alike."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import Response

from fulfilment_kit.http.hot import HotRoute, hot_routes, serve_hot
from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from orders.api import router
from orders.application import OrdersApplication
from orders.contracts import to_public
from tests.support.auth import bearer, customer_headers, staff_headers

SAMPLE = json.loads((Path(__file__).parents[2] / "deploy/local/sample-order.json").read_text())
VARYING = ("placed_at", "updated_at", "stage_entered_at")
"""Stamped at placement: two apps placing the same order a moment apart differ there."""


def _app(api_router: APIRouter) -> FastAPI:
    runtime = ServiceRuntime(
        service="orders",
        app=OrdersApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}),
        mapper=to_public,
        output_topics=[],
    )
    return create_http_app(runtime, routers=[api_router], title="orders")


def _fastapi_only() -> APIRouter:
    """The orders routes without their hot route: FastAPI serves POST /orders itself."""
    plain = APIRouter()
    plain.include_router(router)
    assert hot_routes(plain) == []
    return plain


@pytest.fixture
def served() -> Iterator[list[bool]]:
    """Whether each POST /orders was answered by the hot route (True: a response, or an
    error the app's handlers answer) or declined to the FastAPI route (False)."""
    answered: list[bool] = []
    routes = hot_routes(router)
    (hot,) = routes

    async def spy(request: Request, body: bytes) -> Response | None:
        try:
            response = await hot.serve(request, body)
        except Exception:
            answered.append(True)  # answered by the app's exception handlers
            raise
        answered.append(response is not None)
        return response

    routes[0] = HotRoute(hot.method, hot.path, spy)
    try:
        yield answered
    finally:
        routes[0] = hot


def _changed(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE)
    target: Any = body
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    return body


def _comparable(reply: httpx.Response) -> tuple[int, list[tuple[str, str]], Any]:
    headers = sorted(
        (k, v) for k, v in reply.headers.items() if k not in ("x-correlation-id", "content-length")
    )
    try:
        body = reply.json()
    except ValueError:
        return reply.status_code, headers, reply.text
    if isinstance(body, dict):
        for field in VARYING:
            body.pop(field, None)
    return reply.status_code, headers, body


CUSTOMER = SAMPLE["customer_id"]
# (body as JSON or raw bytes, extra headers, whether the hot route answers it itself)
CASES: list[tuple[str, Any, dict[str, str], bool]] = [
    ("placed", SAMPLE, {"Idempotency-Key": "same-1"}, True),
    ("replayed", SAMPLE, {"Idempotency-Key": "same-1"}, True),
    (
        "key reused with another body",
        _changed("currency", "USD"),
        {"Idempotency-Key": "same-1"},
        True,
    ),
    ("by its customer", SAMPLE, {**customer_headers(CUSTOMER), "Idempotency-Key": "c-1"}, True),
    (
        "for another customer",
        SAMPLE,
        {**customer_headers(uuid.uuid4()), "Idempotency-Key": "c-2"},
        True,
    ),
    ("by a role that may not", SAMPLE, {**bearer("warehouse"), "Idempotency-Key": "w-1"}, True),
    (
        "charset",
        SAMPLE,
        {"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": "cs"},
        True,
    ),
    ("invalid line", _changed("lines.0.quantity", 0), {}, False),
    ("duplicate sku", _changed("lines.1.sku", "MUG-BLUE"), {}, False),
    ("unknown field", {**SAMPLE, "unexpected": 1}, {}, False),
    ("empty key", SAMPLE, {"Idempotency-Key": ""}, False),
    ("long key", SAMPLE, {"Idempotency-Key": "k" * 201}, False),
    ("not JSON", b"{not json", {"Content-Type": "application/json"}, False),
    (
        "not JSON, role refused",
        b"{nope",
        {**bearer("warehouse"), "Content-Type": "application/json"},
        False,
    ),
    ("bad body, role refused", _changed("currency", "XYZ"), bearer("warehouse"), True),
    ("a JSON array", [SAMPLE], {}, False),
    ("empty body", b"", {"Content-Type": "application/json"}, False),
    ("text content type", json.dumps(SAMPLE).encode(), {"Content-Type": "text/plain"}, False),
    ("no content type", json.dumps(SAMPLE).encode(), {"Content-Type": ""}, False),
    (
        "vendor JSON type",
        SAMPLE,
        {"Content-Type": "application/vnd.x+json", "Idempotency-Key": "v"},
        False,
    ),
    ("NaN", b'{"customer_id": NaN}', {"Content-Type": "application/json"}, False),
]


def test_every_answer_of_the_hot_route_is_the_fastapi_routes(served: list[bool]) -> None:
    hot = TestClient(_app(router), headers=staff_headers())
    plain = TestClient(_app(_fastapi_only()), headers=staff_headers())
    for name, body, headers, answered_hot in CASES:
        if isinstance(body, bytes):
            send: dict[str, Any] = {"content": body}
            headers = {"Content-Type": "application/json", **headers}
        else:
            send = {"json": body}
        if headers.get("Content-Type") == "":
            del headers["Content-Type"]
        replies = [c.post("/orders", headers=headers, **send) for c in (hot, plain)]
        assert _comparable(replies[0]) == _comparable(replies[1]), name
        assert served[-1] is answered_hot, name
        assert replies[0].headers["x-correlation-id"], name


@pytest.mark.parametrize(
    ("failure", "status"),
    [(psycopg.OperationalError("the server closed the connection"), 503), (KeyError("x"), 500)],
)
def test_a_failing_placement_answers_as_the_fastapi_route_does(
    served: list[bool], failure: Exception, status: int
) -> None:
    replies = []
    for api_router in (router, _fastapi_only()):
        api = _app(api_router)

        def fail(*_: Any) -> Any:
            raise failure

        api.state.runtime.app.place_order = fail
        client = TestClient(api, headers=staff_headers(), raise_server_exceptions=False)
        replies.append(client.post("/orders", json=SAMPLE))
    assert replies[0].status_code == status
    assert _comparable(replies[0]) == _comparable(replies[1])
    assert served == [True]


def test_a_hot_request_is_counted_under_its_route_template(served: list[bool]) -> None:
    client = TestClient(_app(router), headers=staff_headers())
    labels = {"service": "orders", "method": "POST", "route": "/orders", "status": "201"}
    before = REGISTRY.get_sample_value("fulfil_http_requests_total", labels) or 0.0
    assert client.post("/orders", json=SAMPLE).status_code == 201
    assert served == [True]
    assert REGISTRY.get_sample_value("fulfil_http_requests_total", labels) == before + 1


def test_a_hot_route_without_a_fastapi_route_refuses_to_build() -> None:
    lonely = APIRouter()

    @serve_hot(lonely, "POST", "/nowhere")
    async def nowhere(request: Request, body: bytes) -> Response | None:
        return None

    with pytest.raises(RuntimeError, match="has no FastAPI route"):
        _app(lonely)


async def test_concurrent_placements_are_saved_together_and_each_answered_as_alone(
    served: list[bool],
) -> None:
    """Group commit: placements in flight together share a transaction; a repeated key
    among them is still a replay and a reused key with another body still a 409."""
    api = _app(router)
    app = api.state.runtime.app
    saves: list[int] = []
    save = app.save
    app.save = lambda *objs, **kw: saves.append(len(objs)) or save(*objs, **kw)
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers=staff_headers()
    ) as client:
        keys = [f"burst-{i}" for i in range(12)]
        first = await asyncio.gather(
            *(client.post("/orders", json=SAMPLE, headers={"Idempotency-Key": k}) for k in keys)
        )
        assert [r.status_code for r in first] == [201] * 12
        assert len({r.json()["order_id"] for r in first}) == 12
        assert max(saves) > 1
        assert sum(saves) == 12
        again = await asyncio.gather(
            client.post("/orders", json=SAMPLE, headers={"Idempotency-Key": "burst-0"}),
            client.post("/orders", json=SAMPLE, headers={"Idempotency-Key": "burst-new"}),
            client.post(
                "/orders", json=_changed("currency", "USD"), headers={"Idempotency-Key": "burst-1"}
            ),
            client.post("/orders", json=SAMPLE, headers={"Idempotency-Key": "burst-new"}),
        )
    assert [r.status_code for r in again] == [201, 201, 409, 201]
    assert again[0].json()["order_id"] == first[0].json()["order_id"]
    assert again[0].headers["idempotent-replayed"] == "true"
    assert again[1].json()["order_id"] == again[3].json()["order_id"]
    assert [r.headers.get("idempotent-replayed") for r in (again[1], again[3])].count("true") == 1
    assert "different request" in again[2].json()["detail"]
    assert all(served)
