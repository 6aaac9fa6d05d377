"""Issue 7 defect 9 (first half) and issue 11 "bad input stays harmless", on every service's
HTTP API over the in-memory store: control characters, test currencies, oversized and deeply
nested bodies, long correlation ids are refused with problem+json naming what is wrong."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from tests.support.auth import signed, staff_headers, webhook_secret

SAMPLE = json.loads((Path(__file__).parents[2] / "deploy/local/sample-order.json").read_text())
UNKNOWN = str(uuid.uuid4())
STAFF = staff_headers()


def _orders() -> TestClient:
    from orders.api import router
    from orders.application import OrdersApplication
    from orders.contracts import to_public

    app = OrdersApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    runtime = ServiceRuntime(service="orders", app=app, mapper=to_public, output_topics=[])
    return TestClient(create_http_app(runtime, routers=[router], title="orders"), headers=STAFF)


def _inventory() -> TestClient:
    from inventory.api import router
    from inventory.application import InventoryApplication
    from inventory.contracts import to_public

    app = InventoryApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    runtime = ServiceRuntime(service="inventory", app=app, mapper=to_public, output_topics=[])
    return TestClient(create_http_app(runtime, routers=[router], title="inventory"), headers=STAFF)


def _shipping() -> TestClient:
    from shipping.api import WEBHOOK_PATH, router
    from shipping.application import ShippingApplication
    from shipping.contracts import to_public
    from shipping.gateway import SANDBOX_CARRIER, RetryingCarrier, SandboxCarrier

    app = ShippingApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"},
        carrier=RetryingCarrier(SandboxCarrier(), sleep=lambda _: None),
    )
    runtime = ServiceRuntime(service="shipping", app=app, mapper=to_public, output_topics=[])
    api = create_http_app(runtime, routers=[router], title="shipping", public_paths=[WEBHOOK_PATH])
    api.state.carrier_webhook_secrets = {SANDBOX_CARRIER: webhook_secret()}
    return TestClient(api, headers=STAFF)


def _customer_service() -> TestClient:
    from customer_service.api import router
    from customer_service.application import CustomerServiceApplication
    from customer_service.clock import ServiceClock
    from customer_service.contracts import to_public

    clock = ServiceClock()
    app = CustomerServiceApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=clock)
    runtime = ServiceRuntime(
        service="customer-service", app=app, mapper=to_public, output_topics=[]
    )
    api = create_http_app(runtime, routers=[router], title="customer-service")
    api.state.clock = clock
    return TestClient(api, headers=STAFF)


@pytest.fixture(scope="module")
def clients() -> Iterator[dict[str, TestClient]]:
    return {
        "orders": _orders(),
        "inventory": _inventory(),
        "shipping": _shipping(),
        "customer-service": _customer_service(),
    }


def _order(**address: Any) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE)
    body["shipping_address"].update(address)
    return body


def _assert_problem(reply: Any, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json", reply.headers
    problem: dict[str, Any] = reply.json()
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    return problem


NUL = "bad\u0000text"
ESC = "bad\u001b[31mtext"

# (service, path, body, field named in the 422)
CONTROL_CHARACTERS: list[tuple[str, str, dict[str, Any], str]] = [
    ("orders", f"/orders/{UNKNOWN}/cancel", {"reason": NUL}, "reason"),
    ("orders", "/orders", _order(recipient_name=NUL), "shipping_address.recipient_name"),
    ("orders", "/orders", _order(line1=ESC), "shipping_address.line1"),
    ("orders", "/orders", _order(line2="a\nb"), "shipping_address.line2"),
    ("orders", "/orders", _order(city="\u0085Berlin"), "shipping_address.city"),
    ("orders", "/orders", _order(postal_code="10\u007f115"), "shipping_address.postal_code"),
    (
        "inventory",
        "/stock/MUG-1/receipts",
        {"quantity": 1, "reference": NUL},
        "reference",
    ),
    (
        "inventory",
        "/stock/MUG-1/adjustments",
        {"counted_on_hand": 1, "reason": NUL},
        "reason",
    ),
    (
        "shipping",
        "/carrier/webhooks",
        {"tracking_number": "SBX1", "status": "exception", "reason_code": "refused", "reason": NUL},
        "reason",
    ),
    (
        "customer-service",
        "/cases",
        {"kind": "inquiry", "summary": NUL},
        "summary",
    ),
    (
        "customer-service",
        f"/cases/{UNKNOWN}/comments",
        {"author": "ann", "text": NUL},
        "text",
    ),
    (
        "customer-service",
        f"/cases/{UNKNOWN}/comments",
        {"author": "a\u0000nn", "text": "hello"},
        "author",
    ),
    ("customer-service", f"/cases/{UNKNOWN}/assign", {"assignee": "a\tb"}, "assignee"),
    (
        "customer-service",
        f"/cases/{UNKNOWN}/resolve",
        {"outcome": "answered", "note": NUL},
        "note",
    ),
    (
        "customer-service",
        "/returns",
        {
            "order_id": UNKNOWN,
            "lines": [{"sku": "A", "quantity": 1}],
            "reason_code": "other",
            "comment": NUL,
        },
        "comment",
    ),
    ("customer-service", f"/returns/{UNKNOWN}/reject", {"reason": NUL}, "reason"),
    ("customer-service", f"/returns/{UNKNOWN}/authorise", {"agent": NUL}, "agent"),
]


@pytest.mark.parametrize(
    ("service", "path", "body", "field"),
    CONTROL_CHARACTERS,
    ids=[f"{s}:{p.split('/')[-1] or p}:{f}" for s, p, _, f in CONTROL_CHARACTERS],
)
def test_free_text_with_control_characters_is_422_naming_the_field(
    clients: dict[str, TestClient], service: str, path: str, body: dict[str, Any], field: str
) -> None:
    sent = signed(body) if path == "/carrier/webhooks" else {"json": body}
    problem = _assert_problem(clients[service].post(path, **sent), 422)
    assert [e["field"] for e in problem["errors"]] == [field], problem
    assert "control characters" in problem["errors"][0]["message"]


def test_multiline_text_keeps_newlines_and_tabs(clients: dict[str, TestClient]) -> None:
    reply = clients["customer-service"].post(
        "/cases", json={"kind": "inquiry", "summary": "line one\n\tline two"}
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["summary"] == "line one\n\tline two"


@pytest.mark.parametrize("code", ["XXX", "XTS", "XAU", "XAG", "XDR", "XBA", "CHE"])
def test_test_and_non_money_currencies_are_refused(
    clients: dict[str, TestClient], code: str
) -> None:
    body = {**SAMPLE, "currency": code}
    problem = _assert_problem(clients["orders"].post("/orders", json=body), 422)
    assert [e["field"] for e in problem["errors"]] == ["currency"]
    assert code in problem["errors"][0]["message"]


def test_real_x_currencies_are_still_accepted(clients: dict[str, TestClient]) -> None:
    for code in ("XOF", "XAF", "XCD"):
        reply = clients["orders"].post("/orders", json={**SAMPLE, "currency": code})
        assert reply.status_code == 201, reply.text


def test_an_integer_field_refuses_a_float(clients: dict[str, TestClient]) -> None:
    problem = _assert_problem(
        clients["inventory"].post("/stock/MUG-1/receipts", json={"quantity": 1.0}), 422
    )
    assert [e["field"] for e in problem["errors"]] == ["quantity"]


# --- size and shape of the body ----------------------------------------------------------------


def test_a_body_above_the_limit_is_413_from_its_content_length(
    clients: dict[str, TestClient],
) -> None:
    client = clients["orders"]
    big = b'{"x": "' + b"a" * (300 * 1024) + b'"}'
    reply = client.post("/orders", content=big, headers={"content-type": "application/json"})
    problem = _assert_problem(reply, 413)
    assert "262144" in problem["detail"]


async def test_a_streamed_body_above_the_limit_is_413_before_it_is_read_whole() -> None:
    """Chunked upload, no Content-Length: the middleware stops reading past the limit."""
    from fulfilment_kit.http.limits import RequestLimitsMiddleware

    received: list[int] = []
    sent: list[dict[str, Any]] = []
    reached_app: list[bool] = []

    async def receive() -> dict[str, Any]:
        received.append(1)  # would be 6.4 MB in 100 chunks
        return {"type": "http.request", "body": b"a" * 65536, "more_body": len(received) < 100}

    async def send(message: Any) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached_app.append(True)

    limits = RequestLimitsMiddleware(app, max_body_bytes=256 * 1024)
    scope = {"type": "http", "method": "POST", "path": "/orders", "headers": []}
    await limits(scope, receive, send)
    assert sent[0]["status"] == 413
    assert (b"content-type", b"application/problem+json") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["status"] == 413
    assert len(received) == 5, "read past the limit"
    assert not reached_app


def test_json_nested_too_deeply_is_400(clients: dict[str, TestClient]) -> None:
    deep = "[" * 50 + "]" * 50
    reply = clients["orders"].post(
        "/orders", content=deep, headers={"content-type": "application/json"}
    )
    problem = _assert_problem(reply, 400)
    assert "deeper than 16" in problem["detail"]


def test_brackets_inside_strings_do_not_count_as_depth(clients: dict[str, TestClient]) -> None:
    reply = clients["customer-service"].post(
        "/cases", json={"kind": "inquiry", "summary": "[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{"}
    )
    assert reply.status_code == 201, reply.text


# --- correlation ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["a" * 8192, "a" * 129, "has space", "-starts-with-dash", "é-latin1"]
)
def test_a_long_or_odd_correlation_id_is_400(clients: dict[str, TestClient], value: str) -> None:
    reply = clients["orders"].get(
        f"/orders/{UNKNOWN}", headers={"X-Correlation-Id": value.encode()}
    )
    problem = _assert_problem(reply, 400)
    assert problem["errors"][0]["field"] == "X-Correlation-Id"


def test_a_valid_correlation_id_is_echoed(clients: dict[str, TestClient]) -> None:
    value = f"checkout:{uuid.uuid4()}"
    reply = clients["orders"].get(f"/orders/{UNKNOWN}", headers={"X-Correlation-Id": value})
    assert reply.status_code == 404
    assert reply.headers["x-correlation-id"] == value


@pytest.mark.parametrize("text", ["\n", "   ", "\t \n"])
def test_blank_text_is_422_in_the_request_not_later_in_the_domain(
    clients: dict[str, TestClient], text: str
) -> None:
    reply = clients["customer-service"].post("/cases", json={"kind": "inquiry", "summary": text})
    problem = _assert_problem(reply, 422)
    assert [e["field"] for e in problem["errors"]] == ["summary"]
