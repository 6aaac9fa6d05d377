"""The inventory HTTP API on the in-memory event store (no Kafka: the lifespan is not started)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.persistence import Tracking
from fastapi.testclient import TestClient

from fulfilment_kit.contracts import OrderLine, OrderPlaced, ShippingAddress
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from inventory.api import router
from inventory.application import InventoryApplication
from inventory.contracts import to_public
from tests.support.auth import staff_headers
from tests.support.messages import inbound


@pytest.fixture
def client() -> TestClient:
    runtime = ServiceRuntime(
        service="inventory",
        app=InventoryApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}),
        mapper=to_public,
        output_topics=[],
    )
    return TestClient(
        create_http_app(runtime, routers=[router], title="inventory"), headers=staff_headers()
    )


def app_of(client: TestClient) -> InventoryApplication:
    app = client.app.state.runtime.app  # type: ignore[attr-defined]
    assert isinstance(app, InventoryApplication)
    return app


def receive(client: TestClient, sku: str, quantity: int, **headers: str) -> Any:
    return client.post(f"/stock/{sku}/receipts", json={"quantity": quantity}, headers=headers)


def reserve(client: TestClient, sku: str, quantity: int) -> uuid.UUID:
    """Lock stock for a new order through the policy, as the inbox would."""
    order = OrderPlaced(
        order_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        lines=[OrderLine(sku=sku, quantity=quantity, unit_price_minor=100)],
        currency="EUR",
        total_minor=quantity * 100,
        shipping_address=ShippingAddress(
            recipient_name="A", line1="1 St", city="Berlin", postal_code="10115", country_code="DE"
        ),
        placed_at=datetime.now(UTC),
    )
    app = app_of(client)
    offset = app.recorder.max_tracking_id("t") or 0
    app.process_messages([inbound(order, offset=offset)], Tracking("t", offset + 1))
    return order.order_id


def test_receipt_creates_the_sku_then_adds_to_it(client: TestClient) -> None:
    first = receive(client, "MUG-BLUE", 3)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "sku": "MUG-BLUE",
        "on_hand": 3,
        "reserved": 0,
        "available": 3,
        "low_stock_threshold": 5,
        "below_threshold": True,
        "version": 2,
    }
    second = client.post("/stock/MUG-BLUE/receipts", json={"quantity": 4, "reference": "PO-7"})
    assert second.json()["on_hand"] == 7
    assert client.get("/stock/MUG-BLUE").json() == second.json()


def test_idempotent_receipt_adds_nothing_on_replay_and_conflicts_on_another_body(
    client: TestClient,
) -> None:
    first = receive(client, "MUG", 3, **{"Idempotency-Key": "r-1"})
    again = receive(client, "MUG", 3, **{"Idempotency-Key": "r-1"})
    assert first.status_code == again.status_code == 200
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["on_hand"] == 3
    clash = receive(client, "MUG", 4, **{"Idempotency-Key": "r-1"})
    assert clash.status_code == 409
    assert "different request" in clash.json()["detail"]
    other_sku = receive(client, "TEE", 3, **{"Idempotency-Key": "r-1"})
    assert other_sku.status_code == 409
    assert client.get("/stock/TEE").status_code == 404


def test_cycle_count_adjusts_and_is_idempotent(client: TestClient) -> None:
    receive(client, "MUG", 10)
    body = {"counted_on_hand": 8, "reason": "cycle count"}
    key = {"Idempotency-Key": "count-1"}
    first = client.post("/stock/MUG/adjustments", json=body, headers=key)
    assert first.status_code == 200, first.text
    assert first.json()["on_hand"] == 8
    receive(client, "MUG", 2)
    again = client.post("/stock/MUG/adjustments", json=body, headers=key)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["on_hand"] == 10
    clash = client.post("/stock/MUG/adjustments", json={**body, "counted_on_hand": 9}, headers=key)
    assert clash.status_code == 409


def test_count_below_reserved_is_409_and_changes_nothing(client: TestClient) -> None:
    receive(client, "MUG", 10)
    order_id = reserve(client, "MUG", 6)
    reply = client.post("/stock/MUG/adjustments", json={"counted_on_hand": 5, "reason": "count"})
    assert reply.status_code == 409
    assert reply.headers["content-type"] == "application/problem+json"
    assert "6 are reserved" in reply.json()["detail"]
    view = client.get("/stock/MUG").json()
    assert (view["on_hand"], view["reserved"], view["available"]) == (10, 6, 4)
    reservation = client.get(f"/reservations/{order_id}").json()
    assert reservation == {
        "order_id": str(order_id),
        "status": "locked",
        "lines": [{"sku": "MUG", "quantity": 6}],
        "shortages": [],
    }


def test_rejected_reservation_shows_its_shortages(client: TestClient) -> None:
    receive(client, "MUG", 1)
    order_id = reserve(client, "MUG", 2)
    reservation = client.get(f"/reservations/{order_id}").json()
    assert reservation["status"] == "rejected"
    assert reservation["shortages"] == [{"sku": "MUG", "requested": 2, "available": 1}]


def test_threshold_and_below_threshold_listing(client: TestClient) -> None:
    receive(client, "TEE", 20)
    receive(client, "MUG", 3)
    receive(client, "CAP", 9)
    reply = client.put("/stock/CAP/threshold", json={"threshold": 10})
    assert reply.status_code == 200
    assert reply.json()["below_threshold"] is True
    assert [s["sku"] for s in client.get("/stock").json()] == ["CAP", "MUG", "TEE"]
    below = client.get("/stock", params={"below_threshold": "true"}).json()
    assert [s["sku"] for s in below] == ["CAP", "MUG"]
    not_below = client.get("/stock", params={"below_threshold": "false"}).json()
    assert [s["sku"] for s in not_below] == ["TEE"]


def test_unknown_sku_or_order_is_404(client: TestClient) -> None:
    assert client.get("/stock/NOPE").status_code == 404
    count = client.post("/stock/NOPE/adjustments", json={"counted_on_hand": 1, "reason": "x"})
    assert count.status_code == 404
    assert "does not exist" in count.json()["detail"]
    assert client.put("/stock/NOPE/threshold", json={"threshold": 1}).status_code == 404
    assert client.get(f"/reservations/{uuid.uuid4()}").status_code == 404
    assert client.get("/reservations/not-a-uuid").status_code == 422
    assert client.get("/stock").json() == []


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/stock/MUG/receipts", {"quantity": 0}, "quantity"),
        ("post", "/stock/MUG/receipts", {"quantity": -2}, "quantity"),
        ("post", "/stock/MUG/receipts", {"quantity": 1.5}, "quantity"),
        ("post", "/stock/MUG/receipts", {"quantity": "3"}, "quantity"),
        ("post", "/stock/MUG/receipts", {"quantity": 10_001}, "quantity"),
        ("post", "/stock/MUG/receipts", {}, "quantity"),
        ("post", "/stock/MUG/receipts", {"quantity": 1, "extra": 1}, "extra"),
        ("post", "/stock/mug/receipts", {"quantity": 1}, "sku"),
        (
            "post",
            "/stock/MUG/adjustments",
            {"counted_on_hand": -1, "reason": "x"},
            "counted_on_hand",
        ),
        ("post", "/stock/MUG/adjustments", {"counted_on_hand": 1, "reason": ""}, "reason"),
        ("post", "/stock/MUG/adjustments", {"counted_on_hand": 1}, "reason"),
        ("put", "/stock/MUG/threshold", {"threshold": -1}, "threshold"),
        ("put", "/stock/MUG/threshold", {"threshold": True}, "threshold"),
    ],
)
def test_bad_requests_are_422_naming_the_field_and_store_nothing(
    client: TestClient, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    reply = client.request(method, path, json=body)
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    assert field in [e["field"] for e in problem["errors"]], problem
    assert field in problem["detail"]
    assert app_of(client).recorder.max_notification_id() is None


def test_below_threshold_query_must_be_a_boolean(client: TestClient) -> None:
    reply = client.get("/stock", params={"below_threshold": "maybe"})
    assert reply.status_code == 422
    assert reply.json()["errors"][0]["field"] == "below_threshold"
