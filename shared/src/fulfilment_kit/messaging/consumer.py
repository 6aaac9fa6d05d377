"""FastStream wiring of an Inbox: batch subscriber, seek-to-tracked-offset, progress watch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging.inbox import Inbox
from fulfilment_kit.observability import metrics
from fulfilment_kit.observability.health import Heartbeat

log = structlog.get_logger(__name__)


class TrackedOffsetListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, seek each partition to the offset tracked in the database."""

    def __init__(self, inbox: Inbox, resume_from: str = "database") -> None:
        self.inbox = inbox
        self.resume_from = resume_from
        self.subscriber: Any = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self.inbox.forget(tp)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer: AIOKafkaConsumer = self.subscriber.consumer
        for tp in sorted(assigned):
            position = await self.inbox.tracked_position(tp)
            if self.resume_from == "kafka":
                continue  # fault injection: trust Kafka's committed offset like a plain consumer
            # Offset 0 when nothing is tracked: a log truncated by retention makes it
            # out of range, and auto_offset_reset="earliest" moves to the first record.
            # (seek_to_beginning would wait ~0.5 s per partition for an offset lookup.)
            consumer.seek(tp, position or 0)
        log.info(
            "partitions assigned", partitions=[f"{tp.topic}/{tp.partition}" for tp in assigned]
        )


async def _no_decode(_: Any) -> None:
    """The inbox decodes records itself, so a poison record reaches it undamaged."""
    return


def subscribe_inbox(
    broker: KafkaBroker,
    inbox: Inbox,
    source_topics: Sequence[str],
    *,
    max_records: int = 500,
    resume_from: str = "database",
) -> Any:
    """Register the inbox as a batch subscriber of `source_topics` (logical names)."""
    listener = TrackedOffsetListener(inbox, resume_from)
    subscriber = broker.subscriber(
        *[topics.physical(t) for t in source_topics],
        # The deployment's prefix keeps two deployments on one cluster out of each
        # other's consumer groups; DLQ and tracking names stay the logical name.
        group_id=topics.physical(inbox.group_id),
        batch=True,
        max_records=max_records,
        batch_timeout_ms=50,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        # Notice a dead member within seconds (the broker's minimum session is 6 s):
        # a rebalance waits for it, and so does a clean shutdown during that rebalance.
        session_timeout_ms=6000,
        heartbeat_interval_ms=1500,
        listener=listener,
        decoder=_no_decode,
        title=f"{inbox.group_id}-inbox",
    )
    listener.subscriber = subscriber

    @subscriber
    async def consume(message: KafkaMessage) -> None:
        await inbox.handle_records(message.raw_message)
        try:
            await message.ack()  # Kafka's offset is for lag dashboards; the database is the truth
        except Exception as exc:
            log.info("offset commit skipped", error=str(exc))

    return subscriber


class ConsumerWatch:
    """Beats the heartbeat while the consumer progresses or sits idle at zero lag."""

    def __init__(self, inbox: Inbox, subscriber: Any, heartbeat: Heartbeat) -> None:
        self.inbox = inbox
        self.subscriber = subscriber
        self.heartbeat = heartbeat
        self._last: dict[TopicPartition, int] = {}

    async def run(self, interval_s: float = 5.0) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:
                log.info("consumer watch skipped a round", error=str(exc))
            await asyncio.sleep(interval_s)

    async def check(self) -> None:
        consumer: AIOKafkaConsumer | None = self.subscriber.consumer
        if consumer is None:
            return
        waiting = []
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            tracked = self.inbox.next_offset(tp)
            metrics.INBOX_TRACKED_LAG.labels(self.inbox.group_id, tp.topic, str(tp.partition)).set(
                max(0, highwater - tracked)
            )
            # Caught up when the consumer has read to the high-water mark: the last offsets
            # may be transaction markers, which are never tracked, so compare positions.
            caught_up = await consumer.position(tp) >= highwater
            if not caught_up and self._last.get(tp) == tracked:
                waiting.append(f"{tp.topic}/{tp.partition}")
            self._last[tp] = tracked
        if not waiting:
            self.heartbeat.beat()
        else:
            log.warning("consumer has unread records and made no progress", partitions=waiting)
