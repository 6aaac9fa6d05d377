"""The payments service as a black box: records on the real Kafka topics in, payment events out,
and its HTTP API on the real PostgreSQL event store."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from fulfilment_kit.contracts import (
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    ShippingAddress,
    StockLine,
    StockLocked,
    topics,
)
from fulfilment_kit.contracts.base import IntegrationEvent
from tests.support.polling import eventually
from tests.support.processes import started_service
from tests.support.stack import Record, publish, read_topic, relay_published_all

TOTAL = 3 * 1500


@pytest.fixture
async def payments(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with started_service(
        "payments",
        database,
        FULFIL_PAYMENTS_GATEWAY="sandbox",
        FULFIL_PAYMENTS_GATEWAY_BACKOFF_S="0.01",
    ) as (proc, client):
        yield client
        assert "tok_" not in proc.log_text(), "a payment token reached the log"


async def produce(*events: IntegrationEvent, ce_id: str | None = None) -> None:
    await publish(*events, ce_id=ce_id, correlation_id="corr-it-payments")


def placed(order_id: uuid.UUID, token: str) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        lines=[OrderLine(sku="MUG-BLUE", quantity=3, unit_price_minor=1500)],
        currency="EUR",
        total_minor=TOTAL,
        shipping_address=ShippingAddress(
            recipient_name="Ada",
            line1="1 St",
            city="Berlin",
            postal_code="10115",
            country_code="DE",
        ),
        placed_at=datetime.now(UTC),
        payment_token=token,
    )


def locked(order_id: uuid.UUID) -> StockLocked:
    return StockLocked(
        order_id=order_id,
        lines=[StockLine(sku="MUG-BLUE", quantity=3)],
        locked_at=datetime.now(UTC),
    )


async def payment_records(order_id: uuid.UUID) -> list[Record]:
    topic = topics.physical(topics.PAYMENTS)
    return [r for r in await read_topic(topic) if r.key == str(order_id).encode()]


async def applied(client: httpx.AsyncClient) -> float:
    """Records the payments inbox has applied, over all its source topics."""
    text = (await client.get("/metrics")).text
    pattern = r'^fulfil_inbox_applied_total\{consumer="payments",topic="[^"]+"\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def types(records: list[Record]) -> list[str]:
    return [r.headers["ce_type"] for r in records]


async def test_capture_decline_and_refunds(payments: httpx.AsyncClient) -> None:
    paid, declined = uuid.uuid4(), uuid.uuid4()
    # Stock first for one order, order first for the other: both orders work.
    await produce(locked(paid), placed(declined, "tok_decline"))
    await produce(placed(paid, "tok_visa"), locked(declined))

    captured = await eventually(
        lambda: payment_records(paid), what="payment captured on the payments topic"
    )
    assert types(captured) == ["fulfilment.payment.captured.v1"]
    record = captured[0]
    payload = json.loads(record.value or b"")
    assert payload["order_id"] == str(paid)
    assert (payload["amount_minor"], payload["currency"]) == (TOTAL, "EUR")
    assert record.headers["ce_source"] == "/fulfilment/payments"
    assert record.headers["ce_correlationid"] == "corr-it-payments"
    assert "tok_" not in (record.value or b"").decode()

    view = (await payments.get(f"/payments/{paid}")).json()
    assert view["status"] == "captured"
    assert view["captured_minor"] == TOTAL

    failed = await eventually(lambda: payment_records(declined), what="payment failed")
    assert types(failed) == ["fulfilment.payment.failed.v1"]
    assert json.loads(failed[0].value or b"")["reason_code"] == "card_declined"
    view = (await payments.get(f"/payments/{declined}")).json()
    assert (view["status"], view["failure_reason"]) == ("failed", "card_declined")

    # Refunds over HTTP: beyond the capture is a conflict, within it is published.
    over = await payments.post(
        f"/payments/{paid}/refunds", json={"amount_minor": TOTAL + 1, "reason": "goodwill"}
    )
    assert over.status_code == 409, over.text
    assert over.json()["refundable_minor"] == TOTAL
    uncaptured = await payments.post(
        f"/payments/{declined}/refunds", json={"amount_minor": 1, "reason": "goodwill"}
    )
    assert uncaptured.status_code == 409

    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"amount_minor": 500, "reason": "goodwill"}
    first = await payments.post(f"/payments/{paid}/refunds", json=body, headers=key)
    again = await payments.post(f"/payments/{paid}/refunds", json=body, headers=key)
    assert first.status_code == again.status_code == 201, first.text
    assert first.json()["refund_id"] == again.json()["refund_id"]
    records = await eventually(
        lambda: payment_records(paid),
        until=lambda rs: len(rs) == 2,
        what="one refund published",
    )
    assert types(records) == ["fulfilment.payment.captured.v1", "fulfilment.payment.refunded.v1"]
    refund = json.loads(records[1].value or b"")
    assert (refund["refund_minor"], refund["full_refund"], refund["reason"]) == (
        500,
        False,
        "goodwill",
    )
    view = (await payments.get(f"/payments/{paid}")).json()
    assert (view["status"], view["refunded_minor"]) == ("partially_refunded", 500)

    metrics = (await payments.get("/metrics")).text
    assert 'fulfil_payments_total{outcome="captured"} 1.0' in metrics
    assert 'fulfil_payments_total{outcome="failed"} 1.0' in metrics
    assert 'fulfil_payments_total{outcome="refunded"} 1.0' in metrics


async def test_cancel_after_capture_refunds_once_despite_redelivery(
    payments: httpx.AsyncClient, database: str
) -> None:
    order_id = uuid.uuid4()
    await produce(placed(order_id, "tok_flaky"), locked(order_id))
    await eventually(lambda: payment_records(order_id), what="payment captured")
    assert await applied(payments) == 2
    cancel = OrderCancelled(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        cancelled_by="customer",
        reason="changed my mind",
        cancelled_at=datetime.now(UTC),
    )
    ce_id = str(uuid.uuid4())
    await produce(cancel, ce_id=ce_id)
    await produce(cancel, ce_id=ce_id)  # the same event again, at the next offset
    await produce(locked(order_id))  # and a late duplicate of stock locked
    await eventually(
        lambda: payments.get(f"/payments/{order_id}"),
        until=lambda r: r.json()["refunded_minor"] == TOTAL,
        what="refund visible",
    )
    # Every record reached the policy (a redelivery at a new offset is applied, not skipped
    # by the inbox): 2 before the cancellation, then 3.
    await eventually(lambda: applied(payments), until=lambda n: n == 5, what="5 records applied")
    await eventually(lambda: relay_published_all(database, "payments"), what="relay caught up")
    records = await payment_records(order_id)
    assert types(records) == ["fulfilment.payment.captured.v1", "fulfilment.payment.refunded.v1"]
    refund = json.loads(records[1].value or b"")
    assert (refund["reason"], refund["full_refund"], refund["refund_minor"]) == (
        "order_cancelled",
        True,
        TOTAL,
    )
    assert (await payments.get(f"/payments/{order_id}")).json()["status"] == "refunded"
