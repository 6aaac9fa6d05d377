"""Read models end to end: the five services, mixed traffic, then rebuilds from the topics
and from the services' logs equal the live tables row for row, and the KPIs equal an
independent computation from the raw events on the topics."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from customer_service.projections.rebuild import Rebuild, RebuildReport
from customer_service.projections.sources import LogSource, Source, TopicSource
from customer_service.projections.store import datastore
from customer_service.projections.tables import PROJECTIONS
from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import cloudevents
from fulfilment_kit.settings import PostgresSettings
from tests.e2e.platform import Platform, new_sku
from tests.e2e.test_resilience import quiet, run_mixed_traffic
from tests.support.polling import eventually
from tests.support.stack import read_topic


@dataclass
class ReadModelsUnderTest:
    client: httpx.AsyncClient
    database: str


@pytest.fixture
async def read_models(platform: Platform) -> AsyncIterator[ReadModelsUnderTest]:
    """customer-service's read models, as its process serves them."""
    service = platform["customer-service"]
    async with service.client() as client:
        yield ReadModelsUnderTest(client, service.database)


async def raw_events() -> list[cloudevents.Envelope]:
    """Every valid public event on the five topics, once per ce_id."""
    found: dict[str, cloudevents.Envelope] = {}
    for topic in topics.ALL:
        for record in await read_topic(topics.physical(topic)):
            with contextlib.suppress(cloudevents.DecodeError):
                envelope = cloudevents.decode(record.value, list(_headers(record.headers)))
                found.setdefault(envelope.id, envelope)
    return list(found.values())


def _headers(headers: dict[str, str]) -> Any:
    return ((k, v.encode()) for k, v in headers.items())


async def all_applied(read_models: ReadModelsUnderTest, events: list[cloudevents.Envelope]) -> None:
    async def applied(ce_id: str) -> None:
        reply = await read_models.client.get("/kpis", params={"wait_for": ce_id, "timeout_s": 10})
        assert reply.status_code == 200, reply.text

    for start in range(0, len(events), 50):
        await asyncio.gather(*(applied(e.id) for e in events[start : start + 50]))


STATUS_ORDER = [
    ("returned", "fulfilment.order.returned.v1"),
    ("rejected", "fulfilment.order.rejected.v1"),
    ("cancelled", "fulfilment.order.cancelled.v1"),
    ("partially_returned", "fulfilment.order.partially_returned.v1"),
    ("delivered", "fulfilment.order.delivered.v1"),
    ("shipped", "fulfilment.order.shipped.v1"),
    ("paid", "fulfilment.order.paid.v1"),
    ("stock_locked", "fulfilment.order.stock_locked.v1"),
    ("placed", "fulfilment.order.placed.v1"),
]


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    low, high = math.floor(k), math.ceil(k)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (k - low), 3)


def keep_latest(latest: dict[str, tuple[Any, Any]], sku: str, key: Any, event: Any) -> None:
    if sku not in latest or key > latest[sku][0]:
        latest[sku] = (key, event)


