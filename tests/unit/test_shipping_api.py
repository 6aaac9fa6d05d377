"""The shipping HTTP API on the in-memory event store (no Kafka: the lifespan is not started)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from shipping.api import WEBHOOK_PATH, router
from shipping.application import SHIPMENTS, ShippingApplication
from shipping.contracts import to_public
from shipping.gateway import SANDBOX_CARRIER, RetryingCarrier, SandboxCarrier
from tests.support.auth import signed, staff_headers, webhook_secret
from tests.unit.test_shipping_policy import Feed, cancelled, paid, placed

NOW = datetime(2025, 1, 2, 8, 58, tzinfo=UTC)
"""The service's clock: carrier event times are checked against it (and the shipment)."""


@pytest.fixture
def sandbox() -> SandboxCarrier:
    return SandboxCarrier()


@pytest.fixture
def app(sandbox: SandboxCarrier) -> ShippingApplication:
    return ShippingApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"},
        carrier=RetryingCarrier(sandbox, sleep=lambda _: None),
        clock=lambda: NOW,
    )


def client_for(app: ShippingApplication) -> TestClient:
    runtime = ServiceRuntime(service="shipping", app=app, mapper=to_public, output_topics=[])
    api = create_http_app(runtime, routers=[router], title="shipping", public_paths=[WEBHOOK_PATH])
    api.state.carrier_webhook_secrets = {SANDBOX_CARRIER: webhook_secret()}
    return TestClient(api, headers=staff_headers())


@pytest.fixture
def client(app: ShippingApplication) -> TestClient:
    return client_for(app)


@pytest.fixture
def feed(app: ShippingApplication) -> Feed:
    return Feed(app)


def packing_order(feed: Feed) -> uuid.UUID:
    order_id = uuid.uuid4()
    feed.send(feed.message(placed(order_id)), feed.message(paid(order_id)))
    return order_id


def dispatched(client: TestClient, feed: Feed) -> dict[str, Any]:
    reply = client.post(f"/shipments/{packing_order(feed)}/dispatch")
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def newest(app: ShippingApplication) -> int:
    return app.recorder.max_notification_id() or 0


def counted(outcome: str) -> float:
    value = SHIPMENTS.labels(outcome)._value.get()
    return float(value)


def test_get_shows_the_shipment_without_the_address(client: TestClient, feed: Feed) -> None:
    order_id = packing_order(feed)
    reply = client.get(f"/shipments/{order_id}")
    assert reply.status_code == 200
    view = reply.json()
    assert view["status"] == "packing"
    assert view["order_id"] == str(order_id)
    assert view["lines"] == [{"sku": "MUG-BLUE", "quantity": 2}, {"sku": "TEE-M", "quantity": 1}]
    assert view["carrier"] is view["tracking_number"] is view["shipped_at"] is None
    assert view["exception"] is None
    assert "Berlin" not in reply.text


def test_unknown_order_is_404_and_malformed_id_is_422(client: TestClient) -> None:
    for reply in (
        client.get(f"/shipments/{uuid.uuid4()}"),
        client.post(f"/shipments/{uuid.uuid4()}/dispatch"),
    ):
        assert reply.status_code == 404
        assert reply.headers["content-type"] == "application/problem+json"
        assert "does not exist" in reply.json()["detail"]
    assert client.get("/shipments/nope").status_code == 422


def test_dispatch_ships_and_counts(client: TestClient, feed: Feed) -> None:
    before = counted("shipped")
    view = dispatched(client, feed)
    assert view["status"] == "shipped"
    assert view["carrier"] == "sandbox-post"
    assert view["tracking_number"].startswith("SBX")
    assert view["shipped_at"]
    assert counted("shipped") == before + 1
    assert client.get(f"/shipments/{view['order_id']}").json() == view


@pytest.mark.parametrize("case", ["awaiting payment", "cancelled", "already shipped"])
def test_dispatch_conflicts_say_why(
    client: TestClient, feed: Feed, app: ShippingApplication, case: str
) -> None:
    order_id = uuid.uuid4()
    feed.send(feed.message(placed(order_id)))
    if case == "cancelled":
        feed.send(feed.message(cancelled(order_id)))
    if case == "already shipped":
        feed.send(feed.message(paid(order_id)))
        assert client.post(f"/shipments/{order_id}/dispatch").status_code == 200
    before = newest(app)
    reply = client.post(f"/shipments/{order_id}/dispatch")
    assert reply.status_code == 409, reply.text
    assert case in reply.json()["detail"]
    assert newest(app) == before


