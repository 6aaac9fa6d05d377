"""The invariants, checked at the end from the outside: a plain read_committed consumer over
the topics (and the DLQs), the HTTP APIs, the card provider's ledger, the inventory's event
history and a rebuild of the read models from scratch."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from customer_service.projections.rebuild import Rebuild
from customer_service.projections.sources import TopicSource
from customer_service.projections.store import datastore
from customer_service.projections.tables import PROJECTIONS
from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import cloudevents
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.settings import PostgresSettings, ServiceSettings
from inventory.application import InventoryApplication
from inventory.domain import stock_item_id
from tests.chaos.faults import POISON_PREFIX, Poison
from tests.chaos.harness import Api, ChaosPlatform
from tests.chaos.traffic import Order, Stock
from tests.support.stack import Record, read_topic

TERMINAL = {"delivered", "cancelled", "rejected", "returned"}
RESTING = {"partially_returned", "shipped"}
"""Waiting for the customer or the carrier (shipped: a delivery exception reported)."""


@dataclass
class Check:
    name: str
    checked: int = 0
    violations: int = 0
    examples: list[str] = field(default_factory=list)

    def count(self, ok: bool, example: str = "") -> None:
        self.checked += 1
        if not ok:
            self.violations += 1
            if len(self.examples) < 3:
                self.examples.append(example)


@dataclass
class Snapshot:
    records: dict[str, list[Record]]
    events: dict[str, list[cloudevents.Envelope]]
    orders: dict[str, dict[str, Any]]
    payments: dict[str, dict[str, Any] | None]
    shipments: dict[str, dict[str, Any] | None]
    stock: dict[str, dict[str, Any]]


async def _gather_limited(calls: list[Any], limit: int = 12) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Any) -> Any:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def _json(api: Api, service: str, path: str) -> dict[str, Any] | None:
    reply = await api.call(service, "GET", path, deadline_s=300)  # a loaded machine is slow
    return dict(reply.json()) if reply.status_code == 200 else None


async def snapshot(api: Api, accepted: list[Order], stock: Stock) -> Snapshot:
    records: dict[str, list[Record]] = {}
    for physical in topics.all_physical_topics():
        records[physical] = await read_topic(physical)
    events: dict[str, list[cloudevents.Envelope]] = defaultdict(list)
    for topic in topics.ALL:
        for r in records.get(topics.physical(topic), []):
            with contextlib.suppress(cloudevents.DecodeError):
                headers = [(k, v.encode()) for k, v in r.headers.items()]
                envelope = cloudevents.decode(r.value, headers)
                key = str(getattr(envelope.event, "order_id", None) or "")
                events[key].append(envelope)
    ids = [o.order_id for o in accepted if o.order_id]
    orders = await _gather_limited([_json(api, "orders", f"/orders/{i}") for i in ids])
    payments = await _gather_limited([_json(api, "payments", f"/payments/{i}") for i in ids])
    shipments = await _gather_limited([_json(api, "shipping", f"/shipments/{i}") for i in ids])
    skus = [*stock.plentiful, *stock.scarce]
    levels = await _gather_limited([_json(api, "inventory", f"/stock/{s}") for s in skus])
    return Snapshot(
        records,
        events,
        {i: o for i, o in zip(ids, orders, strict=True) if o is not None},
        dict(zip(ids, payments, strict=True)),
        dict(zip(ids, shipments, strict=True)),
        {s: v for s, v in zip(skus, levels, strict=True) if v is not None},
    )


def _types(envelopes: list[cloudevents.Envelope], ce_type: str) -> list[Any]:
    """The events of `ce_type`, once per ce_id."""
    seen: dict[str, Any] = {}
    for e in envelopes:
        if e.type == ce_type:
            seen.setdefault(e.id, e.event)
    return list(seen.values())


def stock_histories(platform: ChaosPlatform, skus: list[str]) -> dict[str, list[int]]:
    """Available units after each stored event of each SKU's stock item."""
    env = eventsourcing_env(
        "inventory",
        ServiceSettings(),
        PostgresSettings(dbname=platform.databases["inventory"]),
    )
    app = InventoryApplication(env=env)
    try:
        histories = {}
        for sku in skus:
            item: Any = None
            history = []
            domain_event: Any
            for domain_event in app.events.get(stock_item_id(sku)):
                item = domain_event.mutate(item)
                history.append(item.available)
            histories[sku] = history
        return histories
    finally:
        app.close()