def expected_kpis(events: list[cloudevents.Envelope]) -> dict[str, Any]:
    """The KPIs by their definitions, straight from the raw events."""
    types: dict[Any, set[str]] = defaultdict(set)
    placed: dict[Any, Any] = {}
    delivered: dict[Any, Any] = {}
    paid: dict[Any, Any] = {}
    refunded: dict[Any, tuple[str, int]] = {}
    returned: set[Any] = set()
    breaches: set[tuple[Any, str]] = set()
    low: dict[str, tuple[Any, Any]] = {}
    level: dict[str, tuple[Any, Any]] = {}
    for envelope in events:
        e: Any = envelope.event
        key = (envelope.sequence or 0, envelope.time, envelope.id)
        if envelope.type.startswith("fulfilment.order."):
            types[e.order_id].add(envelope.type)
        if envelope.type == "fulfilment.order.placed.v1":
            placed[e.order_id] = e
        elif envelope.type == "fulfilment.order.delivered.v1":
            delivered[e.order_id] = e.delivered_at
        elif envelope.type == "fulfilment.order.paid.v1":
            paid[e.order_id] = (e.currency, e.amount_minor)
        elif envelope.type == "fulfilment.payment.refunded.v1":
            previous = refunded.get(e.order_id, (e.currency, 0))[1]
            refunded[e.order_id] = (e.currency, max(previous, e.total_refunded_minor))
        elif envelope.type == "fulfilment.return.received.v1":
            returned.add(e.order_id)
        elif envelope.type == "fulfilment.case.sla_breached.v1":
            breaches.add((e.case_id, e.sla))
        elif envelope.type == "fulfilment.stock.low.v1":
            keep_latest(low, e.sku, key, e)
        elif envelope.type in ("fulfilment.stock.received.v1", "fulfilment.stock.adjusted.v1"):
            keep_latest(level, e.sku, key, e)
    statuses: dict[str, int] = defaultdict(int)
    for seen in types.values():
        statuses[next(status for status, t in STATUS_ORDER if t in seen)] += 1
    gmv: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for currency, amount in paid.values():
        gmv[currency] += amount
        count[currency] += 1
    refunds: dict[str, int] = defaultdict(int)
    for currency, amount in refunded.values():
        refunds[currency] += amount
    per_customer: dict[Any, int] = defaultdict(int)
    for order in placed.values():
        per_customer[order.customer_id] += 1
    leads = [(delivered[o] - placed[o].placed_at).total_seconds() for o in delivered if o in placed]
    by_sla: dict[str, int] = defaultdict(int)
    for _, sla in breaches:
        by_sla[sla] += 1
    still_low = sorted(
        sku
        for sku, (key, event) in low.items()
        if not (sku in level and level[sku][0] > key and level[sku][1].on_hand > event.threshold)
    )
    return {
        "orders": len(placed),
        "orders_by_status": dict(sorted(statuses.items())),
        "gmv_minor": dict(sorted(gmv.items())),
        "paid_orders": dict(sorted(count.items())),
        "average_order_value_minor": {c: round(gmv[c] / count[c], 2) for c in sorted(gmv)},
        "return_rate": (
            round(len(returned & set(delivered)) / len(delivered), 6) if delivered else None
        ),
        "repurchase_rate": (
            round(sum(1 for n in per_customer.values() if n >= 2) / len(per_customer), 6)
            if per_customer
            else None
        ),
        "fulfilment_lead_time_s": {
            "orders": len(leads),
            "p50": percentile(leads, 0.5),
            "p95": percentile(leads, 0.95),
        },
        "refunds_total_minor": dict(sorted(refunds.items())),
        "sla_breaches": {"total": len(breaches), **dict(sorted(by_sla.items()))},
        "low_stock_skus": still_low,
    }


async def rebuild(
    platform: Platform, database: str, source: Source, mode: Any = "compare"
) -> RebuildReport:
    store = datastore(PostgresSettings(dbname=database))
    try:
        return await Rebuild(store, tuple(PROJECTIONS), source, mode=mode).run()
    finally:
        store.close()


def log_source(platform: Platform) -> LogSource:
    return LogSource({name: service.url for name, service in platform.services.items()})


async def test_rebuilds_equal_live_and_kpis_equal_the_raw_events(
    platform: Platform, read_models: ReadModelsUnderTest
) -> None:
    orders, skus = await run_mixed_traffic(platform)
    # a SKU that runs low (threshold 5) and one that is restocked above it afterwards
    low, restocked = new_sku("LOW"), new_sku("LOW")
    for sku in (low, restocked):
        await platform.receive_stock(sku, 6)
        order = await platform.place_order([(sku, 3, 700)])
        await platform.order_reaches(order["order_id"], "paid")
        orders[sku] = order["order_id"]
    await platform.receive_stock(restocked, 20)
    await quiet(platform, orders, [*skus, low, restocked])

    async def kpis_match() -> tuple[dict[str, Any], dict[str, Any]]:
        events = await raw_events()
        await all_applied(read_models, events)
        kpis = (await read_models.client.get("/kpis")).json()
        kpis["low_stock_skus"] = sorted(s["sku"] for s in kpis["low_stock_skus"])
        return kpis, expected_kpis(await raw_events())

    kpis, expected = await eventually(
        kpis_match, until=lambda pair: pair[0] == pair[1], timeout=60, what="KPIs = raw events"
    )
    assert low in kpis["low_stock_skus"]
    assert restocked not in kpis["low_stock_skus"]
    assert kpis["orders_by_status"]["delivered"] >= 1

    for source in (TopicSource(), log_source(platform)):
        report = await rebuild(platform, read_models.database, source)
        assert report.events > 0
        assert report.equal, (source.name, report.differences)

    swapped = await rebuild(platform, read_models.database, log_source(platform), "swap")
    assert swapped.swapped
    assert (await rebuild(platform, read_models.database, TopicSource())).equal
    assert (await read_models.client.get("/kpis")).json()["orders"] == expected["orders"]
