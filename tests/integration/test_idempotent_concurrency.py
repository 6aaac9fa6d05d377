"""Defect 10: 20 concurrent identical POSTs with one Idempotency-Key get the first answer,
on every idempotent endpoint of every service (real processes, Kafka and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from fulfilment_kit.contracts import (
    OrderDelivered,
    OrderLine,
    OrderPaid,
    OrderPlaced,
    ShippingAddress,
    StockLine,
    StockLocked,
)
from tests.support.polling import eventually
from tests.support.processes import running_service
from tests.support.stack import publish

CONCURRENT = 20
ROUNDS = 6
ADDRESS = ShippingAddress(
    recipient_name="Ada", line1="1 St", city="Berlin", postal_code="10115", country_code="DE"
)


async def burst(
    send: Callable[[], Awaitable[httpx.Response]], expected_status: int
) -> list[dict[str, Any]]:
    """Send `send()` CONCURRENT times at once: every reply has the first one's status and
    body, exactly one of them is not a replay."""
    replies = await asyncio.gather(*(send() for _ in range(CONCURRENT)))
    statuses = [r.status_code for r in replies]
    assert statuses == [expected_status] * CONCURRENT, [r.text for r in replies]
    bodies = [r.json() for r in replies]
    first = [
        b for r, b in zip(replies, bodies, strict=True) if "Idempotent-Replayed" not in r.headers
    ]
    assert len(first) == 1, f"{len(first)} requests were applied, not one"
    return bodies


def order_placed(
    order_id: uuid.UUID, skus: tuple[str, ...] = ("MUG",), token: str | None = None
) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        lines=[OrderLine(sku=sku, quantity=2, unit_price_minor=1500) for sku in skus],
        currency="EUR",
        total_minor=3000 * len(skus),
        shipping_address=ADDRESS,
        placed_at=datetime.now(UTC),
        payment_token=token,
    )


async def test_concurrent_identical_orders_replay(database: str) -> None:
    body = {
        "customer_id": str(uuid.uuid4()),
        "lines": [{"sku": "MUG", "quantity": 1, "unit_price_minor": 1299}],
        "currency": "EUR",
        "shipping_address": ADDRESS.model_dump(),
        "payment_token": "tok_visa",
    }
    async with running_service("orders", database) as client:
        headers = {"Idempotency-Key": "order-burst"}
        bodies = await burst(lambda: client.post("/orders", json=body, headers=headers), 201)
    assert len({b["order_id"] for b in bodies}) == 1


async def test_concurrent_identical_stock_receipts_and_counts_replay(database: str) -> None:
    async with running_service("inventory", database) as client:
        receipt = {"quantity": 7, "reference": "PO-1"}
        headers = {"Idempotency-Key": "receipt-burst"}
        bodies = await burst(
            lambda: client.post("/stock/BURST/receipts", json=receipt, headers=headers), 200
        )
        assert {b["on_hand"] for b in bodies} == {7}
        count = {"counted_on_hand": 5, "reason": "cycle count"}
        headers = {"Idempotency-Key": "count-burst"}
        bodies = await burst(
            lambda: client.post("/stock/BURST/adjustments", json=count, headers=headers), 200
        )
        assert {b["on_hand"] for b in bodies} == {5}
        assert (await client.get("/stock/BURST")).json()["on_hand"] == 5


async def test_concurrent_identical_dispatches_replay(database: str) -> None:
    order_id = uuid.uuid4()
    placed = order_placed(order_id)
    paid = OrderPaid(
        order_id=order_id,
        customer_id=placed.customer_id,
        amount_minor=3000,
        currency="EUR",
        paid_at=datetime.now(UTC),
    )
    async with running_service("shipping", database) as client:
        await publish(placed, paid, source="/fulfilment/orders")

        async def status() -> str | None:
            reply = await client.get(f"/shipments/{order_id}")
            return str(reply.json()["status"]) if reply.status_code == 200 else None

        await eventually(status, until=lambda s: s == "packing", what="shipment packing")
        headers = {"Idempotency-Key": "dispatch-burst"}
        bodies = await burst(
            lambda: client.post(f"/shipments/{order_id}/dispatch", headers=headers), 200
        )
    assert len({b["tracking_number"] for b in bodies}) == 1


async def test_concurrent_identical_refunds_replay(database: str) -> None:
    order_id = uuid.uuid4()
    async with running_service("payments", database, FULFIL_PAYMENTS_GATEWAY="sandbox") as client:
        await publish(order_placed(order_id, token="tok_visa"))
        await publish(
            StockLocked(
                order_id=order_id,
                lines=[StockLine(sku="MUG", quantity=2)],
                locked_at=datetime.now(UTC),
            )
        )

        async def status() -> str | None:
            reply = await client.get(f"/payments/{order_id}")
            return str(reply.json()["status"]) if reply.status_code == 200 else None

        await eventually(status, until=lambda s: s == "captured", what="payment captured")
        refund = {"amount_minor": 500, "reason": "goodwill"}
        headers = {"Idempotency-Key": "refund-burst"}
        bodies = await burst(
            lambda: client.post(f"/payments/{order_id}/refunds", json=refund, headers=headers),
            201,
        )
        assert {b["refunded_minor"] for b in bodies} == {500}
        assert (await client.get(f"/payments/{order_id}")).json()["refunded_minor"] == 500


async def test_concurrent_identical_returns_and_cases_replay(database: str) -> None:
    order_id = uuid.uuid4()
    skus = tuple(f"SKU-{n}" for n in range(ROUNDS))
    placed = order_placed(order_id, skus)
    delivered = OrderDelivered(
        order_id=order_id, customer_id=placed.customer_id, delivered_at=datetime.now(UTC)
    )
    async with running_service("customer-service", database, ready_timeout=90) as client:
        await publish(placed, delivered, source="/fulfilment/orders")

        def request(sku: str, key: str) -> Awaitable[httpx.Response]:
            body = {
                "order_id": str(order_id),
                "lines": [{"sku": sku, "quantity": 2}],
                "reason_code": "damaged",
            }
            return client.post("/returns", json=body, headers={"Idempotency-Key": key})

        async def probe() -> int:
            return (await request("NO-SUCH-SKU", str(uuid.uuid4()))).status_code

        # 422 (unknown SKU) instead of 404/409: the service knows the order was delivered
        await eventually(probe, until=lambda s: s == 422, timeout=60, what="order delivered")
        for sku in skus:  # a race is a matter of timing: several rounds, one SKU each
            bodies = await burst(lambda sku=sku: request(sku, f"return-burst-{sku}"), 201)
            assert len({b["return_id"] for b in bodies}) == 1
        returns = (await client.get("/returns", params={"order_id": str(order_id)})).json()
        assert len(returns) == ROUNDS

        case = {"kind": "inquiry", "summary": "where is my parcel?", "order_id": str(order_id)}
        headers = {"Idempotency-Key": "case-burst"}
        bodies = await burst(lambda: client.post("/cases", json=case, headers=headers), 201)
        assert len({b["case_id"] for b in bodies}) == 1