def test_dispatch_with_the_same_idempotency_key_replays(client: TestClient, feed: Feed) -> None:
    order_id = packing_order(feed)
    key = {"Idempotency-Key": "dispatch-1"}
    first = client.post(f"/shipments/{order_id}/dispatch", headers=key)
    again = client.post(f"/shipments/{order_id}/dispatch", headers=key)
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other = client.post(f"/shipments/{order_id}/dispatch", headers={"Idempotency-Key": "x"})
    assert other.status_code == 409


def test_carrier_down_is_503_and_the_shipment_stays_packing(
    client: TestClient, feed: Feed, sandbox: SandboxCarrier
) -> None:
    order_id = packing_order(feed)
    sandbox.fail_next = 3
    reply = client.post(f"/shipments/{order_id}/dispatch")
    assert reply.status_code == 503, reply.text
    assert sandbox.calls == 3
    assert client.get(f"/shipments/{order_id}").json()["status"] == "packing"
    assert client.post(f"/shipments/{order_id}/dispatch").status_code == 200


def test_webhook_delivered_once(client: TestClient, feed: Feed, app: ShippingApplication) -> None:
    tracking = dispatched(client, feed)["tracking_number"]
    before = counted("delivered")
    body = {"tracking_number": tracking, "status": "delivered"}
    assert (
        client.post("/carrier/webhooks", **signed(body | {"status": "in_transit"})).json()["status"]
        == "in_transit"
    )
    reply = client.post(
        "/carrier/webhooks", **signed(body | {"occurred_at": "2025-01-02T10:00:00+01:00"})
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "delivered"
    assert reply.json()["delivered_at"].startswith("2025-01-02T10:00:00")
    events = newest(app)
    again = client.post("/carrier/webhooks", **signed(body))
    assert again.status_code == 200
    assert again.json()["status"] == "delivered"
    assert newest(app) == events
    assert counted("delivered") == before + 1


def test_webhook_exception_then_invalid_transitions(client: TestClient, feed: Feed) -> None:
    tracking = dispatched(client, feed)["tracking_number"]
    problem = {
        "tracking_number": tracking,
        "status": "exception",
        "reason_code": "address_not_found",
        "reason": "no such street",
    }
    reply = client.post("/carrier/webhooks", **signed(problem))
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "exception"
    assert reply.json()["exception"]["reason_code"] == "address_not_found"
    delivered = {"tracking_number": tracking, "status": "delivered"}
    assert client.post("/carrier/webhooks", **signed(delivered)).status_code == 200
    late = client.post("/carrier/webhooks", **signed(problem))
    assert late.status_code == 409
    assert "delivered" in late.json()["detail"]
    assert (
        client.post("/carrier/webhooks", **signed(delivered | {"status": "in_transit"})).status_code
        == 409
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "exception"}, "body"),
        ({"status": "exception", "reason_code": "eaten_by_dog"}, "reason_code"),
        ({"status": "lost_in_space"}, "status"),
        ({"status": "delivered", "occurred_at": "2025-01-02T10:00:00"}, "occurred_at"),
        ({"status": "delivered", "extra": 1}, "extra"),
        ({"status": "delivered", "tracking_number": "bad number!"}, "tracking_number"),
    ],
)
def test_bad_webhooks_are_422(
    client: TestClient, feed: Feed, body: dict[str, Any], field: str
) -> None:
    tracking = dispatched(client, feed)["tracking_number"]
    reply = client.post("/carrier/webhooks", **signed({"tracking_number": tracking} | body))
    assert reply.status_code == 422, reply.text
    assert field in [e["field"] for e in reply.json()["errors"]]


def test_exception_without_a_reason_code_says_so(client: TestClient, feed: Feed) -> None:
    tracking = dispatched(client, feed)["tracking_number"]
    reply = client.post(
        "/carrier/webhooks", **signed({"tracking_number": tracking, "status": "exception"})
    )
    assert reply.status_code == 422
    assert "reason_code" in reply.text


def test_webhook_for_an_unknown_tracking_number_is_404(client: TestClient) -> None:
    reply = client.post(
        "/carrier/webhooks", **signed({"tracking_number": "SBX000000000000", "status": "delivered"})
    )
    assert reply.status_code == 404
    assert "SBX000000000000" in reply.json()["detail"]


