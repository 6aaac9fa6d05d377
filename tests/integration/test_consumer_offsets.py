"""The consumer commits its positions to Kafka at an interval, not per batch (ADR 25).

Kafka's committed offsets feed lag dashboards, KEDA and `kafka-consumer-groups`; the
database says where a consumer resumes. They must stay true within the interval, and a
stopped consumer leaves its last positions committed."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import TopicPartition

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.messaging.admin import ensure_topics
from fulfilment_kit.runtime import ServiceRuntime
from fulfilment_kit.settings import KafkaSettings, ServiceSettings
from tests.integration.tally import TallyApplication, tally_app, tally_runtime
from tests.integration.test_inbox import placed, produce
from tests.support.polling import eventually
from tests.support.stack import end_offsets

INTERVAL_S = 2.0


def runtime_of(database: str, group: str) -> ServiceRuntime:
    settings = ServiceSettings(relay_enabled=False, consumer_commit_interval_s=INTERVAL_S)
    runtime: ServiceRuntime = tally_runtime(tally_app(database, settings), group, settings)
    return runtime


async def committed(group: str, tp: TopicPartition) -> int | None:
    """The group's offset committed in Kafka for `tp` (None: none)."""
    reader = kafka.consumer(KafkaSettings(), topics.physical(group))
    await reader.start()
    try:
        offset: int | None = await reader.committed(tp)
        return offset
    finally:
        await reader.stop()


async def test_positions_reach_kafka_within_the_interval_not_once_per_batch(
    database: str,
) -> None:
    group = f"tally-{uuid.uuid4().hex[:8]}"
    await ensure_topics([topics.dlq(topics.physical(topics.ORDERS), group)])
    tp = TopicPartition(topics.physical(topics.ORDERS), 0)
    rt = runtime_of(database, group)
    async with rt.running():
        await eventually(rt.health.readiness, until=lambda p: not p, what="partitions assigned")
        subscriber = rt._subscriber
        app = rt.app
        assert isinstance(app, TallyApplication)
        before = subscriber.commits
        began = time.monotonic()
        batches = 8
        for _ in range(batches):  # one record, one batch, one database transaction each
            event = placed()
            await produce(event)
            await eventually(
                lambda e=event: asyncio.to_thread(app.count, e.order_id),
                until=lambda n: n == 1,
                interval=0.02,
                what="applied",
            )
        elapsed = time.monotonic() - began
        end = (await end_offsets([tp.topic]))[tp]
        # True within the interval (plus one fetch wait): no batch left behind for long.
        await eventually(
            lambda: committed(group, tp),
            until=lambda offset: offset == end,
            timeout=INTERVAL_S + 3,
            interval=0.2,
            what="positions committed to Kafka",
        )
        commits = subscriber.commits - before
        assert commits < batches, f"{commits} commits for {batches} batches"
        assert commits <= elapsed / INTERVAL_S + 2
        last = placed()
        await produce(last)
        await eventually(
            lambda: asyncio.to_thread(app.count, last.order_id), until=lambda n: n == 1
        )
    # Stopped within the interval: its last positions are committed on the way out.
    assert await committed(group, tp) == end + 1
