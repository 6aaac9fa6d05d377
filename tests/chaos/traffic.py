"""Mixed traffic through the public HTTP APIs: each order follows a scenario (happy path,
declined and flaky cards, scarce SKUs, cancellations at each stage, carrier exceptions,
returns with inspection, repeated Idempotency-Keys, duplicate webhooks) and remembers what
its final state must be."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.harness import Api
from tests.chaos.watch import EventWatch
from tests.support.auth import customer_headers, signed

PAID = "fulfilment.order.paid.v1"
CANCELLED = "fulfilment.order.cancelled.v1"
REJECTED = "fulfilment.order.rejected.v1"
SHIPPED = "fulfilment.order.shipped.v1"
DELIVERED = "fulfilment.order.delivered.v1"
RETURNED = "fulfilment.order.returned.v1"
PARTIALLY_RETURNED = "fulfilment.order.partially_returned.v1"
SHIPMENT_EXCEPTION = "fulfilment.shipment.exception.v1"

STEP_TIMEOUT_S = 240.0
NOT_YET = frozenset({404})
"""Longest wait for one stage: longer than any fault lasts."""

SCENARIOS: dict[str, int] = {  # name: weight
    "delivered": 30,
    "declined": 7,
    "flaky_card": 5,
    "scarce": 12,
    "repeat_key": 6,
    "cancel_at_once": 6,
    "cancel_paid": 6,
    "cancel_shipped": 5,
    "exception": 4,
    "exception_then_delivered": 4,
    "return_full": 8,
    "return_partial": 7,
}

ADDRESS = {
    "recipient_name": "Chaos Example",
    "line1": "1 Sample Street",
    "city": "Berlin",
    "postal_code": "10115",
    "country_code": "DE",
}


@dataclass
class Stock:
    plentiful: list[str]
    scarce: dict[str, int]
    """Scarce SKU: units received (far fewer than the orders racing for them)."""
    received: Counter[str] = field(default_factory=Counter)


@dataclass
class Order:
    scenario: str
    customer_id: str
    lines: list[tuple[str, int, int]]
    key: str
    order_id: str | None = None
    expected: set[str] = field(default_factory=set)
    """Final order statuses that are right for this scenario."""
    stalled: str | None = None
    """The stage whose event did not come within STEP_TIMEOUT_S (the driver gave up)."""
    cancel_status: int | None = None
    replays: list[str] = field(default_factory=list)
    """Order ids answered to repeats of the same Idempotency-Key."""
    returned_refund_expected: int | None = None

    @property
    def total(self) -> int:
        return sum(q * p for _, q, p in self.lines)


class Traffic:
    def __init__(self, api: Api, watch: EventWatch, stock: Stock, seed: int) -> None:
        self.api = api
        self.watch = watch
        self.stock = stock
        self.rng = random.Random(seed)
        self.orders: list[Order] = []
        self.refused: Counter[str] = Counter()
        """POST /orders answers other than 201 (after the client's retries)."""
        self.webhook_answers: Counter[int] = Counter()
        self.duplicate_webhooks = 0

    # --- setup ---

    async def receive_stock(self) -> None:
        for sku in self.stock.plentiful:
            await self._receive(sku, 10_000)
        for sku, units in self.stock.scarce.items():
            await self._receive(sku, units)

    async def _receive(self, sku: str, quantity: int) -> None:
        reply = await self.api.call(
            "inventory",
            "POST",
            f"/stock/{sku}/receipts",
            json={"quantity": quantity},
            headers={"Idempotency-Key": f"receipt-{sku}"},
        )
        assert reply.status_code in (200, 201), reply.text
        self.stock.received[sku] += quantity

    # --- orders ---

    def new_order(self) -> Order:
        scenario = self.rng.choices(list(SCENARIOS), weights=list(SCENARIOS.values()))[0]
        picks = self.rng.sample(self.stock.plentiful, self.rng.randint(1, 3))
        lines = [(sku, self.rng.randint(1, 3), self.rng.randint(5, 40) * 100) for sku in picks]
        if scenario == "scarce":
            lines.insert(0, (self.rng.choice(list(self.stock.scarce)), 1, 2500))
        order = Order(scenario, str(uuid.uuid4()), lines, str(uuid.uuid4()))
        self.orders.append(order)
        return order

    def _body(self, order: Order, token: str) -> dict[str, Any]:
        return {
            "customer_id": order.customer_id,
            "lines": [{"sku": s, "quantity": q, "unit_price_minor": p} for s, q, p in order.lines],
            "currency": "EUR",
            "payment_token": token,
            "shipping_address": ADDRESS,
        }

    async def run(self, order: Order) -> None:
        try:
            await self._run(order)
        except AssertionError as exc:  # an API gave up: the end checks say what it left
            order.stalled = order.stalled or f"driver: {str(exc)[:120]}"

    async def _place(self, order: Order, token: str) -> bool:
        headers = {**customer_headers(order.customer_id), "Idempotency-Key": order.key}
        body = self._body(order, token)
        if order.scenario == "repeat_key":
            first, second = await asyncio.gather(
                self.api.call("orders", "POST", "/orders", json=body, headers=headers),
                self.api.call("orders", "POST", "/orders", json=body, headers=headers),
            )
            replies = [first, second]
        else:
            replies = [await self.api.call("orders", "POST", "/orders", json=body, headers=headers)]
        accepted = [r for r in replies if r.status_code in (200, 201)]
        if not accepted:
            self.refused[str(replies[0].status_code)] += 1
            return False
        order.order_id = accepted[0].json()["order_id"]
        order.replays = [r.json()["order_id"] for r in accepted[1:]]
        return True

    async def _until(self, order: Order, *types: str) -> str | None:
        assert order.order_id is not None
        seen = await self.watch.reached(order.order_id, types, STEP_TIMEOUT_S)
        if seen is None:
            order.stalled = f"waiting for {'/'.join(t.split('.')[2] for t in types)}"
        return seen

    async def _run(self, order: Order) -> None:
        s = order.scenario
        token = "tok_visa"
        if s == "declined":
            token = self.rng.choice(["tok_decline", "tok_insufficient_funds", "tok_expired"])
        elif s == "flaky_card":
            token = "tok_lost_response"  # charged, the answer lost: only a lookup tells
        if not await self._place(order, token):
            return
        assert order.order_id is not None
        if s == "declined":
            order.expected = {"cancelled"}
            await self._until(order, CANCELLED)
            return
        if s == "cancel_at_once":
            order.expected = {"cancelled"}
            await self._cancel(order)
            await self._until(order, CANCELLED)
            return
        if s == "scarce":
            order.expected = {"rejected", "delivered"}
            if await self._until(order, PAID, REJECTED) != PAID:
                return
        elif await self._until(order, PAID) is None:
            return
        if s == "cancel_paid":
            order.expected = {"cancelled"}
            await self._cancel(order)
            await self._until(order, CANCELLED)
            return
        tracking = await self._dispatch(order)
        if tracking is None:
            return
        if s == "cancel_shipped":
            if await self._until(order, SHIPPED) is None:
                return
            await self._cancel(order)  # refused (409), or requested and refused by shipping
        if s in ("exception", "exception_then_delivered"):
            await self._webhook(order, tracking, "exception")
            if s == "exception":
                order.expected = {"shipped"}
                await self._until(order, SHIPMENT_EXCEPTION)
                return
        order.expected = order.expected or {"delivered"}
        await self._webhook(order, tracking, "delivered", duplicate=self.rng.random() < 0.5)
        if await self._until(order, DELIVERED) is None:
            return
        if s in ("return_full", "return_partial"):
            await self._return(order, full=s == "return_full")

    async def _cancel(self, order: Order) -> None:
        reply = await self.api.call(
            "orders",
            "POST",
            f"/orders/{order.order_id}/cancel",
            headers=customer_headers(order.customer_id),
        )
        order.cancel_status = reply.status_code

    async def _dispatch(self, order: Order) -> str | None:
        """Dispatch once shipping has seen the payment (404/409 until then)."""
        deadline = asyncio.get_running_loop().time() + STEP_TIMEOUT_S
        while True:
            reply = await self.api.call(
                "shipping", "POST", f"/shipments/{order.order_id}/dispatch", retry_on=NOT_YET
            )
            if reply.status_code == 409:  # awaiting payment, or shipped by an earlier try
                reply = await self.api.call("shipping", "GET", f"/shipments/{order.order_id}")
            if reply.status_code == 200 and reply.json().get("tracking_number"):
                return str(reply.json()["tracking_number"])
            if asyncio.get_running_loop().time() > deadline:
                order.stalled = f"dispatch answered {reply.status_code}"
                return None
            await asyncio.sleep(0.5)  # poll interval inside a deadline loop

    async def _webhook(
        self, order: Order, tracking: str, status: str, *, duplicate: bool = False
    ) -> None:
        hook: dict[str, Any] = {"tracking_number": tracking, "status": status}
        if status == "exception":
            hook |= {"reason_code": "recipient_absent", "reason": "nobody at home"}
        delivery_id = f"dlv-{uuid.uuid4()}"
        for _ in range(2 if duplicate else 1):
            reply = await self.api.call(
                "shipping",
                "POST",
                "/carrier/webhooks",
                retry_on=frozenset({404}),
                **signed(hook, delivery_id=delivery_id),
            )
            self.webhook_answers[reply.status_code] += 1
        if duplicate:
            self.duplicate_webhooks += 1

    async def _return(self, order: Order, *, full: bool) -> None:
        assert order.order_id is not None
        lines = order.lines if full else order.lines[:1]
        returned = [(sku, q if full else max(1, q - 1)) for sku, q, _ in lines]
        partial = not full and (len(order.lines) > 1 or returned[0][1] < order.lines[0][1])
        reason = "damaged" if full else "changed_mind"
        body = {
            "order_id": order.order_id,
            "lines": [{"sku": s, "quantity": q} for s, q in returned],
            "reason_code": reason,
        }
        headers = {**customer_headers(order.customer_id), "Idempotency-Key": f"ret-{order.key}"}
        reply = await self.api.call(
            "customer-service",
            "POST",
            "/returns",
            json=body,
            headers=headers,
            retry_on=frozenset({404, 409}),  # until customer service has seen the delivery
        )
        if reply.status_code != 201 and reply.status_code != 200:
            order.stalled = f"return answered {reply.status_code}"
            return
        ret = reply.json()
        if ret["status"] == "requested":
            await self.api.call(
                "customer-service", "POST", f"/returns/{ret['return_id']}/authorise"
            )
        # inspection: the first returned line damaged on a change of mind (refund per policy)
        prices = {sku: p for sku, _, p in order.lines}
        inspected = [
            {
                "sku": s,
                "quantity": q,
                "result": "damaged" if (i == 0 and not full) else "restockable",
            }
            for i, (s, q) in enumerate(returned)
        ]
        refund = sum(
            0 if line["result"] == "damaged" and reason == "changed_mind" else prices[s] * q
            for line, (s, q) in zip(inspected, returned, strict=True)
        )
        order.returned_refund_expected = refund
        order.expected = {"partially_returned"} if partial else {"returned"}
        receipt = await self.api.call(
            "customer-service",
            "POST",
            f"/returns/{ret['return_id']}/receipt",
            json={"lines": inspected},
        )
        if receipt.status_code not in (200, 409):
            order.stalled = f"receipt answered {receipt.status_code}"
            return
        await self._until(order, RETURNED, PARTIALLY_RETURNED)
