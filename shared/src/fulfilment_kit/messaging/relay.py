"""Outbox relay: tails the event store's notification log and publishes in Kafka transactions.

The event store is the outbox. Each batch of notifications is published in one Kafka
transaction, and every record carries its notification id in `ce_sequence`. On start the
relay fences any previous instance (same transactional id), which aborts its open
transaction, and resumes after the highest `ce_sequence` committed on its topics. So a
crash at any point neither loses nor duplicates an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from eventsourcing.application import Application
from eventsourcing.persistence import Notification

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.messaging import cloudevents, kafka
from fulfilment_kit.observability import metrics
from fulfilment_kit.observability.health import Heartbeat
from fulfilment_kit.settings import KafkaSettings

log = structlog.get_logger(__name__)


class TopicAheadOfStoreError(RuntimeError):
    """The output topics hold more events than this event store ever recorded."""


@dataclass(frozen=True)
class Outbound:
    """A public event a domain event maps to, with its causal context."""

    event: IntegrationEvent
    correlation_id: str
    causation_id: str


EventMapper = Callable[[Any], Sequence[Outbound]]
"""Maps one domain event to the public events it publishes (often none)."""


@dataclass(frozen=True)
class PublicRecord:
    """One public event of a notification, encoded as its Kafka record."""

    topic: str
    """The logical topic (without the deployment prefix)."""
    key: bytes
    value: bytes
    headers: cloudevents.Headers


def source_of(service: str) -> str:
    """The CloudEvents `source` of a service's events."""
    return f"/fulfilment/{service}"


def public_records(
    app: Application[Any], mapper: EventMapper, source: str, notification: Notification
) -> list[PublicRecord]:
    """The records a notification publishes: what the relay sends and `GET /events` serves."""
    domain_event: Any = app.mapper.to_domain_event(notification)
    records = []
    for index, outbound in enumerate(mapper(domain_event)):
        ce_id = cloudevents.event_id(
            domain_event.originator_id, domain_event.originator_version, index
        )
        key, value, headers = cloudevents.encode(
            outbound.event,
            ce_id=ce_id,
            source=source,
            time=domain_event.timestamp,
            correlation_id=outbound.correlation_id,
            causation_id=outbound.causation_id,
            sequence=notification.id,
        )
        records.append(PublicRecord(outbound.event.topic, key, value, headers))
    return records


class OutboxRelay:
    """Publishes an application's committed events exactly once to its topics."""

    def __init__(
        self,
        *,
        service: str,
        app: Application[Any],
        mapper: EventMapper,
        output_topics: Sequence[str],
        kafka_settings: KafkaSettings,
        batch_size: int = 500,
        poll_interval_s: float = 0.05,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.service = service
        self.app = app
        self.mapper = mapper
        self.output_topics = [topics.physical(t) for t in output_topics]
        self.kafka_settings = kafka_settings
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.heartbeat = heartbeat
        self.source = source_of(service)
        self.position: int | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Tell the relay new events were just committed (saves a poll interval)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Publish until cancelled; any error restarts from the topic tail."""
        backoff = 0.5
        while not self._stopping:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.heartbeat:
                    self.heartbeat.beat()  # retrying is alive: Kafka being down is not our death
                metrics.RELAY_RESTARTS.labels(self.service).inc()
                log.warning("relay restarting", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            else:
                backoff = 0.5

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def _run_once(self) -> None:
        producer = kafka.producer(
            self.kafka_settings,
            transactional_id=topics.transactional_id(self.service),
            transaction_timeout_ms=60_000,
        )
        await asyncio.wait_for(producer.start(), self.kafka_settings.request_timeout_s)
        try:
            self.position = await self._committed_position()
            newest = await asyncio.to_thread(self.app.recorder.max_notification_id) or 0
            if self.position > newest:
                # Resuming would silently skip this store's events 1..position.
                raise TopicAheadOfStoreError(
                    f"{self.output_topics} hold notification {self.position} but the event "
                    f"store's newest is {newest}: the topics belong to another event store "
                    "(use new topics, e.g. FULFIL_TOPIC_PREFIX, after resetting a database)"
                )
            log.info("relay resuming", after_notification=self.position)
            while not self._stopping:
                published = await self._publish_next_batch(producer)
                if self.heartbeat:
                    self.heartbeat.beat()
                if not published:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), self.poll_interval_s)
        finally:
            try:
                await asyncio.wait_for(producer.stop(), 10)
            except Exception as exc:  # aiokafka#1101: stop can hang while the broker is down
                log.warning("relay producer did not stop cleanly", error=str(exc))

    async def _publish_next_batch(self, producer: AIOKafkaProducer) -> int:
        start = (self.position or 0) + 1
        recorder = self.app.recorder
        notifications: Sequence[Notification] = await asyncio.to_thread(
            recorder.select_notifications, start, self.batch_size
        )
        await self._update_lag(notifications)
        if not notifications:
            return 0
        began = time.perf_counter()
        records = [r for n in notifications for r in self._records_for(n)]
        if records:
            async with producer.transaction():
                sends = [
                    await producer.send(topic, value=value, key=key, headers=headers)
                    for topic, key, value, headers in records
                ]
            for future in sends:
                future.result()  # the transaction committed, so each send has its result
            for topic, *_ in records:
                metrics.RELAY_PUBLISHED.labels(self.service, topic).inc()
        self.position = notifications[-1].id
        metrics.RELAY_BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - began)
        return len(records) or len(notifications)

    def _records_for(
        self, notification: Notification
    ) -> list[tuple[str, bytes, bytes, cloudevents.Headers]]:
        return [
            (topics.physical(r.topic), r.key, r.value, r.headers)
            for r in public_records(self.app, self.mapper, self.source, notification)
        ]

    async def _update_lag(self, batch: Sequence[Notification]) -> None:
        if len(batch) == self.batch_size or self.position is None:
            newest = await asyncio.to_thread(self.app.recorder.max_notification_id)
        else:  # a short batch reached the end of the log
            newest = batch[-1].id if batch else self.position
        lag = max(0, (newest or 0) - (self.position or 0))
        metrics.RELAY_LAG.labels(self.service).set(lag)

    async def _committed_position(self) -> int:
        """Highest notification id committed on the output topics (0 when none)."""
        consumer = kafka.reader(self.kafka_settings)
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in self.output_topics
                for p in sorted(await _partitions_for(consumer, topic))
            ]
            if not partitions:
                return 0
            consumer.assign(partitions)
            beginnings = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
            positions = [
                await _last_sequence(consumer, tp, beginnings[tp], ends[tp]) for tp in partitions
            ]
            return max(positions, default=0)
        finally:
            await consumer.stop()


async def _partitions_for(consumer: Any, topic: str) -> set[int]:
    deadline = time.monotonic() + 30
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} does not exist (create it: make topics)")
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.2)


async def _last_sequence(consumer: Any, tp: TopicPartition, begin: int, end: int) -> int:
    """The ce_sequence of the last committed record in one partition, scanning back from the end."""
    window = 64
    while end > begin:
        start = max(begin, end - window)
        consumer.seek(tp, start)
        found: int | None = None
        deadline = time.monotonic() + 30
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the tail of {tp}")
            batch = await consumer.getmany(tp, timeout_ms=500)
            for record in batch.get(tp, []):
                sequence = dict(record.headers or ()).get("ce_sequence")
                if sequence is not None:
                    found = int(sequence)
        if found is not None:
            return found
        if start == begin:
            break
        window *= 4  # the tail held only aborted records or transaction markers
    return 0
