"""After-sales across all five services: returns (restock, refund, order returned), refusals
that publish nothing, and a delivery exception that opens a case whose SLA breaches."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from fulfilment_kit.contracts import topics
from tests.e2e.platform import Platform, events_of, new_sku, types_of
from tests.e2e.test_lifecycle import dispatch
from tests.support.auth import signed
from tests.support.polling import eventually


@pytest.fixture
async def fresh_clock(platform: Platform) -> AsyncIterator[None]:
    """Customer service's clock back to real time after a test moved it."""
    yield
    async with platform["customer-service"].client() as client:
        assert (await client.post("/_test/clock/reset")).status_code == 200


async def advance_clock(platform: Platform, seconds: float) -> None:
    async with platform["customer-service"].client() as client:
        reply = await client.post("/_test/clock", json={"advance_s": seconds})
        assert reply.status_code == 200, reply.text


async def delivered_order(platform: Platform, lines: list[tuple[str, int, int]]) -> dict[str, Any]:
    order = await platform.place_order(lines)
    order_id = order["order_id"]
    await platform.order_reaches(order_id, "paid")
    shipment = await dispatch(platform, order_id)
    async with platform["shipping"].client() as client:
        hook = {"tracking_number": shipment["tracking_number"], "status": "delivered"}
        assert (await client.post("/carrier/webhooks", **signed(hook))).status_code == 200
    await platform.order_reaches(order_id, "delivered")
    return order


async def post_return(
    platform: Platform,
    order_id: str,
    lines: list[tuple[str, int]],
    reason: str = "damaged",
    key: str | None = None,
) -> httpx.Response:
    body = {
        "order_id": order_id,
        "lines": [{"sku": s, "quantity": q} for s, q in lines],
        "reason_code": reason,
    }
    async with platform["customer-service"].client() as client:
        return await client.post(
            "/returns", json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())}
        )


async def return_accepted(
    platform: Platform, order_id: str, lines: list[tuple[str, int]], reason: str
) -> dict[str, Any]:
    """Request a return, retrying (same key: refusals record nothing) until customer service
    has seen the delivery."""
    key = str(uuid.uuid4())

    async def attempt() -> httpx.Response:
        return await post_return(platform, order_id, lines, reason, key)

    reply = await eventually(attempt, until=lambda r: r.status_code == 201, what="return accepted")
    return dict(reply.json())


async def receive(platform: Platform, return_id: str, lines: list[tuple[str, int, str]]) -> Any:
    body = {"lines": [{"sku": s, "quantity": q, "result": r} for s, q, r in lines]}
    async with platform["customer-service"].client() as client:
        reply = await client.post(f"/returns/{return_id}/receipt", json=body)
        assert reply.status_code == 200, reply.text
        return reply.json()


async def test_returns_restock_refund_and_return_the_order(platform: Platform) -> None:
    mug, tee = new_sku("MUG"), new_sku("TEE")
    await platform.receive_stock(mug, 10)
    await platform.receive_stock(tee, 5)
    order = await delivered_order(platform, [(mug, 3, 1299), (tee, 1, 2499)])
    order_id = order["order_id"]

    # 1. damaged on arrival (our fault): authorised by policy; one line back on the shelf,
    #    the other damaged; both refunded in full.
    first = await return_accepted(platform, order_id, [(mug, 2), (tee, 1)], "damaged")
    assert first["status"] == "authorised"
    assert first["rma_number"].startswith("RMA-")
    received = await receive(
        platform, first["return_id"], [(mug, 2, "restockable"), (tee, 1, "damaged")]
    )
    assert received["refund_minor"] == 2 * 1299 + 2499
    partially = await platform.order_reaches(order_id, "partially_returned")
    assert partially["returned"] == {mug: 2, tee: 1}

    async def stock(sku: str) -> Any:
        return await platform.get("inventory", f"/stock/{sku}")

    restocked = await eventually(
        lambda: stock(mug), until=lambda s: s["on_hand"] == 10 - 3 + 2, what="mugs restocked"
    )
    assert restocked["reserved"] == 0
    assert (await stock(tee))["on_hand"] == 5 - 1  # the damaged unit stays out

    async def payment() -> Any:
        return await platform.get("payments", f"/payments/{order_id}")

    refunded = await eventually(
        payment, until=lambda p: p["refunded_minor"] == 5097, what="first refund"
    )
    assert refunded["captured_minor"] == order["total_minor"] == 3 * 1299 + 2499

    # 2. the last mug, a change of mind on a small order: authorised by policy too.
    second = await return_accepted(platform, order_id, [(mug, 1)], "changed_mind")
    assert second["status"] == "authorised"
    await receive(platform, second["return_id"], [(mug, 1, "restockable")])
    returned = await platform.order_reaches(order_id, "returned")
    assert returned["returned"] == {mug: 3, tee: 1}
    final = await eventually(
        payment, until=lambda p: p["refunded_minor"] == order["total_minor"], what="all refunded"
    )
    assert final["status"] == "refunded"
    await eventually(lambda: stock(mug), until=lambda s: s["on_hand"] == 10, what="all mugs back")

    async def cs_types() -> list[str]:
        return types_of(await events_of(topics.CUSTOMER_SERVICE, order_id))

    return_events = [
        "fulfilment.return.requested.v1",
        "fulfilment.return.authorised.v1",
        "fulfilment.return.received.v1",
    ]
    await eventually(cs_types, until=lambda t: t == return_events * 2, what="return events")
    orders_types = types_of(await events_of(topics.ORDERS, order_id))
    assert orders_types[-3:] == [
        "fulfilment.order.delivered.v1",
        "fulfilment.order.partially_returned.v1",
        "fulfilment.order.returned.v1",
    ]
    assert types_of(await events_of(topics.PAYMENTS, order_id)) == [
        "fulfilment.payment.captured.v1",
        "fulfilment.payment.refunded.v1",
        "fulfilment.payment.refunded.v1",
    ]
    inventory = await events_of(topics.INVENTORY, order_id)
    assert types_of(inventory) == [
        "fulfilment.stock.locked.v1",
        "fulfilment.stock.committed.v1",
        "fulfilment.stock.received.v1",
        "fulfilment.stock.received.v1",
    ]


