"""Outbox relay: tails the event store's notification log and publishes in Kafka transactions.

The event store is the outbox. Each batch of notifications is published in one Kafka
transaction, and every record carries its notification id in `ce_sequence`. On start the
relay fences any previous instance (same transactional id), which aborts its open
transaction, and resumes after the highest `ce_sequence` committed on its topics or the
position it stored in the service's database (within a second of a committed transaction,
and when it stops), whichever is higher (retention may have emptied the topics). So a crash
at any point neither loses nor duplicates an event.

With several replicas of a service exactly one relay publishes: the one holding the
service's relay lease (a PostgreSQL advisory lock, `persistence.lease`); the others stand
by and take over within about `lease_poll_s` of the leader's death. The relay waits for
commits, not for a timer: every commit to the event store notifies its channel
(`persistence.notifications`), in this replica and the others, with `poll_interval_s` as
a slow fallback poll. A notification that
cannot be mapped to its public events is quarantined (recorded, counted, logged without
its payload) and the relay carries on behind it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from eventsourcing.application import Application
from eventsourcing.persistence import Notification
from prometheus_client import Counter, Gauge

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.messaging import cloudevents, kafka
from fulfilment_kit.observability import metrics
from fulfilment_kit.observability.health import Heartbeat
from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.persistence.follower import Quarantined, follower_store
from fulfilment_kit.persistence.lease import Lease
from fulfilment_kit.persistence.notifications import Wakeup, on_commit
from fulfilment_kit.settings import KafkaSettings

log = structlog.get_logger(__name__)

RELAY_QUARANTINED = Counter(
    "fulfil_relay_quarantined_total",
    "Notifications the relay could not map to public events and set aside (alert on any)",
    ["service"],
    registry=REGISTRY,
)
RELAY_ACTIVE = Gauge(
    "fulfil_relay_active",
    "1 while this replica holds the service's relay lease and publishes, 0 on standby",
    ["service"],
    registry=REGISTRY,
)


class LeaseLost(RuntimeError):
    """This replica no longer holds the relay lease: another may be publishing."""


class TopicAheadOfStoreError(RuntimeError):
    """The output topics hold more events than this event store ever recorded."""


@dataclass(frozen=True)
class EventToPublish:
    """A public event a domain event maps to, with its causal context."""

    event: IntegrationEvent
    correlation_id: str
    causation_id: str


EventMapper = Callable[[Any], Sequence[EventToPublish]]
"""Maps one domain event to the public events it publishes (often none)."""


@dataclass(frozen=True)
class PublicRecord:
    """One public event of a notification, encoded as its Kafka record."""

    topic: str
    """The logical topic (without the deployment prefix)."""
    key: bytes
    value: bytes
    headers: cloudevents.Headers
    event: IntegrationEvent
    """The public event the record carries (for in-process observers: not decoded again)."""


def source_of(service: str) -> str:
    """The CloudEvents `source` of a service's events."""
    return f"/fulfilment/{service}"


