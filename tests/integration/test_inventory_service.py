"""The inventory service as a black box: stock over HTTP, orders in on Kafka, stock events out."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from fulfilment_kit.contracts import OrderLine, OrderPlaced, ShippingAddress, topics
from tests.support.polling import eventually
from tests.support.processes import running_service
from tests.support.stack import Record, publish, read_topic


@pytest.fixture
async def inventory(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service("inventory", database) as client:
        yield client


def order(*lines: tuple[str, int]) -> OrderPlaced:
    return OrderPlaced(
        order_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        lines=[OrderLine(sku=s, quantity=q, unit_price_minor=100) for s, q in lines],
        currency="EUR",
        total_minor=sum(q * 100 for _, q in lines),
        shipping_address=ShippingAddress(
            recipient_name="A", line1="1 St", city="Berlin", postal_code="10115", country_code="DE"
        ),
        placed_at=datetime.now(UTC),
    )


async def produce(event: OrderPlaced) -> str:
    """Publish `event` on the orders topic as the orders relay would; returns its ce_id."""
    [ce_id] = await publish(
        event, correlation_id=f"corr-{event.order_id}", source="/fulfilment/orders"
    )
    return ce_id


async def inventory_records(key: str) -> list[Record]:
    topic = topics.physical(topics.INVENTORY)
    return [r for r in await read_topic(topic) if r.key == key.encode()]


def payload(record: Record) -> dict[str, Any]:
    data = json.loads(record.value or b"")
    assert isinstance(data, dict)
    return data


async def stock_of(client: httpx.AsyncClient, sku: str) -> dict[str, Any]:
    reply = await client.get(f"/stock/{sku}")
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert isinstance(data, dict)
    return data


async def test_order_within_stock_is_locked_and_published(
    inventory: httpx.AsyncClient,
) -> None:
    for sku, quantity in (("MUG", 5), ("TEE", 2)):
        reply = await inventory.post(
            f"/stock/{sku}/receipts",
            json={"quantity": quantity},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert reply.status_code == 200, reply.text
    received = await eventually(lambda: inventory_records("MUG"), what="stock received published")
    assert received[0].headers["ce_type"] == "fulfilment.stock.received.v1"
    assert payload(received[0])["source"] == "purchase"

    placed = order(("MUG", 2), ("TEE", 2))
    ce_id = await produce(placed)
    found = await eventually(
        lambda: inventory_records(str(placed.order_id)), what="stock locked on the topic"
    )
    [record] = found
    assert record.headers["ce_type"] == "fulfilment.stock.locked.v1"
    assert record.headers["ce_causationid"] == ce_id
    assert record.headers["ce_correlationid"] == f"corr-{placed.order_id}"
    assert payload(record)["lines"] == [
        {"sku": "MUG", "quantity": 2},
        {"sku": "TEE", "quantity": 2},
    ]
    mug = await eventually(
        lambda: stock_of(inventory, "MUG"), until=lambda s: s["reserved"] == 2, what="reserved"
    )
    assert (mug["on_hand"], mug["available"]) == (5, 3)
    tee = await stock_of(inventory, "TEE")
    assert (tee["reserved"], tee["available"], tee["below_threshold"]) == (2, 0, True)
    reservation = (await inventory.get(f"/reservations/{placed.order_id}")).json()
    assert reservation["status"] == "locked"


async def test_order_beyond_stock_is_rejected_naming_the_sku(
    inventory: httpx.AsyncClient,
) -> None:
    reply = await inventory.post("/stock/CAP/receipts", json={"quantity": 1})
    assert reply.status_code == 200, reply.text
    await inventory.post("/stock/SOCK/receipts", json={"quantity": 9})

    placed = order(("SOCK", 1), ("CAP", 3))
    await produce(placed)
    [record] = await eventually(
        lambda: inventory_records(str(placed.order_id)), what="stock rejected on the topic"
    )
    assert record.headers["ce_type"] == "fulfilment.stock.rejected.v1"
    assert payload(record)["shortages"] == [{"sku": "CAP", "requested": 3, "available": 1}]
    for sku in ("CAP", "SOCK"):
        assert (await stock_of(inventory, sku))["reserved"] == 0
    reservation = (await inventory.get(f"/reservations/{placed.order_id}")).json()
    assert reservation["status"] == "rejected"


async def test_concurrent_first_receipts_of_different_skus_never_conflict(
    inventory: httpx.AsyncClient,
) -> None:
    skus = [f"NEW-{uuid.uuid4().hex[:6].upper()}-{n}" for n in range(24)]
    replies = await asyncio.gather(
        *(inventory.post(f"/stock/{sku}/receipts", json={"quantity": 5}) for sku in skus)
    )
    assert [r.status_code for r in replies] == [200] * len(skus), [r.text for r in replies]
    listed = (await inventory.get("/stock")).json()
    assert [item["sku"] for item in listed if item["sku"] in skus] == sorted(skus)
