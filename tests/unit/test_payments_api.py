"""The payments HTTP API on the in-memory event store (no Kafka: the lifespan is not started)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from payments.api import router
from payments.application import PaymentsApplication
from payments.contracts import to_public
from payments.gateway import RefundRejectedError, TransientGatewayError
from tests.support.auth import staff_headers
from tests.unit.test_payments_policy import (
    TOTAL,
    Feed,
    RecordingGateway,
    locked,
    make_app,
    placed,
)


@pytest.fixture
def app() -> PaymentsApplication:
    return make_app(RecordingGateway())


@pytest.fixture
def client(app: PaymentsApplication) -> TestClient:
    runtime = ServiceRuntime(service="payments", app=app, mapper=to_public, output_topics=[])
    return TestClient(
        create_http_app(runtime, routers=[router], title="payments"), headers=staff_headers()
    )


def captured_order(app: PaymentsApplication, token: str = "tok_visa") -> uuid.UUID:
    order_id = uuid.uuid4()
    Feed(app).send(placed(order_id, token), locked(order_id))
    return order_id


def refund(client: TestClient, order_id: uuid.UUID, amount: Any, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(
        f"/payments/{order_id}/refunds",
        json={"amount_minor": amount, "reason": "goodwill"},
        headers=headers,
    )


def test_get_shows_the_payment_without_the_token(
    client: TestClient, app: PaymentsApplication
) -> None:
    order_id = captured_order(app, "tok_mastercard")
    reply = client.get(f"/payments/{order_id}")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["order_id"] == str(order_id)
    assert body["status"] == "captured"
    assert (body["amount_minor"], body["currency"]) == (TOTAL, "EUR")
    assert (body["captured_minor"], body["refunded_minor"]) == (TOTAL, 0)
    assert body["refunds"] == []
    assert body["failure_reason"] is None
    assert "tok_" not in reply.text


def test_get_shows_the_failure_reason(client: TestClient, app: PaymentsApplication) -> None:
    order_id = captured_order(app, "tok_expired")
    body = client.get(f"/payments/{order_id}").json()
    assert (body["status"], body["failure_reason"]) == ("failed", "expired_card")


def test_unknown_order_is_404_and_malformed_id_is_422(client: TestClient) -> None:
    missing = client.get(f"/payments/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert "does not exist" in missing.json()["detail"]
    assert client.get("/payments/nope").status_code == 422
    assert refund(client, uuid.uuid4(), 5).status_code == 404


def test_refund_then_replay_then_conflicting_replay(
    client: TestClient, app: PaymentsApplication
) -> None:
    order_id = captured_order(app)
    first = refund(client, order_id, 1000, key="rf-1")
    assert first.status_code == 201, first.text
    issued = first.json()
    assert issued["amount_minor"] == 1000
    assert (issued["refunded_minor"], issued["refundable_minor"]) == (1000, TOTAL - 1000)

    again = refund(client, order_id, 1000, key="rf-1")
    assert again.status_code == 201
    assert again.json()["refund_id"] == issued["refund_id"]
    assert again.headers["idempotent-replayed"] == "true"

    clash = refund(client, order_id, 999, key="rf-1")
    assert clash.status_code == 409
    assert "already used" in clash.json()["detail"]

    body = client.get(f"/payments/{order_id}").json()
    assert body["status"] == "partially_refunded"
    assert body["refunded_minor"] == 1000
    assert [(r["refund_id"], r["amount_minor"], r["reason"]) for r in body["refunds"]] == [
        (issued["refund_id"], 1000, "goodwill")
    ]
    gateway = app.gateway
    assert isinstance(gateway, RecordingGateway)
    assert len(gateway.refunds) == 1


def test_refund_beyond_the_capture_is_409_saying_how_much_is_refundable(
    client: TestClient, app: PaymentsApplication
) -> None:
    order_id = captured_order(app)
    assert refund(client, order_id, TOTAL - 100).status_code == 201
    over = refund(client, order_id, 101)
    assert over.status_code == 409
    problem = over.json()
    assert "100" in problem["detail"]
    assert problem["refundable_minor"] == 100
    full = refund(client, order_id, 100)
    assert full.status_code == 201
    assert client.get(f"/payments/{order_id}").json()["status"] == "refunded"


@pytest.mark.parametrize("token", ["tok_decline", None])
def test_refund_of_an_uncaptured_payment_is_409(
    client: TestClient, app: PaymentsApplication, token: str | None
) -> None:
    order_id = uuid.uuid4()
    feed = Feed(app)
    feed.send(placed(order_id, token))
    if token is not None:
        feed.send(locked(order_id))
    reply = refund(client, order_id, 1)
    assert reply.status_code == 409
    assert "only captured money" in reply.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount_minor": 0, "reason": "goodwill"}, "amount_minor"),
        ({"amount_minor": -5, "reason": "goodwill"}, "amount_minor"),
        ({"amount_minor": 1.5, "reason": "goodwill"}, "amount_minor"),
        ({"amount_minor": "10", "reason": "goodwill"}, "amount_minor"),
        ({"amount_minor": True, "reason": "goodwill"}, "amount_minor"),
        ({"reason": "goodwill"}, "amount_minor"),
        ({"amount_minor": 5, "reason": "order_cancelled"}, "reason"),
        ({"amount_minor": 5}, "reason"),
        ({"amount_minor": 5, "reason": "goodwill", "extra": 1}, "extra"),
    ],
)
def test_bad_refund_bodies_are_422(
    client: TestClient, app: PaymentsApplication, body: dict[str, Any], field: str
) -> None:
    order_id = captured_order(app)
    reply = client.post(f"/payments/{order_id}/refunds", json=body)
    assert reply.status_code == 422, reply.text
    assert field in [e["field"] for e in reply.json()["errors"]]
    assert app.get_payment(order_id).refunds == []


class DownForRefunds(RecordingGateway):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def refund(self, **kwargs: Any) -> Any:
        self.refunds.append(kwargs)
        raise self.error


@pytest.mark.parametrize(
    ("error", "status"),
    [(TransientGatewayError("down"), 503), (RefundRejectedError("no"), 502)],
)
def test_provider_errors_on_refund_store_nothing(error: Exception, status: int) -> None:
    app = make_app(DownForRefunds(error))
    runtime = ServiceRuntime(service="payments", app=app, mapper=to_public, output_topics=[])
    client = TestClient(
        create_http_app(runtime, routers=[router], title="payments"), headers=staff_headers()
    )
    order_id = captured_order(app)
    reply = refund(client, order_id, 5, key="k")
    assert reply.status_code == status, reply.text
    assert app.get_payment(order_id).refunds == []