async def test_refused_returns_publish_nothing(platform: Platform, fresh_clock: None) -> None:
    sku = new_sku("RET")
    await platform.receive_stock(sku, 10)
    undelivered = await platform.place_order([(sku, 1, 1500)])
    await platform.order_reaches(undelivered["order_id"], "paid")
    order = await delivered_order(platform, [(sku, 2, 1500)])
    order_id = order["order_id"]

    async def undelivered_status() -> int:
        return (await post_return(platform, undelivered["order_id"], [(sku, 1)])).status_code

    # 404 until customer service has the order, then 409: not delivered
    await eventually(undelivered_status, until=lambda s: s == 409, what="not delivered")
    refused = await post_return(platform, undelivered["order_id"], [(sku, 1)])
    assert "is not delivered" in refused.json()["detail"]

    async def too_many() -> httpx.Response:
        return await post_return(platform, order_id, [(sku, 3)])

    over = await eventually(too_many, until=lambda r: r.status_code == 422, what="422")
    assert over.json()["errors"][0]["field"] == "lines[0]"
    assert "3 units of" in over.json()["detail"]

    await advance_clock(platform, 31 * 86400)
    late = await post_return(platform, order_id, [(sku, 1)])
    assert late.status_code == 409
    assert "return window" in late.json()["detail"]

    for refused_order in (undelivered["order_id"], order_id):
        assert await events_of(topics.CUSTOMER_SERVICE, refused_order) == []
        assert await platform.get("customer-service", f"/returns?order_id={refused_order}") == []


async def test_delivery_exception_opens_a_case_whose_first_response_sla_breaches(
    platform: Platform, fresh_clock: None
) -> None:
    sku = new_sku("EXC")
    await platform.receive_stock(sku, 3)
    order = await platform.place_order([(sku, 1, 999)])
    order_id = order["order_id"]
    await platform.order_reaches(order_id, "paid")
    shipment = await dispatch(platform, order_id)
    async with platform["shipping"].client() as client:
        hook = {
            "tracking_number": shipment["tracking_number"],
            "status": "exception",
            "reason_code": "recipient_absent",
            "reason": "nobody at home",
        }
        assert (await client.post("/carrier/webhooks", **signed(hook))).status_code == 200

    async def cases() -> Any:
        return await platform.get("customer-service", f"/cases?order_id={order_id}")

    [case] = await eventually(cases, until=lambda c: c is not None and len(c) == 1, what="case")
    assert (case["kind"], case["priority"], case["status"]) == (
        "delivery_exception",
        "high",
        "open",
    )
    assert case["customer_id"] == order["customer_id"]
    opened_at = datetime.fromisoformat(case["opened_at"])
    assert datetime.fromisoformat(case["first_response_due_at"]) - opened_at == timedelta(hours=4)
    assert datetime.fromisoformat(case["resolution_due_at"]) - opened_at == timedelta(hours=24)

    async def cs_types() -> list[str]:
        return types_of(await events_of(topics.CUSTOMER_SERVICE, order_id))

    await eventually(cs_types, until=lambda t: t == ["fulfilment.case.opened.v1"], what="opened")
    await advance_clock(platform, 4 * 3600 + 60)
    await eventually(
        cs_types,
        until=lambda t: t == ["fulfilment.case.opened.v1", "fulfilment.case.sla_breached.v1"],
        what="first-response SLA breached",
    )
    [_, breach] = await events_of(topics.CUSTOMER_SERVICE, order_id)
    assert breach.headers["ce_subject"] == case["case_id"]
    assert b'"sla":"first_response"' in (breach.value or b"")
    fetched = await platform.get("customer-service", f"/cases/{case['case_id']}")
    assert fetched["sla_breached"] == ["first_response"]
