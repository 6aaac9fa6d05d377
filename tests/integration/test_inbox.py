"""The inbox on the real Kafka and PostgreSQL: redelivery has no effect, poison goes to the DLQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from fulfilment_kit.contracts import OrderLine, OrderPlaced, ShippingAddress, topics
from fulfilment_kit.messaging import cloudevents, kafka
from fulfilment_kit.messaging.admin import ensure_topics
from fulfilment_kit.messaging.consumer import ConsumerWatch
from fulfilment_kit.observability import metrics
from fulfilment_kit.observability.health import Heartbeat
from fulfilment_kit.runtime import ServiceRuntime
from fulfilment_kit.settings import KafkaSettings, ServiceSettings
from tests.integration.tally import POISON_SKU, TallyApplication, tally_app, tally_runtime
from tests.support.polling import eventually
from tests.support.stack import read_topic


def placed(sku: str = "MUG") -> OrderPlaced:
    return OrderPlaced(
        order_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        lines=[OrderLine(sku=sku, quantity=1, unit_price_minor=100)],
        currency="EUR",
        total_minor=100,
        shipping_address=ShippingAddress(
            recipient_name="A", line1="1 St", city="Berlin", postal_code="10115", country_code="DE"
        ),
        placed_at=datetime.now(UTC),
    )


async def produce(
    event: OrderPlaced | None = None, *, raw: bytes | None = None, partition: int = 0
) -> int:
    """Put one record on partition `partition` of the orders topic; returns its offset."""
    producer = kafka.producer(KafkaSettings())
    await producer.start()
    try:
        topic = topics.physical(topics.ORDERS)
        if event is None:
            meta = await producer.send_and_wait(
                topic, value=raw, key=b"poison", partition=partition
            )
        else:
            key, value, headers = cloudevents.encode(
                event,
                ce_id=str(uuid.uuid4()),
                source="/test",
                time=datetime.now(UTC),
                correlation_id="c",
                causation_id="c",
            )
            meta = await producer.send_and_wait(
                topic, value=value, key=key, headers=headers, partition=partition
            )
        return int(meta.offset)
    finally:
        await producer.stop()


@pytest.fixture
def group() -> str:
    return f"tally-{uuid.uuid4().hex[:8]}"


def make_runtime(database: str, group: str) -> ServiceRuntime:
    settings = ServiceSettings(
        relay_enabled=False, consumer_max_attempts=3, consumer_backoff_s=0.05
    )
    runtime: ServiceRuntime = tally_runtime(tally_app(database, settings), group, settings)
    return runtime


@pytest.fixture
async def runtime(database: str, group: str) -> AsyncIterator[ServiceRuntime]:
    await ensure_topics([topics.dlq(topics.physical(topics.ORDERS), group)])
    rt = make_runtime(database, group)
    async with rt.running():
        await eventually(rt.health.readiness, until=lambda p: not p, what="partitions assigned")
        yield rt


def app_of(rt: ServiceRuntime) -> TallyApplication:
    assert isinstance(rt.app, TallyApplication)
    return rt.app


async def count(rt: ServiceRuntime, order_id: uuid.UUID) -> int:
    return await asyncio.to_thread(app_of(rt).count, order_id)


async def fetch_record(offset: int, partition: int = 0):  # type: ignore[no-untyped-def]
    """The record at `offset` as a consumer receives it from the broker."""
    consumer = kafka.reader(KafkaSettings())
    await consumer.start()
    try:
        tp = TopicPartition(topics.physical(topics.ORDERS), partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
        return batch[tp][0]
    finally:
        await consumer.stop()


async def test_same_offset_delivered_twice_records_one_effect(runtime: ServiceRuntime) -> None:
    event = placed()
    offset = await produce(event)
    await eventually(
        lambda: count(runtime, event.order_id), until=lambda n: n == 1, what="applied once"
    )

    duplicates = metrics.INBOX_DUPLICATES.labels(runtime.service, topics.physical(topics.ORDERS))
    before = duplicates._value.get()
    record = await fetch_record(offset)
    assert runtime.inbox is not None
    await runtime.inbox.handle_records([record])  # the very same record, redelivered
    assert await count(runtime, event.order_id) == 1
    assert duplicates._value.get() == before + 1


async def test_consumer_restarted_behind_its_tracked_offset_has_no_second_effect(
    database: str, group: str
) -> None:
    await ensure_topics([topics.dlq(topics.physical(topics.ORDERS), group)])
    first = placed()
    rt = make_runtime(database, group)
    async with rt.running():
        await eventually(rt.health.readiness, until=lambda p: not p, what="partitions assigned")
        await produce(first)
        await eventually(lambda: count(rt, first.order_id), until=lambda n: n == 1, what="applied")

    # Rewind the group's Kafka offsets to the start: Kafka would redeliver everything.
    rewind = AIOKafkaConsumer(
        **KafkaSettings().client_options(),
        group_id=topics.physical(group),
        enable_auto_commit=False,
    )
    await rewind.start()
    try:
        tps = [TopicPartition(topics.physical(topics.ORDERS), p) for p in range(6)]
        rewind.assign(tps)
        await rewind.commit(dict.fromkeys(tps, 0))
    finally:
        await rewind.stop()

    second = placed()
    rt = make_runtime(database, group)
    async with rt.running():
        await eventually(rt.health.readiness, until=lambda p: not p, what="partitions assigned")
        await produce(second)
        await eventually(lambda: count(rt, second.order_id), until=lambda n: n == 1, what="applied")
        assert await count(rt, first.order_id) == 1


async def test_poison_records_go_to_the_dlq_with_reasons_and_the_partition_flows(
    runtime: ServiceRuntime, group: str
) -> None:
    garbage_offset = await produce(raw=b"\x00 this is not a CloudEvent")
    failing = placed(POISON_SKU)
    failing_offset = await produce(failing)
    good = placed()
    await produce(good)

    await eventually(
        lambda: count(runtime, good.order_id),
        until=lambda n: n == 1,
        timeout=60,
        what="the good record after the poison ones applied",
    )
    dlq_topic = topics.dlq(topics.physical(topics.ORDERS), group)
    dead = await eventually(
        lambda: read_topic(dlq_topic), until=lambda r: len(r) == 2, what="2 on the DLQ"
    )
    by_offset = {int(r.headers["dlq_original_offset"]): r for r in dead}
    assert by_offset[garbage_offset].headers["dlq_reason"] == "undecodable"
    assert "missing CloudEvents headers" in by_offset[garbage_offset].headers["dlq_error"]
    assert by_offset[garbage_offset].value == b"\x00 this is not a CloudEvent"
    assert by_offset[failing_offset].headers["dlq_reason"] == "handler-failed"
    assert "cannot handle POISON" in by_offset[failing_offset].headers["dlq_error"]
    assert by_offset[failing_offset].headers["dlq_attempts"] == "3"
    assert by_offset[failing_offset].headers["ce_type"] == "fulfilment.order.placed.v1"
    for record in dead:
        assert record.headers["dlq_consumer"] == group
        assert record.headers["dlq_original_topic"] == topics.physical(topics.ORDERS)
    assert await count(runtime, failing.order_id) == 0


async def test_an_idle_consumer_after_transactional_records_counts_as_alive(
    runtime: ServiceRuntime,
) -> None:
    """The relay publishes in transactions: each leaves a marker offset that is never tracked."""
    event = placed()
    producer = kafka.producer(KafkaSettings(), transactional_id=f"liveness-{uuid.uuid4()}")
    await producer.start()
    try:
        key, value, headers = cloudevents.encode(
            event,
            ce_id=str(uuid.uuid4()),
            source="/test",
            time=datetime.now(UTC),
            correlation_id="c",
            causation_id="c",
        )
        async with producer.transaction():
            await producer.send(
                topics.physical(topics.ORDERS), value=value, key=key, headers=headers
            )
    finally:
        await producer.stop()
    await eventually(lambda: count(runtime, event.order_id), until=lambda n: n == 1, what="applied")
    beat = Heartbeat("consumer-under-test")
    watch = ConsumerWatch(runtime.inbox, runtime._subscriber, beat)
    await watch.check()
    beat.last_beat = 0.0
    await watch.check()  # no progress since the first round, and none needed: all is read
    assert beat.last_beat > 0.0
