"""The orders HTTP API on the in-memory event store (no Kafka: the lifespan is not started)."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Tracking
from fastapi.testclient import TestClient

from fulfilment_kit.contracts import PaymentCaptured, StockLine, StockLocked
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from orders.api import router
from orders.application import OrdersApplication
from orders.contracts import to_public
from tests.support.auth import staff_headers
from tests.support.messages import inbound

SAMPLE = json.loads((Path(__file__).parents[2] / "deploy/local/sample-order.json").read_text())


@pytest.fixture
def client() -> TestClient:
    runtime = ServiceRuntime(
        service="orders",
        app=OrdersApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}),
        mapper=to_public,
        output_topics=[],
    )
    return TestClient(
        create_http_app(runtime, routers=[router], title="orders"), headers=staff_headers()
    )


def with_change(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE)
    target: Any = body
    *parents, last = path.split(".")
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is _DELETE:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return body


_DELETE = object()


def test_post_then_get_returns_the_order(client: TestClient) -> None:
    created = client.post("/orders", json=SAMPLE)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["status"] == "placed"
    assert order["total_minor"] == 2 * 1299 + 2499
    assert created.headers["location"] == f"/orders/{order['order_id']}"
    fetched = client.get(f"/orders/{order['order_id']}")
    assert fetched.status_code == 200
    assert fetched.json() == order


def test_same_idempotency_key_same_body_returns_the_same_order(client: TestClient) -> None:
    first = client.post("/orders", json=SAMPLE, headers={"Idempotency-Key": "k-1"})
    second = client.post("/orders", json=SAMPLE, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == second.status_code == 201
    assert first.json()["order_id"] == second.json()["order_id"]
    assert second.headers["idempotent-replayed"] == "true"


def test_a_new_key_places_without_reading_the_order_and_a_repeat_replays_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The placement's attempt goes first (it creates the order the key names): a new key
    costs no read of the event store; a repeat fails on the order's id and is replayed."""
    app = client.app.state.runtime.app  # type: ignore[attr-defined]
    reads: list[uuid.UUID] = []
    find = app.find
    monkeypatch.setattr(app, "find", lambda i, *a, **kw: reads.append(i) or find(i, *a, **kw))
    first = client.post("/orders", json=SAMPLE, headers={"Idempotency-Key": "k-reads"})
    assert first.status_code == 201, first.text
    assert reads == []
    again = client.post("/orders", json=SAMPLE, headers={"Idempotency-Key": "k-reads"})
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert [str(i) for i in reads] == [first.json()["order_id"]]


def test_same_idempotency_key_different_body_is_409(client: TestClient) -> None:
    client.post("/orders", json=SAMPLE, headers={"Idempotency-Key": "k-2"})
    other = with_change("currency", "USD")
    reply = client.post("/orders", json=other, headers={"Idempotency-Key": "k-2"})
    assert reply.status_code == 409
    assert "different request" in reply.json()["detail"]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("lines", [], "lines"),
        ("lines.0.quantity", 0, "lines[0].quantity"),
        ("lines.0.quantity", -1, "lines[0].quantity"),
        ("lines.0.quantity", 1.5, "lines[0].quantity"),
        ("lines.0.quantity", True, "lines[0].quantity"),
        ("lines.0.unit_price_minor", 0, "lines[0].unit_price_minor"),
        ("lines.1.sku", "bad sku", "lines[1].sku"),
        ("lines.1.sku", "MUG-BLUE", "lines"),
        ("currency", "XYZ", "currency"),
        ("currency", "eur", "currency"),
        ("customer_id", "not-a-uuid", "customer_id"),
        ("customer_id", _DELETE, "customer_id"),
        ("shipping_address.country_code", "ZZ", "shipping_address.country_code"),
        ("shipping_address.city", "", "shipping_address.city"),
        (
            "lines",
            [{"sku": f"S{i}", "quantity": 1, "unit_price_minor": 1} for i in range(101)],
            "lines",
        ),
        ("unexpected", 1, "unexpected"),
    ],
)
def test_bad_bodies_are_422_naming_the_field_and_store_nothing(
    client: TestClient, path: str, value: Any, field: str
) -> None:
    reply = client.post("/orders", json=with_change(path, value))
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    assert field in [e["field"] for e in problem["errors"]], problem
    assert all(e["message"] for e in problem["errors"])
    app = client.app.state.runtime.app  # type: ignore[attr-defined]
    assert app.recorder.max_notification_id() is None


def test_unknown_order_is_404_and_malformed_id_is_422(client: TestClient) -> None:
    missing = client.get("/orders/6f1c1f4e-8a53-4c8e-9d1e-7b0c2f0e9a11")
    assert missing.status_code == 404
    assert "does not exist" in missing.json()["detail"]
    assert client.get("/orders/nope").status_code == 422


def test_cancel_before_payment_is_200_cancelled_and_of_a_paid_order_is_202_requested(
    client: TestClient,
) -> None:
    """Issue 7, defect 3: a paid order's cancellation is a request (202) shipping answers."""
    app = client.app.state.runtime.app  # type: ignore[attr-defined]
    early = client.post("/orders", json=SAMPLE).json()
    reply = client.post(f"/orders/{early['order_id']}/cancel", json={"reason": "too slow"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "cancelled"

    paid = client.post("/orders", json=SAMPLE).json()
    order_id = uuid.UUID(paid["order_id"])
    now = datetime.now(UTC)
    for offset, event in enumerate(
        [
            StockLocked(order_id=order_id, lines=[StockLine(sku="MUG", quantity=1)], locked_at=now),
            PaymentCaptured(
                order_id=order_id,
                payment_id=uuid.uuid4(),
                amount_minor=paid["total_minor"],
                currency="EUR",
                captured_at=now,
            ),
        ]
    ):
        app.process_messages([inbound(event, offset=offset)], Tracking("t:x:0", offset + 1))
    reply = client.post(f"/orders/{order_id}/cancel", json={"reason": "changed my mind"})
    assert reply.status_code == 202, reply.text
    assert reply.json()["status"] == "cancellation_requested"
    again = client.post(f"/orders/{order_id}/cancel")
    assert again.status_code == 202  # asked already: the same answer
    assert client.get(f"/orders/{order_id}").json()["status"] == "cancellation_requested"
