"""The shipping service as a black box: order events in on Kafka, HTTP commands and carrier
webhooks, shipment events out on the real shipping topic."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jsonschema
import pytest

from fulfilment_kit.contracts import (
    IntegrationEvent,
    OrderCancelled,
    OrderLine,
    OrderPaid,
    OrderPlaced,
    ShippingAddress,
    topics,
)
from tests.support.auth import signed
from tests.support.polling import eventually
from tests.support.processes import running_service
from tests.support.stack import Record, publish, read_topic, relay_published_all

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "shared/src/fulfilment_kit/contracts/schemas"
CORRELATION = "corr-order-it"
SECRET = "hook-secret-of-the-sandbox-carrier"


@pytest.fixture
async def shipping(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(
        "shipping", database, FULFIL_CARRIER_WEBHOOK_SECRETS=json.dumps({"sandbox-post": SECRET})
    ) as client:
        yield client


@pytest.fixture
async def auto_shipping(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(
        "shipping", database, FULFIL_SHIPPING_AUTO_DISPATCH_S="0.2"
    ) as client:
        yield client


async def produce(*events: IntegrationEvent) -> None:
    """Publish order events as the orders relay does: CloudEvents records keyed by order id."""
    await publish(*events, correlation_id=CORRELATION, source="/fulfilment/orders")


def order_events(order_id: uuid.UUID) -> tuple[OrderPlaced, OrderPaid]:
    customer_id = uuid.uuid4()
    now = datetime.now(UTC)
    placed = OrderPlaced(
        order_id=order_id,
        customer_id=customer_id,
        lines=[OrderLine(sku="MUG-BLUE", quantity=2, unit_price_minor=1299)],
        currency="EUR",
        total_minor=2598,
        shipping_address=ShippingAddress(
            recipient_name="Ada Example",
            line1="1 Sample Street",
            city="Berlin",
            postal_code="10115",
            country_code="DE",
        ),
        placed_at=now,
    )
    paid = OrderPaid(
        order_id=order_id,
        customer_id=customer_id,
        amount_minor=2598,
        currency="EUR",
        paid_at=now,
    )
    return placed, paid


async def shipping_records(order_id: uuid.UUID) -> list[Record]:
    return [
        r
        for r in await read_topic(topics.physical(topics.SHIPPING))
        if r.key == str(order_id).encode()
    ]


def of_type(ce_type: str) -> Callable[[list[Record]], bool]:
    return lambda records: any(r.headers["ce_type"] == ce_type for r in records)


async def status_of(client: httpx.AsyncClient, order_id: uuid.UUID) -> str | None:
    reply = await client.get(f"/shipments/{order_id}")
    return str(reply.json()["status"]) if reply.status_code == 200 else None


def validate(record: Record) -> dict[str, object]:
    payload = json.loads(record.value or b"")
    schema = json.loads((SCHEMAS / f"{record.headers['ce_type']}.json").read_text())
    jsonschema.validate(payload, schema)
    return dict(payload)


async def test_paid_order_is_packed_dispatched_and_delivered(
    shipping: httpx.AsyncClient, database: str
) -> None:
    order_id = uuid.uuid4()
    await produce(*order_events(order_id))
    await eventually(
        lambda: status_of(shipping, order_id), until=lambda s: s == "packing", what="packing"
    )

    reply = await shipping.post(
        f"/shipments/{order_id}/dispatch", headers={"X-Correlation-ID": "corr-dispatch"}
    )
    assert reply.status_code == 200, reply.text
    view = reply.json()
    assert view["status"] == "shipped"
    tracking = view["tracking_number"]
    assert re.fullmatch(r"SBX[0-9A-F]{12}", tracking)
    again = await shipping.post(f"/shipments/{order_id}/dispatch")
    assert again.status_code == 409
    assert "already shipped" in again.json()["detail"]

    records = await eventually(
        lambda: shipping_records(order_id),
        until=of_type("fulfilment.shipment.shipped.v1"),
        what="ShipmentShipped on the shipping topic",
    )
    (shipped,) = records
    payload = validate(shipped)
    assert payload["order_id"] == str(order_id)
    assert payload["shipment_id"] == view["shipment_id"]
    assert payload["tracking_number"] == tracking
    assert payload["carrier"] == "sandbox-post"
    assert shipped.headers["ce_source"] == "/fulfilment/shipping"
    assert shipped.headers["ce_subject"] == str(order_id)
    assert shipped.headers["ce_correlationid"] == "corr-dispatch"

    webhook = {"tracking_number": tracking, "status": "delivered"}
    denied = await shipping.post("/carrier/webhooks", json=webhook)
    assert denied.status_code == 401
    dev_signed = await shipping.post("/carrier/webhooks", **signed(webhook))
    assert dev_signed.status_code == 401  # the configured secret replaces the dev one
    key = SECRET.encode()
    first = signed(webhook, secret=key, delivery_id="delivery-1")
    for request in (first, signed(webhook, secret=key)):  # the carrier resends: no 2nd event
        delivered = await shipping.post("/carrier/webhooks", **request)
        assert delivered.status_code == 200, delivered.text
        assert delivered.json()["status"] == "delivered"
    replayed = await shipping.post("/carrier/webhooks", **first)
    assert replayed.status_code == 409, replayed.text
    unknown = await shipping.post(
        "/carrier/webhooks",
        **signed(webhook | {"tracking_number": "SBX000000000000"}, secret=key),
    )
    assert unknown.status_code == 404

    await eventually(
        lambda: shipping_records(order_id),
        until=of_type("fulfilment.shipment.delivered.v1"),
        what="ShipmentDelivered on the shipping topic",
    )
    await eventually(lambda: relay_published_all(database, "shipping"), what="relay caught up")
    records = await shipping_records(order_id)
    assert [r.headers["ce_type"] for r in records] == [
        "fulfilment.shipment.shipped.v1",
        "fulfilment.shipment.delivered.v1",
    ]
    assert validate(records[1])["shipment_id"] == view["shipment_id"]
    assert (await shipping.get(f"/shipments/{order_id}")).json()["delivered_at"]
    metrics = (await shipping.get("/metrics")).text
    assert re.search(r'^fulfil_shipments_total\{outcome="delivered"\} 1\.0$', metrics, re.M)


async def test_cancelled_order_is_never_shipped(shipping: httpx.AsyncClient) -> None:
    order_id = uuid.uuid4()
    placed, paid = order_events(order_id)
    cancelled = OrderCancelled(
        order_id=order_id,
        customer_id=placed.customer_id,
        cancelled_by="customer",
        reason="changed my mind",
        cancelled_at=datetime.now(UTC),
    )
    await produce(placed, paid, cancelled)
    await eventually(
        lambda: status_of(shipping, order_id), until=lambda s: s == "cancelled", what="cancelled"
    )
    reply = await shipping.post(f"/shipments/{order_id}/dispatch")
    assert reply.status_code == 409
    assert "cancelled" in reply.json()["detail"]


async def test_auto_dispatch_ships_packing_shipments_by_itself(
    auto_shipping: httpx.AsyncClient,
) -> None:
    order_ids = [uuid.uuid4() for _ in range(3)]
    for order_id in order_ids:
        await produce(*order_events(order_id))
    for order_id in order_ids:
        records = await eventually(
            lambda order_id=order_id: shipping_records(order_id),  # type: ignore[misc]
            until=of_type("fulfilment.shipment.shipped.v1"),
            what="auto-dispatched ShipmentShipped",
        )
        assert len(records) == 1
        assert records[0].headers["ce_correlationid"] == CORRELATION
        assert await status_of(auto_shipping, order_id) == "shipped"