async def rebuilt_equals_live(platform: ChaosPlatform) -> tuple[int, int, list[str]]:
    """Rebuild the read models from the topics into shadow tables and compare with the live
    ones: (rows compared, rows differing, examples)."""
    store = datastore(PostgresSettings(dbname=platform.databases["read-models"]))
    try:
        report = await Rebuild(store, tuple(PROJECTIONS), TopicSource(), mode="compare").run()
    finally:
        store.close()
    differing = sum(d.only_live + d.only_rebuilt for d in report.differences.values())
    examples = [f"{t}: {d}" for t, d in report.differences.items() if not d.equal][:3]
    return sum(report.rows.values()), differing, examples


def check(
    snap: Snapshot,
    traffic_orders: list[Order],
    stock: Stock,
    poison: Poison,
    histories: dict[str, list[int]],
    provider_captures: int,
) -> list[Check]:
    accepted = [o for o in traffic_orders if o.order_id]
    lost = Check("accepted orders lost (no order, or no order.placed on the topic)")
    resting = Check("orders not terminal/resting/flagged")
    expected = Check("orders in a final state their scenario does not allow")
    keys = Check("repeated Idempotency-Key answered with another order")
    for o in accepted:
        assert o.order_id is not None
        view = snap.orders.get(o.order_id)
        placed = _types(snap.events.get(o.order_id, []), "fulfilment.order.placed.v1")
        lost.count(view is not None and len(placed) == 1, o.order_id)
        status = view["status"] if view else "missing"
        flagged = bool(view and view["flagged_stages"])
        resting.count(status in TERMINAL | RESTING or flagged, f"{o.order_id} {status}")
        expected.count(
            status in o.expected or flagged,
            f"{o.scenario} {o.order_id} {status} (expected {sorted(o.expected)}; {o.stalled})",
        )
        for replay in o.replays:
            keys.count(replay == o.order_id, f"{o.order_id} / {replay}")

    duplicates = Check("ce_id twice on a topic (records checked)")
    for topic in topics.ALL:
        seen: Counter[str] = Counter(
            r.headers.get("ce_id", "") for r in snap.records.get(topics.physical(topic), [])
        )
        for ce_id, n in seen.items():
            duplicates.checked += n - 1
            duplicates.count(n == 1, f"{topic} {ce_id} x{n}")

    captures = Check("orders with more than one capture")
    refunds = Check("refunds above the capture")
    shipments = Check("orders with more than one shipment")
    money = Check("money not conserved per order (captured - refunded vs final state)")
    for o in accepted:
        assert o.order_id is not None
        envelopes = snap.events.get(o.order_id, [])
        captured = _types(envelopes, "fulfilment.payment.captured.v1")
        captures.count(len(captured) <= 1, o.order_id)
        shipments.count(len(_types(envelopes, "fulfilment.shipment.shipped.v1")) <= 1, o.order_id)
        payment = snap.payments.get(o.order_id) or {"captured_minor": 0, "refunded_minor": 0}
        topic_refunded = max(
            (e.total_refunded_minor for e in _types(envelopes, "fulfilment.payment.refunded.v1")),
            default=0,
        )
        refunds.count(
            payment["refunded_minor"] <= payment["captured_minor"]
            and topic_refunded <= sum(e.amount_minor for e in captured),
            o.order_id,
        )
        view = snap.orders.get(o.order_id)
        if view is None:
            continue
        net = payment["captured_minor"] - payment["refunded_minor"]
        returns = sum(e.refund_minor for e in _types(envelopes, "fulfilment.return.received.v1"))
        status = view["status"]
        want: int | None = {
            "cancelled": 0,
            "rejected": 0,
            "delivered": view["total_minor"],
            "shipped": view["total_minor"],
            "returned": view["total_minor"] - returns,
            "partially_returned": view["total_minor"] - returns,
        }.get(status)
        if o.returned_refund_expected is not None and status in ("returned", "partially_returned"):
            money.count(returns == o.returned_refund_expected, f"{o.order_id} return refund")
        money.count(want is None or net == want, f"{o.order_id} {status}: {net} != {want}")

    provider = Check("card provider charges without exactly one capture event")
    captured_orders = sum(
        1
        for o in accepted
        if o.order_id and _types(snap.events.get(o.order_id, []), "fulfilment.payment.captured.v1")
    )
    provider.count(
        provider_captures == captured_orders, f"{provider_captures} vs {captured_orders}"
    )

    conserved = Check(
        "SKUs whose stock is not conserved (on hand = received + restocked - shipped)"
    )
    reserved_ok = Check("SKUs with reserved > on hand, or reserved != locked - released - shipped")
    never_negative = Check("stock events after which available < 0 (events checked)")
    oversold = Check("scarce SKUs oversold (shipped + reserved > received)")
    all_events = [e for es in snap.events.values() for e in es]
    by_sku: dict[str, Counter[str]] = defaultdict(Counter)
    once: set[str] = set()
    for e in all_events:
        if e.id in once:
            continue
        once.add(e.id)
        ev: Any = e.event
        if e.type == "fulfilment.stock.received.v1":
            by_sku[ev.sku][ev.source] += ev.quantity
        for kind in ("locked", "released", "committed"):
            if e.type == f"fulfilment.stock.{kind}.v1":
                for line in ev.lines:
                    by_sku[line.sku][kind] += line.quantity
    for sku, level in snap.stock.items():
        c = by_sku[sku]
        purchase = stock.received[sku]
        conserved.count(
            level["on_hand"] == purchase + c["return"] - c["committed"]
            and c["purchase"] == purchase,
            f"{sku}: {level} vs {dict(c)}",
        )
        reserved_ok.count(
            level["reserved"] <= level["on_hand"]
            and level["reserved"] == c["locked"] - c["released"] - c["committed"],
            f"{sku}: {level} vs {dict(c)}",
        )
        if sku in stock.scarce:
            oversold.count(c["committed"] + level["reserved"] <= purchase, f"{sku}: {dict(c)}")
        for available in histories.get(sku, []):
            never_negative.count(available >= 0, f"{sku}: {available}")

    dlq = Check("DLQ records not explained by a poison injected on purpose")
    missing = Check("poison records not dead-lettered by a consumer of their topic")
    dead: set[tuple[str, str]] = set()
    for name, records in snap.records.items():
        if ".dlq." not in name:
            continue
        consumer = name.rsplit(".dlq.", 1)[1]
        for r in records:
            ce_id = r.headers.get("ce_id", "")
            dlq.count(ce_id.startswith(POISON_PREFIX) and ce_id in poison.ce_ids, f"{name} {ce_id}")
            dead.add((ce_id, consumer))
    for ce_id, topic in poison.ce_ids.items():
        for consumer, sources in topics.CONSUMERS.items():
            if topic in sources:
                missing.count((ce_id, consumer) in dead, f"{ce_id} in {consumer}")
    return [
        lost,
        resting,
        expected,
        keys,
        duplicates,
        captures,
        refunds,
        shipments,
        money,
        provider,
        conserved,
        reserved_ok,
        never_negative,
        oversold,
        dlq,
        missing,
    ]
