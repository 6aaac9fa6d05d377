"""The live read models on the real Kafka and PostgreSQL: timeline, customer 360, KPIs,
read-your-own-write, and redelivered records without a second effect."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from eventsourcing.persistence import IntegrityError, Tracking

from customer_service.projections import GROUP
from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.messaging.inbox import InboundMessage
from fulfilment_kit.observability import metrics
from fulfilment_kit.settings import KafkaSettings
from tests.support.polling import eventually
from tests.support.projections import ProjectionsProcess, projections_process
from tests.support.public_events import EventFactory, Published, produce


@pytest.fixture
async def rm(database: str) -> AsyncIterator[ProjectionsProcess]:
    async with projections_process(database) as process:
        yield process


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> httpx.Response:
    return await client.get(path, params=params)


def percentile_cont(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    low, high = math.floor(k), math.ceil(k)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


async def test_timeline_customer_and_kpis_follow_the_topics(rm: ProjectionsProcess) -> None:
    f = EventFactory()
    ada, bob = uuid.uuid4(), uuid.uuid4()
    first, first_events = f.order(ada, price=1000, ship_after_s=3600)
    _, second_events = f.order(ada, price=3000, ship_after_s=7200)
    _, third_events = f.order(bob, price=500, until="paid")
    refund = f.return_and_refund(first, ada, 400)
    stock = [f.stock_low("MUG", 2), f.stock_received("MUG", 30, 32), f.stock_low("TEE", 1)]
    cases = f.case(ada, first, breach=True)
    everything = first_events + second_events + third_events + refund + stock + cases
    await produce(everything)

    # read-your-own-write: the reply waits until the last event is applied
    last = everything[-1].ce_id
    reply = await get(rm.client, f"/timeline/{first}", wait_for=last, timeout_s=10)
    assert reply.status_code == 200, reply.text
    for item in everything:
        assert (await get(rm.client, "/kpis", wait_for=item.ce_id, timeout_s=10)).is_success

    timeline = (await get(rm.client, f"/timeline/{first}")).json()["events"]
    expected = [p.ce_id for p in first_events + refund] + [cases[0].ce_id, cases[1].ce_id]
    assert [e["ce_id"] for e in timeline] == expected
    assert timeline[0]["ce_type"] == "fulfilment.order.placed.v1"
    assert timeline[0]["summary"]["total_minor"] == 1000
    assert "shipping_address" not in timeline[0]["summary"]

    customer = (await get(rm.client, f"/customers/{ada}")).json()
    assert customer["orders_count"] == 2
    assert customer["lifetime_spend"] == {"EUR": 1000 + 3000 - 400}
    assert customer["refunds_total"] == {"EUR": 400}
    assert customer["returns_count"] == 1
    assert customer["open_cases"] == 1
    assert customer["first_order_at"] < customer["last_order_at"]

    kpis = (await get(rm.client, "/kpis")).json()
    assert kpis["orders"] == 3
    assert kpis["orders_by_status"] == {"delivered": 2, "paid": 1}
    assert kpis["gmv_minor"] == {"EUR": 4500}
    assert kpis["average_order_value_minor"] == {"EUR": 1500.0}
    assert kpis["return_rate"] == 0.5
    assert kpis["repurchase_rate"] == 0.5
    lead_times = [lead_time(first_events), lead_time(second_events)]
    assert kpis["fulfilment_lead_time_s"] == {
        "orders": 2,
        "p50": pytest.approx(percentile_cont(lead_times, 0.5)),
        "p95": pytest.approx(percentile_cont(lead_times, 0.95)),
    }
    assert kpis["refunds_total_minor"] == {"EUR": 400}
    assert kpis["sla_breaches"] == {"total": 1, "first_response": 1}
    assert [s["sku"] for s in kpis["low_stock_skus"]] == ["TEE"]


def lead_time(events: list[Published]) -> float:
    times = {p.envelope().type: p.event for p in events}
    placed: Any = times["fulfilment.order.placed.v1"]
    delivered: Any = times["fulfilment.order.delivered.v1"]
    return float((delivered.delivered_at - placed.placed_at).total_seconds())


async def test_wait_for_times_out_with_a_problem_and_bounds_are_checked(
    rm: ProjectionsProcess,
) -> None:
    reply = await get(rm.client, "/kpis", wait_for="never-published", timeout_s=0.3)
    assert reply.status_code == 504
    assert reply.headers["content-type"] == "application/problem+json"
    assert "never-published" in reply.json()["detail"]
    assert (await get(rm.client, "/kpis", wait_for="x", timeout_s=11)).status_code == 422
    unknown = uuid.uuid4()
    reply = await get(rm.client, f"/customers/{unknown}")
    assert reply.status_code == 404
    assert str(unknown) in reply.json()["detail"]
    assert (await get(rm.client, f"/timeline/{unknown}")).status_code == 404
    assert (await get(rm.client, "/customers/not-a-uuid")).status_code == 422


async def test_a_redelivered_record_has_no_second_effect(rm: ProjectionsProcess) -> None:
    f = EventFactory()
    ada = uuid.uuid4()
    order_id, events = f.order(ada, price=2500, until="paid")
    (meta, *_) = await produce(events)
    # The events are on several topics, applied in batches of their own: wait for each.
    for event in events:
        applied = await get(rm.client, "/kpis", wait_for=event.ce_id, timeout_s=10)
        assert applied.status_code == 200, applied.text
    before = (await get(rm.client, "/kpis")).json()
    customer_before = (await get(rm.client, f"/customers/{ada}")).json()

    # 1. the same offset again, through the inbox: tracked already, so a duplicate
    record = await fetch_record(meta.topic, meta.partition, meta.offset)
    duplicates = metrics.INBOX_DUPLICATES.labels(GROUP, meta.topic)
    counted = duplicates._value.get()
    await rm.inbox.handle_records([record])
    assert duplicates._value.get() == counted + 1
    # ... and straight to the applier: the tracking record refuses it, nothing is applied
    name = rm.inbox.tracking_name(meta.topic, meta.partition)
    message = InboundMessage(events[0].envelope(), meta.topic, meta.partition, meta.offset)
    with pytest.raises(IntegrityError):
        rm.applier.process_messages([message], Tracking(name, meta.offset + 1))

    # 2. copies of every record at new offsets (same ce_id): deduplicated by ce_id
    await produce(events)
    marker = f.stock_low("COPY-MARKER", 0)
    await produce([marker])
    await get(rm.client, "/kpis", wait_for=marker.ce_id, timeout_s=10)
    after = (await get(rm.client, "/kpis")).json()
    assert {k: v for k, v in after.items() if k != "low_stock_skus"} == {
        k: v for k, v in before.items() if k != "low_stock_skus"
    }
    assert (await get(rm.client, f"/customers/{ada}")).json() == customer_before
    timeline = (await get(rm.client, f"/timeline/{order_id}")).json()["events"]
    assert len(timeline) == len(events)


async def fetch_record(topic: str, partition: int, offset: int) -> Any:
    consumer = kafka.reader(KafkaSettings())
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
        return batch[tp][0]
    finally:
        await consumer.stop()


async def test_the_projections_consume_all_topics_as_their_own_group(
    rm: ProjectionsProcess,
) -> None:
    (consumer,) = [c for c in rm.runtime.consumers if c.inbox.group_id == GROUP]
    assigned = consumer.subscriber.consumer.assignment()
    assert {tp.topic for tp in assigned} == {topics.physical(t) for t in topics.ALL}
    f = EventFactory()
    marker = f.stock_low("GROUP-CHECK", 0)
    (meta,) = await produce([marker])
    await get(rm.client, "/kpis", wait_for=marker.ce_id, timeout_s=10)
    name = f"{GROUP}:{meta.topic}:{meta.partition}"
    position = await eventually(
        lambda: _tracked(rm, name), until=lambda p: p is not None, what="tracking"
    )
    assert position == meta.offset + 1


async def _tracked(rm: ProjectionsProcess, name: str) -> int | None:
    return await asyncio.to_thread(rm.applier.next_offset, name)


async def test_text_with_nul_from_an_older_producer_is_projected_not_stopped(
    rm: ProjectionsProcess,
) -> None:
    """PostgreSQL refuses NUL in text and jsonb; an event accepted before requests refused
    control characters must still reach the read models (the character replaced)."""
    f = EventFactory()
    ada = uuid.uuid4()
    order_id, order_events = f.order(ada, price=1000, until="paid")
    case = f.case(ada, order_id)[0]
    opened = dataclasses.replace(
        case, event=case.event.model_copy(update={"summary": "parcel\u0000late"})
    )
    after = f.stock_low("MUG", 2)
    await produce([*order_events, opened, after])

    reply = await get(rm.client, "/kpis", wait_for=after.ce_id, timeout_s=10)
    assert reply.status_code == 200, reply.text
    timeline = (await get(rm.client, f"/timeline/{order_id}")).json()["events"]
    case_rows = [e for e in timeline if e["ce_id"] == opened.ce_id]
    assert len(case_rows) == 1
    assert case_rows[0]["summary"]["summary"] == "parcel\ufffdlate"