def test_signed_webhook_is_applied_once_and_its_replay_refused(
    client: TestClient, feed: Feed, app: ShippingApplication
) -> None:
    tracking = dispatched(client, feed)["tracking_number"]
    delivery = signed({"tracking_number": tracking, "status": "in_transit"}, delivery_id="d-1")
    assert client.post("/carrier/webhooks", **delivery).status_code == 200
    events = newest(app)
    replayed = client.post("/carrier/webhooks", **delivery)
    assert replayed.status_code == 409, replayed.text
    assert "d-1" in replayed.json()["detail"]
    # The same id re-signed with another body is the same delivery: refused, nothing recorded.
    again = signed({"tracking_number": tracking, "status": "delivered"}, delivery_id="d-1")
    assert client.post("/carrier/webhooks", **again).status_code == 409
    assert newest(app) == events
    assert client.get(f"/shipments/{feed_order(app, tracking)}").json()["status"] == "in_transit"


def _unsigned(body: dict[str, Any]) -> dict[str, Any]:
    return {"json": body}


def _bad_signature(body: dict[str, Any]) -> dict[str, Any]:
    return signed(body, secret=b"not-the-carriers-secret")


def _stale(body: dict[str, Any]) -> dict[str, Any]:
    return signed(body, timestamp=int(time.time()) - 360)


def _future(body: dict[str, Any]) -> dict[str, Any]:
    return signed(body, timestamp=int(time.time()) + 360)


def _unknown_carrier(body: dict[str, Any]) -> dict[str, Any]:
    return signed(body, carrier="other-post", secret=webhook_secret())


def _tampered(body: dict[str, Any]) -> dict[str, Any]:
    request = signed(body)
    request["content"] = request["content"].replace(b"delivered", b"exception") + b" "
    return request


@pytest.mark.parametrize(
    "forge", [_unsigned, _bad_signature, _stale, _future, _unknown_carrier, _tampered]
)
def test_unsigned_or_stale_webhooks_are_401_and_record_nothing(
    client: TestClient, feed: Feed, app: ShippingApplication, forge: Any
) -> None:
    tracking = dispatched(client, feed)["tracking_number"]
    events = newest(app)
    reply = client.post(
        "/carrier/webhooks", **forge({"tracking_number": tracking, "status": "delivered"})
    )
    assert reply.status_code == 401, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert newest(app) == events
    # Unauthenticated senders learn nothing about the body either.
    assert client.post("/carrier/webhooks", **forge({"x": 1})).status_code == 401


def test_a_carrier_cannot_report_on_another_carriers_parcel(
    app: ShippingApplication, feed: Feed
) -> None:
    client = client_for(app)
    client.app.state.carrier_webhook_secrets["other-post"] = b"other-secret"  # type: ignore[attr-defined]
    tracking = dispatched(client, feed)["tracking_number"]
    body = {"tracking_number": tracking, "status": "delivered"}
    reply = client.post(
        "/carrier/webhooks", **signed(body, carrier="other-post", secret=b"other-secret")
    )
    assert reply.status_code == 404
    assert client.get(f"/shipments/{feed_order(app, tracking)}").json()["status"] == "shipped"


def feed_order(app: ShippingApplication, tracking: str) -> uuid.UUID:
    from shipping.domain import TrackingIndex, tracking_index_id_for

    index = app.find(tracking_index_id_for(tracking), TrackingIndex)
    assert index is not None
    return index.order_id


@pytest.mark.parametrize(
    ("occurred_at", "why"),
    [
        ("1970-01-01T00:00:00Z", "before the parcel shipped"),
        ((NOW - timedelta(minutes=6)).isoformat(), "before the parcel shipped"),
        ("9999-12-31T23:59:59Z", "in the future"),
        ((NOW + timedelta(minutes=6)).isoformat(), "in the future"),
    ],
)
def test_carrier_event_times_before_the_shipment_or_in_the_future_are_422(
    client: TestClient, feed: Feed, app: ShippingApplication, occurred_at: str, why: str
) -> None:
    tracking = dispatched(client, feed)["tracking_number"]
    events = newest(app)
    for status in ("in_transit", "delivered"):
        body = {"tracking_number": tracking, "status": status, "occurred_at": occurred_at}
        reply = client.post("/carrier/webhooks", **signed(body))
        assert reply.status_code == 422, reply.text
        problem = reply.json()
        assert [e["field"] for e in problem["errors"]] == ["occurred_at"]
        assert why in problem["detail"]
    assert newest(app) == events


def test_carrier_event_times_within_the_clock_skew_are_accepted(
    client: TestClient, feed: Feed
) -> None:
    tracking = dispatched(client, feed)["tracking_number"]
    for status, at in (
        ("in_transit", NOW - timedelta(minutes=4)),
        ("delivered", NOW + timedelta(minutes=4)),
    ):
        body = {"tracking_number": tracking, "status": status, "occurred_at": at.isoformat()}
        assert client.post("/carrier/webhooks", **signed(body)).status_code == 200
