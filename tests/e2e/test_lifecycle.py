"""The order lifecycle across all five services on the real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from fulfilment_kit.contracts import topics
from tests.e2e.platform import Platform, events_of, new_sku, types_of
from tests.support.auth import signed
from tests.support.polling import eventually
from tests.support.processes import service_process, wait_ready


async def dispatch(platform: Platform, order_id: str) -> dict[str, Any]:
    await platform.shipment_reaches(order_id, "packing")
    async with platform["shipping"].client() as client:
        reply = await client.post(f"/shipments/{order_id}/dispatch")
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


async def test_happy_path_to_delivered(platform: Platform) -> None:
    mug, tee = new_sku("MUG"), new_sku("TEE")
    await platform.receive_stock(mug, 10)
    await platform.receive_stock(tee, 5)
    order = await platform.place_order([(mug, 3, 1299), (tee, 2, 2499)])
    order_id = order["order_id"]
    await platform.order_reaches(order_id, "paid")

    shipment = await dispatch(platform, order_id)
    await platform.order_reaches(order_id, "shipped")
    async with platform["shipping"].client() as client:
        hook = {"tracking_number": shipment["tracking_number"], "status": "delivered"}
        assert (await client.post("/carrier/webhooks", **signed(hook))).status_code == 200
    await platform.order_reaches(order_id, "delivered")

    stock_mug = await platform.get("inventory", f"/stock/{mug}")
    stock_tee = await platform.get("inventory", f"/stock/{tee}")
    assert (stock_mug["on_hand"], stock_mug["reserved"]) == (10 - 3, 0)
    assert (stock_tee["on_hand"], stock_tee["reserved"]) == (5 - 2, 0)
    payment = await platform.get("payments", f"/payments/{order_id}")
    assert payment["captured_minor"] == order["total_minor"] == 3 * 1299 + 2 * 2499
    assert payment["refunded_minor"] == 0

    assert types_of(await events_of(topics.ORDERS, order_id)) == [
        "fulfilment.order.placed.v1",
        "fulfilment.order.stock_locked.v1",
        "fulfilment.order.paid.v1",
        "fulfilment.order.shipped.v1",
        "fulfilment.order.delivered.v1",
    ]
    inventory_types = types_of(await events_of(topics.INVENTORY, order_id))
    assert inventory_types == ["fulfilment.stock.locked.v1", "fulfilment.stock.committed.v1"]
    assert types_of(await events_of(topics.PAYMENTS, order_id)) == [
        "fulfilment.payment.captured.v1"
    ]
    assert types_of(await events_of(topics.SHIPPING, order_id)) == [
        "fulfilment.shipment.shipped.v1",
        "fulfilment.shipment.delivered.v1",
    ]


async def test_out_of_stock_is_rejected_and_nothing_reserved_or_captured(
    platform: Platform,
) -> None:
    sku = new_sku()
    await platform.receive_stock(sku, 1)
    order = await platform.place_order([(sku, 2, 1000)])
    rejected = await platform.order_reaches(order["order_id"], "rejected")
    assert rejected["shortages"] == [{"sku": sku, "requested": 2, "available": 1}]
    stock = await platform.get("inventory", f"/stock/{sku}")
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (1, 0, 1)
    payment = await platform.get("payments", f"/payments/{order['order_id']}")
    assert payment is None or payment["captured_minor"] == 0
    assert await events_of(topics.PAYMENTS, order["order_id"]) == []


async def test_declined_card_cancels_and_releases_stock(platform: Platform) -> None:
    sku = new_sku()
    await platform.receive_stock(sku, 4)
    order = await platform.place_order([(sku, 3, 1000)], token="tok_decline")
    cancelled = await platform.order_reaches(order["order_id"], "cancelled")
    assert cancelled["cancelled_by"] == "system"

    async def released() -> Any:
        return await platform.get("inventory", f"/stock/{sku}")

    stock = await eventually(released, until=lambda s: s["reserved"] == 0, what="stock released")
    assert stock["available"] == 4
    failed = types_of(await events_of(topics.PAYMENTS, order["order_id"]))
    assert failed == ["fulfilment.payment.failed.v1"]


async def test_cancel_after_payment_refunds_and_releases_and_after_shipment_is_409(
    platform: Platform,
) -> None:
    """A paid order's cancellation is a request (202, issue 7 defect 3; was 200 and at once):
    shipping holds the parcel, then payments refunds and inventory releases."""
    sku = new_sku()
    await platform.receive_stock(sku, 6)
    paid = await platform.place_order([(sku, 2, 1500)])
    to_ship = await platform.place_order([(sku, 1, 1500)])
    await platform.order_reaches(paid["order_id"], "paid")
    await platform.order_reaches(to_ship["order_id"], "paid")

    async with platform["orders"].client() as client:
        reply = await client.post(
            f"/orders/{paid['order_id']}/cancel", json={"reason": "changed mind"}
        )
        assert reply.status_code == 202, reply.text
        assert reply.json()["status"] == "cancellation_requested"
    await platform.order_reaches(paid["order_id"], "cancelled")
    kinds = types_of(await events_of(topics.SHIPPING, paid["order_id"]))
    assert "fulfilment.shipment.cancelled.v1" in kinds

    async def refunded() -> Any:
        return await platform.get("payments", f"/payments/{paid['order_id']}")

    payment = await eventually(refunded, until=lambda p: p["refunded_minor"] == 3000, what="refund")
    assert payment["captured_minor"] == 3000

    async def shipment_cancelled() -> Any:
        return await platform.get("shipping", f"/shipments/{paid['order_id']}")

    await eventually(
        shipment_cancelled, until=lambda s: s["status"] == "cancelled", what="no shipment"
    )

    await dispatch(platform, to_ship["order_id"])
    await platform.order_reaches(to_ship["order_id"], "shipped")
    before = await eventually(  # the store says shipped; wait until the relay published it too
        lambda: events_of(topics.ORDERS, to_ship["order_id"]),
        until=lambda r: types_of(r)[-1:] == ["fulfilment.order.shipped.v1"],
        what="shipped on the orders topic",
    )
    async with platform["orders"].client() as client:
        late = await client.post(f"/orders/{to_ship['order_id']}/cancel")
    assert late.status_code == 409
    assert "can no longer be cancelled" in late.json()["detail"]

    async def stock() -> Any:
        return await platform.get("inventory", f"/stock/{sku}")

    # 6 received, 2 released by the cancel, 1 committed by the shipment.
    final = await eventually(stock, until=lambda s: s["reserved"] == 0, what="stock settled")
    assert (final["on_hand"], final["available"]) == (5, 5)
    assert await events_of(topics.ORDERS, to_ship["order_id"]) == before


async def test_fifty_concurrent_orders_for_ten_units_lock_exactly_ten(platform: Platform) -> None:
    sku = new_sku("HOT")
    await platform.receive_stock(sku, 10)
    orders = await asyncio.gather(*(platform.place_order([(sku, 1, 999)]) for _ in range(50)))

    async def settled() -> list[str]:
        states = await asyncio.gather(
            *(platform.get("orders", f"/orders/{o['order_id']}") for o in orders)
        )
        return [s["status"] for s in states]

    statuses = await eventually(
        settled,
        until=lambda s: "placed" not in s,
        timeout=90,
        what="every order locked or rejected",
    )
    assert statuses.count("rejected") == 40
    assert sum(s != "rejected" for s in statuses) == 10
    stock = await platform.get("inventory", f"/stock/{sku}")
    assert stock["available"] == 0
    assert stock["on_hand"] - stock["reserved"] == stock["available"]
    history = await platform.stock_history(sku)
    assert min(history) >= 0, history
    assert history[-1] == 0


async def test_a_cancellation_arriving_after_dispatch_is_refused_and_the_order_ships(
    platform: Platform,
) -> None:
    """Issue 7, defect 3: shipping is the authority. The parcel left before the request
    reached it: refused, the order stays shipped, nothing refunded or released; stock
    committed equals units shipped."""
    sku = new_sku()
    await platform.receive_stock(sku, 10)
    order = await platform.place_order([(sku, 2, 1500)])
    refused_order = order["order_id"]
    await platform.order_reaches(refused_order, "paid")
    await platform.shipment_reaches(refused_order, "packing")
    # The request is in flight while the parcel leaves: shipping's consumer is paused (the
    # process runs without consumers) while the warehouse dispatches; then it resumes and
    # reads the request, after the parcel left.
    shipping = platform["shipping"]
    platform.stop("shipping")
    async with platform["orders"].client() as client:
        reply = await client.post(f"/orders/{refused_order}/cancel", json={"reason": "too late"})
    assert reply.status_code == 202, reply.text
    paused = service_process(
        "shipping",
        shipping.database,
        shipping.port,
        log_name=f"e2e-shipping-paused-{shipping.database}",
        **platform.settings(),
        FULFIL_CONSUMERS_ENABLED="false",
    ).start()
    try:
        await wait_ready(shipping.url, paused, timeout=90)
        async with shipping.client() as client:
            shipped = await client.post(f"/shipments/{refused_order}/dispatch")
            assert shipped.status_code == 200, shipped.text
        await eventually(  # published before the process stops
            lambda: events_of(topics.SHIPPING, refused_order),
            until=lambda r: "fulfilment.shipment.shipped.v1" in types_of(r),
            what="shipped on the shipping topic",
        )
    finally:
        paused.stop()
        await platform.start("shipping")
    shipped_units = 2

    async def refused() -> Any:
        return types_of(await events_of(topics.SHIPPING, refused_order))

    await eventually(
        refused,
        until=lambda kinds: "fulfilment.shipment.cancellation_refused.v1" in kinds,
        what="shipping refused the cancellation",
    )

    async def order() -> Any:
        return await platform.get("orders", f"/orders/{refused_order}")

    await eventually(  # shipped, then the refusal reaches orders: the request is gone
        order,
        until=lambda o: o["status"] == "shipped" and o["cancelled_by"] is None,
        what="order shipped with the cancellation refused",
    )
    payment = await platform.get("payments", f"/payments/{refused_order}")
    assert (payment["status"], payment["refunded_minor"]) == ("captured", 0)
    order_kinds = types_of(await events_of(topics.ORDERS, refused_order))
    assert "fulfilment.order.cancellation_requested.v1" in order_kinds
    assert "fulfilment.order.cancelled.v1" not in order_kinds

    async def stock() -> Any:
        return await platform.get("inventory", f"/stock/{sku}")

    final = await eventually(stock, until=lambda s: s["reserved"] == 0, what="stock settled")
    assert 10 - final["on_hand"] == shipped_units  # committed = shipped, nothing released

    async def timeline() -> Any:
        found = await platform.get("customer-service", f"/timeline/{refused_order}")
        return [e["ce_type"] for e in found["events"]] if found else []

    await eventually(  # the read model shows the protocol's events like any other
        timeline,
        until=lambda kinds: (
            {
                "fulfilment.order.cancellation_requested.v1",
                "fulfilment.shipment.cancellation_refused.v1",
            }
            <= set(kinds)
        ),
        what="the timeline shows the request and the refusal",
    )