def public_records(
    app: Application[Any], mapper: EventMapper, source: str, notification: Notification
) -> list[PublicRecord]:
    """The records a notification publishes: what the relay sends and `GET /events` serves.

    A mapper with `may_publish(topic)` (`PublicEvents`) lets private events pass undecoded."""
    may_publish = getattr(mapper, "may_publish", None)
    if may_publish is not None and not may_publish(notification.topic):
        return []
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
        records.append(PublicRecord(outbound.event.topic, key, value, headers, outbound.event))
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
        poll_interval_s: float = 1.0,
        heartbeat: Heartbeat | None = None,
        lease_poll_s: float = 1.0,
        wake_spacing_s: float = 0.02,
        position_store_s: float = 1.0,
    ) -> None:
        self.service = service
        self.app = app
        self.mapper = mapper
        self.output_topics = [topics.physical(t) for t in output_topics]
        self._physical_names: dict[str, str] = {}
        self.kafka_settings = kafka_settings
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        """The fallback poll: commits wake the relay (LISTEN/NOTIFY and in-process wakes)."""
        self.wake_spacing_s = wake_spacing_s
        """Least time between two reads of the log after wake-ups: a burst makes one batch."""
        self.position_store_s = position_store_s
        """Least time between two writes of the published position (see below)."""
        self._stored: int | None = None
        self._stored_at = 0.0
        self.heartbeat = heartbeat
        self.source = source_of(service)
        self.position: int | None = None
        self.lease = Lease(app, f"relay:{service}")
        self.lease_poll_s = lease_poll_s
        self.store = follower_store(app)
        self.position_name = f"relay:{service}"
        self._wakeup = Wakeup()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._lease_checked = 0.0
        self._oldest_unpublished_at: float | None = None
        self.on_published: Callable[[Sequence[IntegrationEvent]], None]
        """Called with the public events of each committed batch, in order (e.g. the
        service's business metrics, `EventMeter.observe`)."""
        self.on_published = _ignore
        metrics.RELAY_LAG_SECONDS.labels(service).set_function(self._lag_seconds)

    def wake(self) -> None:
        """Tell the relay new events were just committed (any thread; the commit's
        notification would wake it too, a little later)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Publish while holding the lease, until stopped; woken by every commit."""
        async with on_commit(self.app, self.wake):
            await self._run()

    async def _run(self) -> None:
        """Publish while holding the lease, until stopped; any error restarts from the tail."""
        backoff = 0.5
        standing_by = False
        try:
            while not self._stopping:
                try:
                    if not await asyncio.to_thread(self.lease.try_acquire):
                        if not standing_by:
                            log.info("relay standing by", lease=self.lease.name)
                            standing_by = True
                        RELAY_ACTIVE.labels(self.service).set(0)
                        if self.heartbeat:
                            self.heartbeat.beat()
                        await self._pause(self.lease_poll_s)
                        continue
                    standing_by = False
                    RELAY_ACTIVE.labels(self.service).set(1)
                    log.info("relay active", lease=self.lease.name)
                    await self._run_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    RELAY_ACTIVE.labels(self.service).set(0)
                    if isinstance(exc, LeaseLost):
                        await asyncio.to_thread(self.lease.release)
                    if self.heartbeat:
                        self.heartbeat.beat()  # retrying is alive: Kafka down is not our death
                    metrics.RELAY_RESTARTS.labels(self.service).inc()
                    with contextlib.suppress(Exception):  # the database may be down as well
                        await self._measure_lag_while_stalled()
                    if isinstance(exc, kafka.AUTHORIZATION_ERRORS):  # retried: ACLs can be fixed
                        log.error(
                            "relay refused by Kafka",
                            error=kafka.access_denied(
                                exc, f"publishing {self.service}'s events", self.kafka_settings
                            ),
                        )
                    else:
                        log.warning("relay restarting", error=f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                else:
                    backoff = 0.5
        finally:
            RELAY_ACTIVE.labels(self.service).set(0)
            await asyncio.to_thread(self.lease.release)

    async def _pause(self, seconds: float) -> None:
        """Wait on standby; commits' wake-ups do not shorten it (only stopping does)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        self._wakeup.set()

    def quarantined(self) -> list[Quarantined]:
        """The notifications this service's relay set aside (blocking)."""
        with self.store.transaction() as tx:
            return tx.quarantined(self.service)

    def _stored_position(self) -> int:
        return self.store.position(self.position_name)

    def _store_position(self, position: int) -> None:
        with self.store.transaction() as tx:
            tx.set_position(self.position_name, position)

    async def _check_lease(self) -> None:
        now = time.monotonic()
        if now - self._lease_checked < self.lease_poll_s:
            return
        if not await asyncio.to_thread(self.lease.still_held):
            raise LeaseLost(f"the relay lease {self.lease.name} was lost")
        self._lease_checked = now

    async def _run_once(self) -> None:
        producer = kafka.producer(
            self.kafka_settings,
            transactional_id=topics.transactional_id(self.service),
            transaction_timeout_ms=60_000,
        )
        await asyncio.wait_for(producer.start(), self.kafka_settings.request_timeout_s)
        try:
            tail = await self._committed_position()
            stored = await asyncio.to_thread(self._stored_position)
            self.position = max(tail, stored)
            newest = await asyncio.to_thread(self.app.recorder.max_notification_id) or 0
            if self.position > newest:
                # Resuming would silently skip this store's events 1..position.
                raise TopicAheadOfStoreError(
                    f"{self.output_topics} hold notification {self.position} but the event "
                    f"store's newest is {newest}: the topics belong to another event store "
                    "(use new topics, e.g. FULFIL_TOPIC_PREFIX, after resetting a database)"
                )
            log.info(
                "relay resuming", after_notification=self.position, topic_tail=tail, stored=stored
            )
            self._lease_checked = time.monotonic()
            self._stored = stored
            while not self._stopping:
                await self._check_lease()
                published = await self._publish_next_batch(producer)
                await self._store_position_now_and_then()
                if self.heartbeat:
                    self.heartbeat.beat()
                # Cleared when it returns, before the next read: no commit is missed. The
                # spacing holds after a batch too: under load one transaction follows
                # another, and the next carries what a few more commits add (a transaction
                # costs AddPartitionsToTxn, EndTxn and a marker per partition, which every
                # consumer of the topic fetches).
                wait = 0.0 if published else min(self.poll_interval_s, self.lease_poll_s)
                await self._wakeup.wait(wait, spacing_s=self.wake_spacing_s)
            # Stopped (not failed, nor lost the lease): the position as published, at once.
            with contextlib.suppress(Exception):  # the database may be down: the tail serves
                await asyncio.wait_for(self._store_position_now_and_then(last=True), 10)
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
        records: list[PublicRecord] = []
        for notification in notifications:
            try:
                records.extend(self._public_records(notification))
            except Exception as exc:  # a mapping bug must not wedge every later event
                await asyncio.to_thread(self._quarantine, notification, exc)
        if records:
            physical = self._physical
            async with producer.transaction():
                sends = [
                    await producer.send(
                        physical(r.topic), value=r.value, key=r.key, headers=r.headers
                    )
                    for r in records
                ]
            for future in sends:
                future.result()  # the transaction committed, so each send has its result
            for topic, count in collections.Counter(r.topic for r in records).items():
                metrics.RELAY_PUBLISHED.labels(self.service, physical(topic)).inc(count)
            self.on_published([r.event for r in records])
        self.position = notifications[-1].id
        metrics.RELAY_BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - began)
        return len(records) or len(notifications)

    async def _store_position_now_and_then(self, *, last: bool = False) -> None:
        """Store the published position at most every `position_store_s` (and when stopping).

        Always after the Kafka commit. The topics' tail is where the relay resumes; the
        stored position only matters once retention has emptied them, and retention never
        deletes what was published seconds ago, so a position a moment old serves as well
        as one written in every batch's own transaction (a transaction per batch saved)."""
        position = self.position
        if position is None or position == self._stored:
            return
        now = time.monotonic()
        if not last and now - self._stored_at < self.position_store_s:
            return
        await asyncio.to_thread(self._store_position, position)
        self._stored, self._stored_at = position, now

    def _records_for(
        self, notification: Notification
    ) -> list[tuple[str, bytes, bytes, cloudevents.Headers]]:
        """(physical topic, key, value, headers) of each record the notification publishes."""
        return [
            (self._physical(r.topic), r.key, r.value, r.headers)
            for r in self._public_records(notification)
        ]

    def _public_records(self, notification: Notification) -> list[PublicRecord]:
        return public_records(self.app, self.mapper, self.source, notification)

    def _physical(self, topic: str) -> str:
        """The broker's name of a logical topic, as it was when the relay was made."""
        name = self._physical_names.get(topic)
        if name is None:
            name = self._physical_names[topic] = topics.physical(topic)
        return name

    def _quarantine(self, notification: Notification, exc: Exception) -> None:
        record = Quarantined(
            service=self.service,
            notification_id=notification.id,
            originator_id=str(notification.originator_id),
            originator_version=notification.originator_version,
            topic=notification.topic,
            error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        with self.store.transaction() as tx:
            tx.quarantine(record)
        RELAY_QUARANTINED.labels(self.service).inc()
        # No payload and no exception text (it may quote the payload): those are in the table.
        log.error(
            "relay quarantined a notification it cannot map",
            notification_id=record.notification_id,
            originator_id=record.originator_id,
            originator_version=record.originator_version,
            event_topic=record.topic,
            error_type=type(exc).__name__,
        )

    async def _update_lag(self, batch: Sequence[Notification]) -> None:
        if len(batch) == self.batch_size or self.position is None:
            newest = await asyncio.to_thread(self.app.recorder.max_notification_id)
        else:  # a short batch reached the end of the log
            newest = batch[-1].id if batch else self.position
        lag = max(0, (newest or 0) - (self.position or 0))
        metrics.RELAY_LAG.labels(self.service).set(lag)
        self._oldest_unpublished_at = self._recorded_at(batch[0]) if batch else None

    def _recorded_at(self, notification: Notification) -> float:
        domain_event: Any = self.app.mapper.to_domain_event(notification)
        return float(domain_event.timestamp.timestamp())

    def _lag_seconds(self) -> float:
        oldest = self._oldest_unpublished_at
        return max(0.0, time.time() - oldest) if oldest is not None else 0.0

    async def _measure_lag_while_stalled(self) -> None:
        """Keep both lag gauges true while Kafka refuses the relay (no batch is read then)."""
        recorder = self.app.recorder
        start = (self.position or 0) + 1
        first = await asyncio.to_thread(recorder.select_notifications, start, 1)
        newest = await asyncio.to_thread(recorder.max_notification_id) or 0
        metrics.RELAY_LAG.labels(self.service).set(max(0, newest - (self.position or 0)))
        self._oldest_unpublished_at = self._recorded_at(first[0]) if first else None

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


def _ignore(_: object) -> None:
    return None


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
