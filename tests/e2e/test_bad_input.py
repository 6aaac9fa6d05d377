"""Bad input to every endpoint gets a clear 422, 404 or 409, and changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.platform import Platform, new_sku
from tests.support.auth import signed

UNKNOWN = str(uuid.uuid4())

# (service, method, path, json body, expected status, text the problem detail must contain)
CASES: list[tuple[str, str, str, Any, int, str]] = [
    ("orders", "GET", f"/orders/{UNKNOWN}", None, 404, "does not exist"),
    ("orders", "GET", "/orders/not-a-uuid", None, 422, "order_id"),
    ("orders", "POST", f"/orders/{UNKNOWN}/cancel", None, 404, "does not exist"),
    ("orders", "POST", "/orders", {"lines": []}, 422, "lines"),
    ("inventory", "GET", "/stock/NO-SUCH-SKU-1", None, 404, "NO-SUCH-SKU-1"),
    ("inventory", "GET", "/stock/bad%20sku", None, 422, "sku"),
    ("inventory", "POST", "/stock/NEW-SKU-1/receipts", {"quantity": 0}, 422, "quantity"),
    ("inventory", "POST", "/stock/NEW-SKU-1/receipts", {"quantity": "ten"}, 422, "quantity"),
    (
        "inventory",
        "POST",
        "/stock/NO-SUCH-SKU-1/adjustments",
        {"counted_on_hand": 3, "reason": "cycle count"},
        404,
        "NO-SUCH-SKU-1",
    ),
    (
        "inventory",
        "POST",
        "/stock/NO-SUCH-SKU-1/adjustments",
        {"counted_on_hand": -1},
        422,
        "counted_on_hand",
    ),
    ("inventory", "PUT", "/stock/NO-SUCH-SKU-1/threshold", {"threshold": -2}, 422, "threshold"),
    ("inventory", "GET", f"/reservations/{UNKNOWN}", None, 404, UNKNOWN),
    ("payments", "GET", f"/payments/{UNKNOWN}", None, 404, UNKNOWN),
    (
        "payments",
        "POST",
        f"/payments/{UNKNOWN}/refunds",
        {"amount_minor": 100, "reason": "goodwill"},
        404,
        UNKNOWN,
    ),
    (
        "payments",
        "POST",
        f"/payments/{UNKNOWN}/refunds",
        {"amount_minor": 0, "reason": "goodwill"},
        422,
        "amount_minor",
    ),
    ("shipping", "GET", f"/shipments/{UNKNOWN}", None, 404, UNKNOWN),
    ("shipping", "POST", f"/shipments/{UNKNOWN}/dispatch", None, 404, UNKNOWN),
    (
        "shipping",
        "POST",
        "/carrier/webhooks",
        {"tracking_number": "SBXNOPE", "status": "delivered"},
        404,
        "SBXNOPE",
    ),
    (
        "shipping",
        "POST",
        "/carrier/webhooks",
        {"tracking_number": "SBX1", "status": "teleported"},
        422,
        "status",
    ),
]


@pytest.mark.parametrize(("service", "method", "path", "body", "status", "text"), CASES)
async def test_bad_input_gets_a_clear_error(
    platform: Platform, service: str, method: str, path: str, body: Any, status: int, text: str
) -> None:
    async with platform[service].client() as client:
        if path == "/carrier/webhooks":  # a carrier's signed delivery
            reply = await client.request(method, path, **signed(body))
        else:
            reply = await client.request(method, path, json=body)
    assert reply.status_code == status, reply.text
    problem = reply.json()
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert text in str(problem), problem


async def test_state_conflicts_are_409_and_change_nothing(platform: Platform) -> None:
    sku = new_sku()
    await platform.receive_stock(sku, 5)
    order = await platform.place_order([(sku, 2, 1000)])
    order_id = order["order_id"]
    await platform.order_reaches(order_id, "paid")
    async with platform["payments"].client() as client:
        too_much = await client.post(
            f"/payments/{order_id}/refunds", json={"amount_minor": 2001, "reason": "goodwill"}
        )
    assert too_much.status_code == 409, too_much.text
    async with platform["inventory"].client() as client:
        below_reserved = await client.post(
            f"/stock/{sku}/adjustments", json={"counted_on_hand": 1, "reason": "cycle count"}
        )
    assert below_reserved.status_code == 409, below_reserved.text
    await platform.shipment_reaches(order_id, "packing")
    async with platform["orders"].client() as client:
        # paid: a cancellation request shipping answers (202; issue 7 defect 3, was 200)
        assert (await client.post(f"/orders/{order_id}/cancel")).status_code == 202
    await platform.shipment_reaches(order_id, "cancelled")
    async with platform["shipping"].client() as client:
        refused = await client.post(f"/shipments/{order_id}/dispatch")
    assert refused.status_code == 409, refused.text
    payment = await platform.get("payments", f"/payments/{order_id}")
    assert payment["refunds"] == [] or payment["refunds"][0]["reason"] == "order_cancelled"
    stock = await platform.get("inventory", f"/stock/{sku}")
    assert stock["on_hand"] == 5
