"""Inbox: apply Kafka records through eventsourcing with the offset tracked in the same transaction.

Tracking name `group:topic:partition`, tracking id = the *next* offset to read. The
database, not Kafka's committed offset, says where a consumer resumes. A record whose
offset is already tracked is a duplicate and has no second effect. A record that cannot
be decoded, or keeps failing, goes to the consumer's DLQ topic with headers saying why,
and its offset is tracked so the partition keeps flowing. Nothing is skipped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, ClassVar, Protocol, TypeVar
from uuid import UUID

import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProcessRecorder,
    Tracking,
)

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.contracts.registry import event_class_for
from fulfilment_kit.messaging import cloudevents, kafka
from fulfilment_kit.observability import metrics
from fulfilment_kit.persistence.batch_load import load_aggregates
from fulfilment_kit.settings import KafkaSettings

log = structlog.get_logger(__name__)

TAggregate = TypeVar("TAggregate", bound=Aggregate)


@dataclass(frozen=True)
class InboundMessage:
    """One decoded record and where it came from."""

    envelope: cloudevents.Envelope
    topic: str
    partition: int
    offset: int


class Applier(Protocol):
    """What an Inbox applies records with: an InboxApplication, or a projection.

    `process_messages` must record `tracking` in the same transaction as the effects of
    `messages` and raise eventsourcing's IntegrityError when the tracking position is not
    ahead of the recorded one (so an offset is never applied twice).
    """

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        """Apply `messages` and record `tracking`, atomically."""

    def next_offset(self, tracking_name: str) -> int | None:
        """The next offset to read for `tracking_name` (None: nothing tracked yet)."""


class InboxApplication(Application[UUID]):
    """An eventsourcing Application whose recorder also records tracking (the inbox)."""

    recorder: ProcessRecorder
    reacts_to: ClassVar[tuple[type[IntegrationEvent], ...]] = ()
    """The public event types `handle` reacts to (empty: all of them)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        # Aggregates prefetched for the batch being processed, by id(ProcessingEvent).
        self._prefetched: dict[int, tuple[set[UUID], dict[UUID, Any]]] = {}

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    def handle(self, message: InboundMessage, processing: ProcessingEvent[UUID]) -> None:
        """The service's policy: react to one message by collecting events on `processing`."""

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        """Apply messages and record their events with `tracking`, atomically."""
        processing: ProcessingEvent[UUID] = ProcessingEvent(tracking=tracking)
        wanted = {i for message in messages for i in self.aggregate_ids(message)}
        # One query for the whole batch instead of one per message and aggregate.
        self._prefetched[id(processing)] = (wanted, load_aggregates(self, wanted))
        try:
            for message in messages:
                with _log_context(message):
                    self.handle(message, processing)
        finally:
            del self._prefetched[id(processing)]
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)

    def accepts(self, event_type: type[IntegrationEvent]) -> bool:
        """Whether this consumer reacts to `event_type`; others are skipped undecoded."""
        return not self.reacts_to or issubclass(event_type, self.reacts_to)

    def aggregate_ids(self, message: InboundMessage) -> Iterable[UUID]:
        """Ids of the aggregates `handle(message)` will load: fetched with one query a batch."""
        return ()

    def get_for_update(
        self, processing: ProcessingEvent[UUID], aggregate_id: UUID, cls: type[TAggregate]
    ) -> TAggregate | None:
        """The aggregate as changed so far in this batch, else as stored, else None."""
        pending = processing.aggregates.get(aggregate_id)
        if pending is not None:
            assert isinstance(pending, cls)
            return pending
        wanted, loaded = self._prefetched.get(id(processing), ((), {}))
        if aggregate_id in wanted:  # the same object all batch long, changes included
            aggregate = loaded.get(aggregate_id)
            assert aggregate is None or isinstance(aggregate, cls)
            return aggregate
        return self.find(aggregate_id, cls)

    def get_many_for_update(
        self, processing: ProcessingEvent[UUID], ids: Sequence[UUID], cls: type[TAggregate]
    ) -> list[TAggregate | None]:
        """`get_for_update` of several aggregates, loading those not at hand with one query."""
        batch = self._prefetched.get(id(processing))
        if batch is not None:
            wanted, loaded = batch
            missing = [i for i in ids if i not in processing.aggregates and i not in wanted]
            loaded.update(load_aggregates(self, missing))
            wanted.update(missing)
        return [self.get_for_update(processing, i, cls) for i in ids]

    def find(self, aggregate_id: UUID, cls: type[TAggregate]) -> TAggregate | None:
        """The stored aggregate, or None when it does not exist.

        Replays the events itself: the repository's projection checks a runtime Protocol per
        event, which was a tenth of a busy consumer's time (no snapshots are configured)."""
        aggregate = load_aggregates(self, [aggregate_id]).get(aggregate_id)
        assert aggregate is None or isinstance(aggregate, cls), f"{aggregate_id} is {aggregate!r}"
        return aggregate

    def next_offset(self, tracking_name: str) -> int | None:
        return self.recorder.max_tracking_id(tracking_name)


