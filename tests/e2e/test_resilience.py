"""Redelivery and a stopped service: the same final state, and no order waits silently."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.settings import KafkaSettings
from tests.e2e.platform import Platform, events_of, new_sku
from tests.e2e.test_lifecycle import dispatch
from tests.support.auth import signed
from tests.support.polling import eventually
from tests.support.stack import assigned_reader

DUPLICATE_HEADER = "test_duplicate"
CONSUMING = ("orders", "inventory", "payments", "shipping")


@contextlib.asynccontextmanager
async def duplicating_every_record() -> AsyncIterator[list[int]]:
    """Re-publish every new record of every platform topic once, at a new offset."""
    consumer, tps = await assigned_reader([topics.physical(t) for t in topics.ALL])
    producer = kafka.producer(KafkaSettings())
    await producer.start()
    copied = [0]
    await consumer.seek_to_end(*tps)

    async def copy() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    if any(k == DUPLICATE_HEADER for k, _ in r.headers or ()):
                        continue
                    headers = [*(r.headers or ()), (DUPLICATE_HEADER, b"1")]
                    await producer.send_and_wait(
                        r.topic, value=r.value, key=r.key, headers=headers, partition=r.partition
                    )
                    copied[0] += 1

    task = asyncio.create_task(copy())
    try:
        yield copied
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()


async def final_state(
    platform: Platform, orders: dict[str, str], skus: list[str]
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for order_id in orders.values():
        order = await platform.get("orders", f"/orders/{order_id}")
        payment = await platform.get("payments", f"/payments/{order_id}")
        shipment = await platform.get("shipping", f"/shipments/{order_id}")
        state[order_id] = (
            order["status"],
            order["version"],
            payment
            and (payment["captured_minor"], payment["refunded_minor"], len(payment["refunds"])),
            shipment and (shipment["status"], shipment["tracking_number"]),
            [
                r.headers["ce_type"]
                for t in topics.ALL
                for r in await events_of(t, order_id)
                if not any(k == DUPLICATE_HEADER for k in r.headers)
            ],
        )
    for sku in skus:
        stock = await platform.get("inventory", f"/stock/{sku}")
        state[sku] = (stock["on_hand"], stock["reserved"], stock["version"])
    return state


async def run_mixed_traffic(platform: Platform) -> tuple[dict[str, str], list[str]]:
    a, b = new_sku("DUP"), new_sku("DUP")
    await platform.receive_stock(a, 10)
    await platform.receive_stock(b, 3)
    orders = {
        "delivered": (await platform.place_order([(a, 2, 1000), (b, 1, 500)]))["order_id"],
        "declined": (await platform.place_order([(a, 1, 1000)], token="tok_decline"))["order_id"],
        "rejected": (await platform.place_order([(b, 5, 500)]))["order_id"],
        "cancelled": (await platform.place_order([(a, 3, 1000)]))["order_id"],
    }
    await platform.order_reaches(orders["delivered"], "paid")
    shipment = await dispatch(platform, orders["delivered"])
    async with platform["shipping"].client() as client:
        hook = {"tracking_number": shipment["tracking_number"], "status": "delivered"}
        assert (await client.post("/carrier/webhooks", **signed(hook))).status_code == 200
    await platform.order_reaches(orders["delivered"], "delivered")
    await platform.order_reaches(orders["declined"], "cancelled")
    await platform.order_reaches(orders["rejected"], "rejected")
    await platform.order_reaches(orders["cancelled"], "paid")
    async with platform["orders"].client() as client:
        # paid: a cancellation request shipping answers (202; issue 7 defect 3, was 200)
        cancel = await client.post(f"/orders/{orders['cancelled']}/cancel")
        assert cancel.status_code == 202, cancel.text

    async def refunded() -> Any:
        return await platform.get("payments", f"/payments/{orders['cancelled']}")

    await eventually(refunded, until=lambda p: p["refunded_minor"] == 3000, what="refund")
    return orders, [a, b]


async def quiet(platform: Platform, orders: dict[str, str], skus: list[str]) -> dict[str, Any]:
    """The state once it stops changing (every consumer caught up)."""
    last: list[Any] = [None]

    async def stable() -> bool:
        state = await final_state(platform, orders, skus)
        same = state == last[0]
        last[0] = state
        return same

    await eventually(stable, timeout=60, interval=1.5, what="state settles")
    return dict(last[0])


async def duplicates_rejected(platform: Platform, service: str) -> float:
    async with platform[service].client() as client:
        text = (await client.get("/metrics")).text
    return sum(
        float(v) for v in re.findall(r"^fulfil_inbox_duplicates_total\{[^}]*\} (\S+)$", text, re.M)
    )


async def rewind_group(group: str, source_topics: list[str]) -> None:
    """Commit offset 0 on every partition the group consumes: Kafka would redeliver it all."""
    partitions = KafkaSettings().topic_partitions  # every platform topic is created so
    tps = [TopicPartition(topics.physical(t), p) for t in source_topics for p in range(partitions)]
    settings = KafkaSettings()
    consumer = AIOKafkaConsumer(
        **settings.client_options(), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.commit(dict.fromkeys(tps, 0))
    finally:
        await consumer.stop()


async def test_every_record_delivered_twice_gives_the_same_final_state(platform: Platform) -> None:
    async with duplicating_every_record() as copied:
        orders, skus = await run_mixed_traffic(platform)
        expected = await quiet(platform, orders, skus)
    assert copied[0] > 0
    assert expected[orders["delivered"]][0] == "delivered"
    assert expected[orders["cancelled"]][2] == (3000, 3000, 1)
    assert expected[skus[0]][:2] == (10 - 2, 0)
    assert expected[orders["delivered"]][4] == [
        "fulfilment.order.placed.v1",
        "fulfilment.order.stock_locked.v1",
        "fulfilment.order.paid.v1",
        "fulfilment.order.shipped.v1",
        "fulfilment.order.delivered.v1",
        "fulfilment.stock.locked.v1",
        "fulfilment.stock.committed.v1",
        "fulfilment.payment.captured.v1",
        "fulfilment.shipment.shipped.v1",
        "fulfilment.shipment.delivered.v1",
    ]

    # Same offsets again: each consumer restarts trusting Kafka's (rewound) offsets
    # instead of its database, so Kafka redelivers everything it ever consumed.
    for service in CONSUMING:
        platform.stop(service)
        await rewind_group(topics.physical(service), list(topics.CONSUMERS[service]))
        process = platform[service].process
        process.env = {**process.env, "FULFIL_CONSUMER_RESUME_FROM": "kafka"}
        await platform.start(service)
    try:
        for service in CONSUMING:
            rejected = await eventually(
                lambda s=service: duplicates_rejected(platform, s),
                until=lambda n: n > 0,
                what=f"{service} rejects redelivered offsets",
            )
            assert rejected > 0
        assert await quiet(platform, orders, skus) == expected
    finally:
        for service in CONSUMING:
            platform.stop(service)
            process = platform[service].process
            process.env = {
                k: v for k, v in process.env.items() if k != "FULFIL_CONSUMER_RESUME_FROM"
            }
        await platform.start(*CONSUMING)


async def test_payments_down_order_passes_its_deadline_and_is_flagged(platform: Platform) -> None:
    sku = new_sku()
    await platform.receive_stock(sku, 2)
    platform.stop("payments")
    try:
        order = await platform.place_order([(sku, 1, 700)])
        await platform.order_reaches(order["order_id"], "stock_locked")
        flagged = await eventually(
            lambda: platform.get("orders", f"/orders/{order['order_id']}"),
            until=lambda o: "stock_locked" in o["flagged_stages"],
            timeout=60,
            what="order flagged at stock_locked",
        )
        assert flagged["status"] == "stock_locked"
        types = [r.headers["ce_type"] for r in await events_of(topics.ORDERS, order["order_id"])]
        assert "fulfilment.order.flagged.v1" in types
        async with platform["orders"].client() as client:
            text = (await client.get("/metrics")).text
        assert re.search(r'^fulfil_orders_flagged_total\{stage="stock_locked"\} [1-9]', text, re.M)
    finally:
        await platform.start("payments")
    await platform.order_reaches(order["order_id"], "paid")