@contextlib.contextmanager
def _log_context(message: InboundMessage) -> Iterator[None]:
    """Every log line written while a message is handled names it and its causal context."""
    envelope = message.envelope
    with structlog.contextvars.bound_contextvars(
        correlation_id=envelope.correlation_id,
        causation_id=envelope.id,
        order_id=envelope.subject,
        event_type=envelope.type,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    ):
        yield


_TRANSIENT = (OperationalError, InterfaceError)
SKIPS_PER_TRACKING_WRITE = 5000


class Inbox:
    """Applies batches of records of one consumer group, partition by partition."""

    def __init__(
        self,
        *,
        app: Applier,
        group_id: str,
        kafka_settings: KafkaSettings,
        max_attempts: int = 5,
        backoff_s: float = 0.2,
    ) -> None:
        self.app = app
        self.group_id = group_id
        self.kafka_settings = kafka_settings
        self._dlq_producer: AIOKafkaProducer | None = None
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._next: dict[str, int] = {}
        self._unsaved_skips: dict[str, int] = {}

    async def start(self) -> None:
        """Start the DLQ producer (before the subscriber starts consuming)."""
        self._dlq_producer = kafka.producer(self.kafka_settings)
        await asyncio.wait_for(self._dlq_producer.start(), self.kafka_settings.request_timeout_s)

    async def stop(self) -> None:
        if self._dlq_producer is not None:
            with contextlib.suppress(Exception):  # aiokafka#1101: stop can hang
                await asyncio.wait_for(self._dlq_producer.stop(), 10)
            self._dlq_producer = None

    def tracking_name(self, topic: str, partition: int) -> str:
        return f"{self.group_id}:{topic}:{partition}"

    async def tracked_position(self, tp: TopicPartition) -> int | None:
        """Next offset to read on `tp` according to the database (None: nothing tracked)."""
        name = self.tracking_name(tp.topic, tp.partition)
        position = await asyncio.to_thread(self.app.next_offset, name)
        if position is None:
            self._next.pop(name, None)
        else:
            self._next[name] = position
        return position

    def next_offset(self, tp: TopicPartition) -> int:
        """The next offset this consumer will apply on `tp` (0 before anything is known)."""
        return self._next.get(self.tracking_name(tp.topic, tp.partition), 0)

    def forget(self, tp: TopicPartition) -> None:
        self._next.pop(self.tracking_name(tp.topic, tp.partition), None)

    async def handle_records(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Apply records (from any partitions); returns when each is applied or dead-lettered."""

        def by_tp(r: ConsumerRecord[Any, Any]) -> tuple[str, int]:
            return (r.topic, r.partition)

        for (topic, partition), group in groupby(sorted(records, key=by_tp), key=by_tp):
            ordered = sorted(group, key=lambda r: r.offset)
            await self._handle_partition(topic, partition, ordered)

    async def _handle_partition(
        self, topic: str, partition: int, records: list[ConsumerRecord[Any, Any]]
    ) -> None:
        name = self.tracking_name(topic, partition)
        if name not in self._next:
            await self.tracked_position(TopicPartition(topic, partition))
        fresh = [r for r in records if r.offset >= self._next.get(name, 0)]
        if len(fresh) < len(records):
            metrics.INBOX_DUPLICATES.labels(self.group_id, topic).inc(len(records) - len(fresh))
        batch: list[tuple[ConsumerRecord[Any, Any], InboundMessage]] = []
        skipped_through = skipped = 0
        for record in fresh:
            if not self._wanted(record):
                skipped_through, skipped = record.offset + 1, skipped + 1
                continue
            try:
                envelope = cloudevents.decode(record.value, record.headers)
            except cloudevents.DecodeError as exc:
                await self._apply(name, batch)
                batch = []
                await self._dead_letter(name, record, "undecodable", str(exc), attempts=1)
                continue
            batch.append((record, InboundMessage(envelope, topic, partition, record.offset)))
        await self._apply(name, batch)
        if skipped_through > self._next.get(name, 0):
            await self._skip_through(name, skipped_through, skipped)

    def _wanted(self, record: ConsumerRecord[Any, Any]) -> bool:
        """False for a valid record of a type this consumer ignores: it is not even decoded."""
        accepts = getattr(self.app, "accepts", None)
        if accepts is None:
            return True
        ce_type = next((v for k, v in record.headers or () if k == "ce_type"), None)
        cls = event_class_for(ce_type.decode(errors="replace")) if ce_type else None
        return cls is None or bool(accepts(cls))  # unknown types go on to the DLQ

    async def _skip_through(self, name: str, next_offset: int, skipped: int) -> None:
        """Move past ignored records; persist that only now and then (re-skipping is cheap)."""
        self._next[name] = next_offset
        self._unsaved_skips[name] = self._unsaved_skips.get(name, 0) + skipped
        if self._unsaved_skips[name] >= SKIPS_PER_TRACKING_WRITE:
            await self._commit_tracking_only(name, next_offset)

    async def _apply(
        self, name: str, batch: list[tuple[ConsumerRecord[Any, Any], InboundMessage]]
    ) -> None:
        """Apply a batch in one transaction; on failure isolate the failing record."""
        if not batch:
            return
        try:
            await self._commit(name, batch)
        except Exception:
            if len(batch) == 1:
                await self._apply_one_with_retries(name, batch[0])
            else:
                for item in batch:
                    await self._apply(name, [item])

    async def _commit(
        self, name: str, batch: list[tuple[ConsumerRecord[Any, Any], InboundMessage]]
    ) -> None:
        """One transaction; retries forever while the database is unreachable."""
        batch = [item for item in batch if item[0].offset >= self._next.get(name, 0)]
        if not batch:
            return
        tracking = Tracking(name, batch[-1][0].offset + 1)
        messages = [m for _, m in batch]
        delay = self.backoff_s
        began = time.perf_counter()
        while True:
            try:
                await asyncio.to_thread(self.app.process_messages, messages, tracking)
                break
            except _TRANSIENT as exc:
                metrics.INBOX_RETRIES.labels(self.group_id, batch[0][0].topic, "database").inc()
                log.warning("database unavailable, retrying", error=str(exc), delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except IntegrityError:
                # Either another consumer tracked these offsets already (a duplicate),
                # or an aggregate changed under us (a conflict worth retrying).
                position = await self.tracked_position(TopicPartition(*_split(name)))
                if position is not None and position >= tracking.notification_id:
                    metrics.INBOX_DUPLICATES.labels(self.group_id, batch[0][0].topic).inc(
                        len(batch)
                    )
                    return
                raise
        self._next[name] = tracking.notification_id
        metrics.INBOX_BATCH_SECONDS.labels(self.group_id).observe(time.perf_counter() - began)
        metrics.INBOX_APPLIED.labels(self.group_id, batch[0][0].topic).inc(len(batch))

    async def _apply_one_with_retries(
        self, name: str, item: tuple[ConsumerRecord[Any, Any], InboundMessage]
    ) -> None:
        record, message = item
        last_error: BaseException | None = None
        for attempt in range(1, self.max_attempts + 1):
            structlog.contextvars.bind_contextvars(event_type=message.envelope.type)
            try:
                await self._commit(name, [item])
                return
            except Exception as exc:
                last_error = exc
                metrics.INBOX_RETRIES.labels(self.group_id, record.topic, "handler").inc()
                log.warning(
                    "record failed",
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        assert last_error is not None
        detail = "".join(traceback.format_exception_only(last_error)).strip()
        await self._dead_letter(name, record, "handler-failed", detail, attempts=self.max_attempts)

    async def _dead_letter(
        self, name: str, record: ConsumerRecord[Any, Any], reason: str, detail: str, attempts: int
    ) -> None:
        """Publish the record to the DLQ, then track its offset: the partition flows on."""
        dlq_topic = topics.dlq(record.topic, self.group_id)
        headers = list(record.headers or ()) + [
            (key, value.encode())
            for key, value in {
                "dlq_reason": reason,
                "dlq_error": detail[:2000],
                "dlq_consumer": self.group_id,
                "dlq_original_topic": record.topic,
                "dlq_original_partition": str(record.partition),
                "dlq_original_offset": str(record.offset),
                "dlq_attempts": str(attempts),
                "dlq_failed_at": datetime.now(UTC).isoformat(),
            }.items()
        ]
        assert self._dlq_producer is not None, "Inbox.start() was not called"
        delay = self.backoff_s
        while True:
            try:
                await asyncio.wait_for(
                    self._dlq_producer.send_and_wait(
                        dlq_topic, value=record.value, key=record.key, headers=headers
                    ),
                    30,
                )
                break
            except Exception as exc:  # the DLQ must get it: keep trying, never drop
                log.error("dead-letter publish failed, retrying", error=str(exc), topic=dlq_topic)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        metrics.DLQ_PUBLISHED.labels(self.group_id, record.topic, reason).inc()
        log.error(
            "record dead-lettered",
            reason=reason,
            detail=detail[:500],
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            dlq_topic=dlq_topic,
        )
        await self._commit_tracking_only(name, record.offset + 1)

    async def _commit_tracking_only(self, name: str, next_offset: int) -> None:
        self._unsaved_skips[name] = 0
        delay = self.backoff_s
        while True:
            try:
                await asyncio.to_thread(self.app.process_messages, [], Tracking(name, next_offset))
                break
            except _TRANSIENT:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except IntegrityError:
                break  # someone else tracked past it already
        self._next[name] = max(self._next.get(name, 0), next_offset)


def _split(name: str) -> tuple[str, int]:
    """(topic, partition) from a tracking name `group:topic:partition`."""
    _, topic, partition = name.rsplit(":", 2)
    return topic, int(partition)
