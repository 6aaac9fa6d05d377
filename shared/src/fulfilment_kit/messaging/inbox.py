"""Inbox: apply Kafka records through eventsourcing with the offset tracked in the same transaction.

Tracking name `group:topic:partition`, tracking id = the *next* offset to read. The
database, not Kafka's committed offset, says where a consumer resumes. A record whose
offset is already tracked is a duplicate and has no second effect. A record that cannot
be decoded, or keeps failing, goes to the consumer's DLQ topic with headers saying why,
and its offset is tracked so the partition keeps flowing (or, with on_failure="stop", the
partition stops at it). What cannot be applied now (database down, a conflict, a fenced
write, a retention gap) is reported so the consumer seeks back: nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import traceback
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, ClassVar, Literal, Protocol, TypeVar
from uuid import UUID

import psycopg
import pydantic
import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import (
    Aggregate,
    BaseAggregate,
    DomainEventProtocol,
    MutableOrImmutableAggregate,
)
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    JSONTranscoder,
    OperationalError,
    ProcessRecorder,
    Recording,
    Tracking,
    Transcoder,
)
from psycopg_pool import PoolTimeout

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.contracts.registry import event_class_for
from fulfilment_kit.messaging import cloudevents, kafka
from fulfilment_kit.messaging.policy import Prefetch, Reaction, reactions_of, subscriptions_of
from fulfilment_kit.observability import metrics
from fulfilment_kit.persistence.availability import wait_for_database
from fulfilment_kit.persistence.batch_load import AggregateCache, load_aggregates
from fulfilment_kit.persistence.fencing import FencedTracking, TrackingSet, fenced_process_recorder
from fulfilment_kit.persistence.transcodings import FastJSONTranscoder, register_dataclasses
from fulfilment_kit.settings import KafkaSettings, ServiceSettings, read_settings
from fulfilment_kit.tracing import Trace, stamp

log = structlog.get_logger(__name__)
# The per-record story line has its own logger proxy: structlog caches a proxy's
# configuration on first use, and this one is used on every record.
_story = structlog.get_logger(__name__)

TAggregate = TypeVar("TAggregate", bound=Aggregate)
Processing = ProcessingEvent[UUID]
"""What a policy handler collects the events it causes on (saved with the batch's tracking)."""


@dataclass(frozen=True)
class InboundMessage:
    """One decoded record and where it came from."""

    envelope: cloudevents.Envelope
    topic: str
    partition: int
    offset: int


class MessageProcessor(Protocol):
    """What an Inbox applies records with: a ProcessApplication, or a projection.

    `process_messages` must record `tracking` in the same transaction as the effects of
    `messages` and raise eventsourcing's IntegrityError when the tracking position is not
    ahead of the recorded one (so an offset is never applied twice). A processor that sets
    `applies_across_partitions = True` is also given a `TrackingSet`: the messages of several
    partitions (each partition's in offset order) and every one of their positions.
    """

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        """Apply `messages` and record `tracking`, atomically."""

    def next_offset(self, tracking_name: str) -> int | None:
        """The next offset to read for `tracking_name` (None: nothing tracked yet)."""


class ProcessApplication(Application[UUID]):
    """A process application: its policy reacts to other services' messages, and its recorder
    records the events it causes with the inbox's tracking, atomically.

    The policy is its `@policy(EventType, ...)` handlers, each called as
    `handler(event, message, processing)` by `handle`; from them the kit derives `reacts_to`,
    the aggregates to prefetch (the handler's `prefetch`, else the class's) and the topics
    to subscribe to (`subscriptions()`)."""

    recorder: ProcessRecorder
    reacts_to: ClassVar[tuple[type[IntegrationEvent], ...]] = ()
    """The public event types it reacts to: derived from its @policy handlers (empty: an
    application with a hand-written `handle` that sees every event)."""
    reactions: ClassVar[dict[type[IntegrationEvent], Reaction]] = {}
    prefetch: ClassVar[Prefetch | None] = None
    """The aggregates a handler without its own `prefetch` loads (e.g. `by_order(...)`)."""
    applies_across_partitions: ClassVar[bool] = True
    """Its recorder records a `TrackingSet`: one transaction serves a whole fetched batch."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.reactions = reactions_of(cls)
        if cls.reactions:
            if "reacts_to" in vars(cls):
                raise TypeError(f"{cls.__name__}: reacts_to is derived from its @policy handlers")
            cls.reacts_to = tuple(cls.reactions)

    @classmethod
    def subscriptions(cls) -> tuple[str, ...]:
        """The topics that carry what its policies react to."""
        return subscriptions_of(cls)

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        # Aggregates prefetched for the batch being processed, by id(ProcessingEvent).
        self._prefetched: dict[int, tuple[set[UUID], dict[UUID, Any]]] = {}
        self.aggregate_cache = AggregateCache(
            read_settings(ServiceSettings, self.env).aggregate_cache_size
        )
        """Aggregates as last loaded or saved here: a load reads only the newer events."""

    def construct_recorder(self) -> ProcessRecorder:
        # Fenced tracking writes: a revoked consumer cannot commit over the new owner.
        recorder: ProcessRecorder = wait_for_database(
            lambda: fenced_process_recorder(self.factory),
            what=f"{self.name} event store",
            timeout_s=ServiceSettings().startup_database_wait_s,
        )
        return recorder

    def handle(self, message: InboundMessage, processing: ProcessingEvent[UUID]) -> None:
        """The service's policy: react to one message by collecting events on `processing`."""
        self.react(message.envelope.event, message, processing)

    def react(self, event: IntegrationEvent, *args: Any) -> Any:
        """Call the @policy handler of `event`'s type with `(event, *args)` (none: None)."""
        reaction = self._reaction(type(event))
        return None if reaction is None else getattr(self, reaction.handler.__name__)(event, *args)

    def _reaction(self, event_type: type[IntegrationEvent]) -> Reaction | None:
        for klass in event_type.__mro__:
            if (reaction := self.reactions.get(klass)) is not None:
                return reaction
        return None

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        """Apply messages and record their events with `tracking`, atomically."""
        processing: ProcessingEvent[UUID] = _BatchProcessing(tracking=tracking)
        wanted = {i for message in messages for i in self.aggregate_ids(message)}
        # One query for the whole batch instead of one per message and aggregate; the
        # aggregates cached are taken (this batch owns them) and read only from their version.
        loaded = load_aggregates(self, wanted, self.aggregate_cache)
        then = {i for m in messages for i in self.aggregate_ids_then(m, loaded)} - wanted
        if then:
            loaded.update(load_aggregates(self, then, self.aggregate_cache))
            wanted |= then
        self._prefetched[id(processing)] = (wanted, loaded)
        try:
            for message in messages:
                collected = len(processing.events)
                with _log_context(message):
                    self.handle(message, processing)
                envelope = message.envelope
                reaction = Trace.caused_by(envelope.id, envelope.correlation_id)
                stamp(reaction, processing.events[collected:])
            recordings = self._record(processing)
        except BaseException:
            # Objects a failed batch changed in place are not the stored state: forget them.
            self.aggregate_cache.evict([*wanted, *processing.aggregates])
            raise
        finally:
            del self._prefetched[id(processing)]
        self._take_snapshots(processing)
        # Committed: what the batch loaded, changed or created is the stored state now (put
        # back only after the snapshots: another thread may take them from the cache at once).
        self.aggregate_cache.put([*loaded.values(), *processing.aggregates.values()])
        self._notify(recordings)

    def save(
        self,
        *objs: MutableOrImmutableAggregate[UUID] | DomainEventProtocol[UUID] | None,
        trace: Trace | None = None,
        **kwargs: Any,
    ) -> list[Recording[UUID]]:
        """Save `objs`, their new events stamped with `trace` (the command's causal context).

        eventsourcing's `Application.save`, collecting with `_BatchProcessing` (no runtime
        Protocol check per aggregate: ~45 us each, for every command and worker save)."""
        if trace is not None:
            stamp(trace, (e for obj in objs for e in getattr(obj, "pending_events", ())))
        processing = _BatchProcessing()
        processing.collect_events(*objs, **kwargs)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        self.notify(processing.events)  # eventsourcing's deprecated hook, as its save calls it
        return recordings

    def construct_transcoder(self) -> Transcoder:
        """The factory's transcoder; its default JSON one decoding with orjson (same objects)."""
        transcoder = self.factory.transcoder()
        if type(transcoder) is JSONTranscoder:
            transcoder = FastJSONTranscoder()
        if isinstance(transcoder, JSONTranscoder):
            self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_dataclasses(transcoder, Trace)  # stamped on every event

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshot each aggregate whose saved events reach a multiple of its interval, from
        the object just saved (its state is the committed one), at the version it reached.

        eventsourcing's `take_snapshot` loads the aggregate again (its previous snapshot and
        up to an interval of events: two queries and the decoding) to snapshot it exactly at
        the multiple; any committed version serves a later load as well."""
        if not (self.snapshots and self.snapshotting_intervals):
            return
        due: dict[UUID, Any] = {}
        for event in processing_event.events:
            aggregate: Any = processing_event.aggregates.get(event.originator_id)
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval is not None and event.originator_version % interval == 0:
                due[event.originator_id] = aggregate
        snapshots = []
        for aggregate in due.values():
            if getattr(aggregate, "pending_events", None):  # not the saved state: load it
                self.take_snapshot(aggregate.id, version=aggregate.version)
                continue
            snapshot_class = getattr(type(aggregate), "Snapshot", type(self).snapshot_class)
            assert snapshot_class is not None, f"{type(aggregate).__name__} has no snapshot class"
            snapshots.append(snapshot_class.take(aggregate))
        if snapshots:
            self.snapshots.put(snapshots)

    def accepts(self, event_type: type[IntegrationEvent]) -> bool:
        """Whether this consumer reacts to `event_type`; others are skipped undecoded."""
        return not self.reacts_to or issubclass(event_type, self.reacts_to)

    def aggregate_ids(self, message: InboundMessage) -> Iterable[UUID]:
        """Ids of the aggregates `handle(message)` will load: fetched with one query a batch."""
        event = message.envelope.event
        reaction = self._reaction(type(event))
        prefetch = reaction.prefetch if reaction is not None else None
        prefetch = prefetch or type(self).prefetch
        return () if reaction is None or prefetch is None else prefetch(event)

    def aggregate_ids_then(
        self, message: InboundMessage, loaded: Mapping[UUID, Any]
    ) -> Iterable[UUID]:
        """Ids of the further aggregates `handle(message)` will load, found from `loaded`."""
        event = message.envelope.event
        reaction = self._reaction(type(event))
        then = reaction.prefetch_then if reaction is not None else None
        return () if then is None else then(event, loaded)

    def get_for_update(
        self, processing: ProcessingEvent[UUID], aggregate_id: UUID, cls: type[TAggregate]
    ) -> TAggregate | None:
        """The aggregate as changed so far in this batch, else as stored, else None."""
        pending = processing.aggregates.get(aggregate_id)
        if pending is not None:
            assert isinstance(pending, cls)
            return pending
        batch = self._prefetched.get(id(processing))
        if batch is None:
            return self.find(aggregate_id, cls)
        wanted, loaded = batch
        if aggregate_id not in wanted:  # not prefetched: loaded now, kept for the batch
            loaded.update(load_aggregates(self, [aggregate_id], self.aggregate_cache))
            wanted.add(aggregate_id)
        aggregate = loaded.get(aggregate_id)  # the same object all batch long, changes included
        assert aggregate is None or isinstance(aggregate, cls)
        return aggregate

    def get_many_for_update(
        self, processing: ProcessingEvent[UUID], ids: Sequence[UUID], cls: type[TAggregate]
    ) -> list[TAggregate | None]:
        """`get_for_update` of several aggregates, loading those not at hand with one query."""
        batch = self._prefetched.get(id(processing))
        if batch is not None:
            wanted, loaded = batch
            missing = [i for i in ids if i not in processing.aggregates and i not in wanted]
            loaded.update(load_aggregates(self, missing, self.aggregate_cache))
            wanted.update(missing)
        return [self.get_for_update(processing, i, cls) for i in ids]

    def find(self, aggregate_id: UUID, cls: type[TAggregate]) -> TAggregate | None:
        """The stored aggregate, or None when it does not exist: a private copy the caller
        may change and save (the cached one, brought up to date, stays in the cache).

        Replays the events itself: the repository's projection checks a runtime Protocol per
        event, which was a tenth of a busy consumer's time."""
        aggregate = self.read_aggregates([aggregate_id]).get(aggregate_id)
        assert aggregate is None or isinstance(aggregate, cls), f"{aggregate_id} is {aggregate!r}"
        return aggregate

    def read_aggregates(self, ids: Collection[UUID]) -> dict[UUID, Any]:
        """The stored state of each aggregate in `ids` that exists (one query), as private
        copies: through the cache, which keeps the originals, brought up to date."""
        loaded = load_aggregates(self, ids, self.aggregate_cache)
        if self.aggregate_cache.maxsize <= 0:
            return loaded
        copies = {i: copy.deepcopy(aggregate) for i, aggregate in loaded.items()}
        self.aggregate_cache.put(loaded.values())
        return copies

    def next_offset(self, tracking_name: str) -> int | None:
        return self.recorder.max_tracking_id(tracking_name)


class _BatchProcessing(ProcessingEvent[UUID]):
    """A ProcessingEvent that tells aggregates by their class: eventsourcing's
    `collect_events` checks runtime Protocols (`isinstance` walks their attributes), which
    was a twentieth of a busy consumer's samples."""

    def collect_events(
        self,
        *objs: MutableOrImmutableAggregate[UUID] | DomainEventProtocol[UUID] | None,
        **kwargs: Any,
    ) -> None:
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            elif obj is not None:
                super().collect_events(obj)
        self.saved_kwargs.update(kwargs)


# Former names, for branches written before the rename; remove once none uses them.
InboxApplication = ProcessApplication
Applier = MessageProcessor


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
        # One line per record handled, so grepping a correlation id tells an order's story
        # in every service (a service's own lines for the step follow with the same context).
        _story.info("handling event")
        yield


OnFailure = Literal["dead_letter", "stop"]
"""What a consumer does with a record its handler keeps failing on: `dead_letter` (to the
consumer's DLQ topic, the partition flows on) or `stop` (the partition stops at it and is
retried with backoff; read models, which must never miss an event the producers accepted)."""

SKIPS_PER_TRACKING_WRITE = 5000


class PartitionBlocked(Exception):
    """The inbox could not get past `resume_at` on `tp`: the consumer must seek back there.

    kind: database (unreachable or failing over), conflict (optimistic concurrency, still
    conflicting after retries), moved (another writer moved the tracking position: fenced),
    handler (on_failure="stop" and the handler fails), gap (retention deleted records that
    were never applied), kafka (the log start could not be read to rule out a gap), error
    (an unexpected failure of the inbox itself: held and retried, never skipped).
    """

    def __init__(
        self, tp: TopicPartition, kind: str, resume_at: int | None, reason: str, lost: int = 0
    ) -> None:
        super().__init__(f"{tp.topic}/{tp.partition} blocked ({kind}): {reason}")
        self.tp = tp
        self.kind = kind
        self.resume_at = resume_at
        self.reason = reason
        self.lost = lost


@dataclass
class _ReadyPartition:
    """One partition's part of a fetched batch, checked and decoded, not yet applied."""

    tp: TopicPartition
    name: str
    records: list[ConsumerRecord[Any, Any]]
    batch: list[tuple[ConsumerRecord[Any, Any], InboundMessage]] = field(default_factory=list)
    skipped_through: int = 0
    skipped: int = 0


class InboxBlocked(Exception):
    """Raised by `Inbox.handle_records` when some partitions could not be applied."""

    def __init__(self, failures: Sequence[PartitionBlocked]) -> None:
        super().__init__("; ".join(str(f) for f in failures))
        self.failures = list(failures)


LogStart = Callable[[Sequence[TopicPartition]], Awaitable[Mapping[TopicPartition, int]]]
"""Reads the log start offsets of partitions (the consumer's `beginning_offsets`)."""

# SQLSTATEs that mean "the database cannot answer right now", not "this record is bad":
# connection (08), resources (53), operator intervention/shutdown (57P), read-only during a
# failover (25006), serialization failure and deadlock (40001, 40P01).
_TRANSIENT_SQLSTATES = ("08", "53", "57P", "25006", "40001", "40P01")


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` means the database is unavailable (retry), not that the record is bad."""
    if isinstance(exc, (OperationalError, InterfaceError, ConnectionError, TimeoutError)):
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)):
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATES):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_conflict(exc: IntegrityError) -> bool:
    """An optimistic-concurrency conflict (a unique version taken meanwhile), not a bad row."""
    cause = exc.__cause__
    if isinstance(cause, psycopg.Error):
        return cause.sqlstate == "23505"  # unique_violation: (originator_id, version)
    return True  # eventsourcing's own (in-memory) version and tracking checks


def safe_reason(exc: BaseException) -> str:
    """The exception class and a bounded reason that never quotes a payload.

    PostgreSQL's messages quote the failing values (fragments of the event JSON) and
    pydantic's quote the input, so only their codes and field locations are kept."""
    name = type(exc).__name__
    cause = exc.__cause__
    for candidate in (exc, cause):
        sqlstate = getattr(candidate, "sqlstate", None)
        if isinstance(sqlstate, str):
            return f"{name} (sqlstate {sqlstate}, {type(candidate).__name__})"
        if isinstance(candidate, pydantic.ValidationError):
            fields = ", ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['type']}" for e in candidate.errors()
            )
            return f"{name}: invalid {candidate.title} ({fields})"[:300]
    if isinstance(exc, cloudevents.DecodeError):
        return f"{name}: {str(exc).split(':', 1)[0]}"[:200]
    return name


def _safe_ce_type(record: ConsumerRecord[Any, Any]) -> str:
    ce_type = next((v for k, v in record.headers or () if k == "ce_type"), b"")
    text = ce_type.decode(errors="replace")[:120]
    return text if all(c.isalnum() or c in ".-_" for c in text) else "(not printable)"


class Inbox:
    """Applies batches of records of one consumer group, partition by partition.

    It never moves past an offset it has not applied, skipped on purpose (a type its
    consumer ignores or does not know) or dead-lettered: whatever it cannot apply is
    reported as `PartitionBlocked` with the offset to seek back to (see consumer.py)."""

    def __init__(
        self,
        *,
        app: MessageProcessor,
        group_id: str,
        kafka_settings: KafkaSettings,
        max_attempts: int = 5,
        backoff_s: float = 0.2,
        on_failure: OnFailure = "dead_letter",
    ) -> None:
        self.app = app
        self.group_id = group_id
        self.kafka_settings = kafka_settings
        self._dlq_producer: AIOKafkaProducer | None = None
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.on_failure: OnFailure = on_failure
        self.log_start: LogStart | None = None
        """Set by the consumer wiring: lets the inbox tell a retention gap from a marker."""
        self._next: dict[str, int] = {}  # next offset to apply (skips included)
        self._saved: dict[str, int | None] = {}  # tracking position as recorded in the database
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
        self._saved[name] = position
        self._unsaved_skips.pop(name, None)
        if position is None:
            self._next.pop(name, None)
        else:
            self._next[name] = position
        return position

    def next_offset(self, tp: TopicPartition) -> int:
        """The next offset this consumer will apply on `tp` (0 before anything is known)."""
        return self._next.get(self.tracking_name(tp.topic, tp.partition), 0)

    def knows(self, tp: TopicPartition) -> bool:
        """Whether the tracked position of `tp` has been read from the database."""
        return self.tracking_name(tp.topic, tp.partition) in self._saved

    def forget(self, tp: TopicPartition) -> None:
        name = self.tracking_name(tp.topic, tp.partition)
        self._next.pop(name, None)
        self._saved.pop(name, None)
        self._unsaved_skips.pop(name, None)

    async def handle_records(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Apply records (from any partitions); returns when each is applied or dead-lettered,
        else raises InboxBlocked naming the partitions to seek back."""
        failures = await self.apply_records(records)
        if failures:
            raise InboxBlocked(failures)

    async def apply_records(
        self, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> list[PartitionBlocked]:
        """Apply records; returns the partitions that are blocked.

        Each partition's records are checked and decoded first; then the batches of all
        partitions go in one transaction when the processor allows it (one commit, one
        load, one wake-up per fetched batch instead of one per partition). If that fails
        they are applied partition by partition, which tells which one fails and why."""

        def by_tp(r: ConsumerRecord[Any, Any]) -> tuple[str, int]:
            return (r.topic, r.partition)

        failures: list[PartitionBlocked] = []
        database_down: PartitionBlocked | None = None
        ready: list[_ReadyPartition] = []
        for (topic, partition), group in groupby(sorted(records, key=by_tp), key=by_tp):
            ordered = sorted(group, key=lambda r: r.offset)
            tp = TopicPartition(topic, partition)
            if database_down is not None:  # do not wait for the same outage once per partition
                failures.append(self._down(tp, ordered, database_down))
                continue
            try:
                ready.append(await self._prepare_partition(tp, ordered))
            except Exception as exc:
                failures.append(blocked := self._blocked(tp, ordered, exc))
                if blocked.kind == "database":
                    database_down = blocked
        together = [r for r in ready if r.batch]
        if database_down is None and len(together) > 1 and self._together:
            try:
                await self._commit_together(together)
            except Exception as exc:
                if is_transient(exc):
                    metrics.INBOX_RETRIES.labels(
                        self.group_id, together[0].tp.topic, "database"
                    ).inc()
                    database_down = PartitionBlocked(
                        together[0].tp, "database", None, safe_reason(exc)
                    )
        for r in ready:
            if database_down is not None:
                failures.append(self._down(r.tp, r.records, database_down))
                continue
            try:
                await self._finish_partition(r)
            except Exception as exc:
                failures.append(blocked := self._blocked(r.tp, r.records, exc))
                if blocked.kind == "database":
                    database_down = blocked
        return failures

    @property
    def _together(self) -> bool:
        return bool(getattr(self.app, "applies_across_partitions", False))

    def _down(
        self,
        tp: TopicPartition,
        records: Sequence[ConsumerRecord[Any, Any]],
        outage: PartitionBlocked,
    ) -> PartitionBlocked:
        return PartitionBlocked(tp, "database", self.resume_at(tp, records), outage.reason)

    def _blocked(
        self, tp: TopicPartition, records: Sequence[ConsumerRecord[Any, Any]], exc: Exception
    ) -> PartitionBlocked:
        """Why `tp` cannot go on after `exc`: the inbox never skips what it could not apply."""
        if isinstance(exc, PartitionBlocked):
            return exc
        resume_at = self.resume_at(tp, records)
        if not is_transient(exc):  # a bug here must not skip the batch either
            log.exception("inbox failed on a batch", topic=tp.topic, partition=tp.partition)
            return PartitionBlocked(tp, "error", resume_at, safe_reason(exc))
        return PartitionBlocked(tp, "database", resume_at, safe_reason(exc))

    def resume_at(self, tp: TopicPartition, records: Sequence[ConsumerRecord[Any, Any]]) -> int:
        """Where to seek `tp` back to after `records` (some of them on `tp`) were not applied."""
        name = self.tracking_name(tp.topic, tp.partition)
        if name in self._next:
            return self._next[name]
        mine = [r.offset for r in records if (r.topic, r.partition) == (tp.topic, tp.partition)]
        return min(mine) if mine else 0

    async def _prepare_partition(
        self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]
    ) -> _ReadyPartition:
        """Check and decode one partition's records. An undecodable one is dead-lettered in
        its place (what came before it is applied first): the rest waits in the result."""
        topic, partition = tp.topic, tp.partition
        name = self.tracking_name(topic, partition)
        if name not in self._saved:
            await self.tracked_position(tp)
        fresh = [r for r in records if r.offset >= self._next.get(name, 0)]
        if len(fresh) < len(records):
            metrics.INBOX_DUPLICATES.labels(self.group_id, topic).inc(len(records) - len(fresh))
        if fresh:
            await self._check_no_gap(tp, name, fresh[0].offset)
        ready = _ReadyPartition(tp, name, records)
        for record in fresh:
            kind = self._kind(record)
            if kind != "apply":
                if kind == "unknown":
                    metrics.INBOX_UNKNOWN_TYPES.labels(self.group_id, topic).inc()
                    log.info(
                        "unknown event type skipped (tolerant reader)",
                        ce_type=_safe_ce_type(record),
                        topic=topic,
                        partition=partition,
                        offset=record.offset,
                    )
                ready.skipped_through, ready.skipped = record.offset + 1, ready.skipped + 1
                continue
            try:
                envelope = cloudevents.decode(record.value, record.headers)
            except cloudevents.DecodeError as exc:
                await self._apply(name, ready.batch)
                ready.batch = []
                await self._dead_letter(name, record, "undecodable", exc, attempts=1)
                continue
            ready.batch.append((record, InboundMessage(envelope, topic, partition, record.offset)))
        return ready

    async def _finish_partition(self, ready: _ReadyPartition) -> None:
        """Apply what `_prepare_partition` left (if not applied together) and move past skips."""
        await self._apply(ready.name, ready.batch)
        if ready.skipped_through > self._next.get(ready.name, 0):
            await self._skip_through(ready.name, ready.skipped_through, ready.skipped)

    async def _commit_together(self, ready: Sequence[_ReadyPartition]) -> None:
        """The batches of several partitions in one transaction, each position fenced."""
        positions = [
            FencedTracking(r.name, r.batch[-1][0].offset + 1, expected=self._saved.get(r.name))
            for r in ready
        ]
        messages = [m for r in ready for _, m in r.batch]
        began = time.perf_counter()
        await asyncio.to_thread(self.app.process_messages, messages, TrackingSet.of(positions))
        for r, position in zip(ready, positions, strict=True):
            self._next[r.name] = self._saved[r.name] = position.notification_id
            self._unsaved_skips[r.name] = 0
            metrics.INBOX_APPLIED.labels(self.group_id, r.tp.topic).inc(len(r.batch))
            r.batch = []
        metrics.INBOX_BATCH_SECONDS.labels(self.group_id).observe(time.perf_counter() - began)

    async def _check_no_gap(self, tp: TopicPartition, name: str, first: int) -> None:
        """A jump past the next offset is a transaction marker, an aborted transaction, or
        records deleted by retention before they were applied: only the log start tells.

        A jump of one is the marker a transactional producer (the relay) leaves after each
        transaction: not checked, because a ListOffsets request waits behind the consumer's
        long-polling fetch (~0.5 s, measured) and nearly every batch starts after a marker."""
        expected = self._next.get(name, 0)
        if expected == 0 or first <= expected + 1 or self.log_start is None:
            return
        try:
            start = (await self.log_start([tp]))[tp]
        except Exception as exc:
            raise PartitionBlocked(
                tp,
                "kafka",
                expected,
                f"cannot read the log start: {type(exc).__name__}: {exc}"[:200],
            ) from exc
        if start > expected:
            raise PartitionBlocked(
                tp,
                "gap",
                expected,
                f"tracked offset {expected} is below the log start offset {start}",
                lost=start - expected,
            )

    def _kind(self, record: ConsumerRecord[Any, Any]) -> Literal["apply", "ignore", "unknown"]:
        """apply, ignore (a type this consumer does not react to: not even decoded) or
        unknown (a type from a newer producer: skipped and counted, tolerant reader)."""
        ce_type = next((v for k, v in record.headers or () if k == "ce_type"), None)
        if ce_type is None:
            return "apply"  # not a CloudEvent: decoding says why, and it goes to the DLQ
        cls = event_class_for(ce_type.decode(errors="replace"))
        if cls is None:
            return "unknown"
        accepts = getattr(self.app, "accepts", None)
        return "apply" if accepts is None or accepts(cls) else "ignore"

    async def _skip_through(self, name: str, next_offset: int, skipped: int) -> None:
        """Move past skipped records; persist that only now and then (re-skipping is cheap)."""
        self._next[name] = next_offset
        self._unsaved_skips[name] = self._unsaved_skips.get(name, 0) + skipped
        if self._unsaved_skips[name] >= SKIPS_PER_TRACKING_WRITE:
            await self._commit_tracking_only(name, next_offset)

    async def _apply(
        self, name: str, batch: list[tuple[ConsumerRecord[Any, Any], InboundMessage]]
    ) -> None:
        """Apply a batch in one transaction; on a handler failure isolate the failing record."""
        if not batch:
            return
        try:
            await self._commit(name, batch)
        except PartitionBlocked:
            raise
        except Exception:
            if len(batch) == 1:
                await self._apply_one_with_retries(name, batch[0])
            else:
                for item in batch:
                    await self._apply(name, [item])

    async def _reread(self, tp: TopicPartition, resume_at: int) -> int | None:
        try:
            return await self.tracked_position(tp)
        except Exception as exc:
            if is_transient(exc):
                raise PartitionBlocked(tp, "database", resume_at, safe_reason(exc)) from exc
            raise

    async def _commit(
        self, name: str, batch: list[tuple[ConsumerRecord[Any, Any], InboundMessage]]
    ) -> None:
        """One transaction, fenced on the recorded position; retries conflicts, never past them."""
        batch = [item for item in batch if item[0].offset >= self._next.get(name, 0)]
        if not batch:
            return
        topic = batch[0][0].topic
        tp = TopicPartition(topic, batch[0][0].partition)
        messages = [m for _, m in batch]
        began = time.perf_counter()
        conflicts = 0
        while True:
            resume_at = self._next.get(name, batch[0][0].offset)
            tracking = FencedTracking(name, batch[-1][0].offset + 1, expected=self._saved.get(name))
            try:
                await asyncio.to_thread(self.app.process_messages, messages, tracking)
                break
            except IntegrityError as exc:
                position = await self._reread(tp, resume_at)
                if position is not None and position >= tracking.notification_id:
                    # Another consumer (the partition's new owner) applied them already.
                    metrics.INBOX_DUPLICATES.labels(self.group_id, topic).inc(len(batch))
                    return
                if position != tracking.expected:
                    metrics.INBOX_FENCED.labels(self.group_id, topic).inc()
                    raise PartitionBlocked(
                        tp, "moved", position or 0, "tracking moved by another writer"
                    ) from exc
                if not _is_conflict(exc):
                    raise
                conflicts += 1
                metrics.INBOX_RETRIES.labels(self.group_id, topic, "conflict").inc()
                if conflicts >= self.max_attempts:
                    raise PartitionBlocked(tp, "conflict", resume_at, safe_reason(exc)) from exc
                await asyncio.sleep(self.backoff_s * 2 ** (conflicts - 1))  # reloads, retries
            except Exception as exc:
                if is_transient(exc):
                    metrics.INBOX_RETRIES.labels(self.group_id, topic, "database").inc()
                    raise PartitionBlocked(tp, "database", resume_at, safe_reason(exc)) from exc
                raise
        self._next[name] = self._saved[name] = tracking.notification_id
        self._unsaved_skips[name] = 0
        metrics.INBOX_BATCH_SECONDS.labels(self.group_id).observe(time.perf_counter() - began)
        metrics.INBOX_APPLIED.labels(self.group_id, topic).inc(len(batch))

    async def _apply_one_with_retries(
        self, name: str, item: tuple[ConsumerRecord[Any, Any], InboundMessage]
    ) -> None:
        record, message = item
        last_error: BaseException | None = None
        # With on_failure="stop" the consumer's backoff retries it (the partition is paused).
        attempts = self.max_attempts if self.on_failure == "dead_letter" else 1
        for attempt in range(1, attempts + 1):
            structlog.contextvars.bind_contextvars(event_type=message.envelope.type)
            try:
                await self._commit(name, [item])
                return
            except PartitionBlocked:
                raise
            except Exception as exc:
                last_error = exc
                metrics.INBOX_RETRIES.labels(self.group_id, record.topic, "handler").inc()
                log.warning(
                    "record failed",
                    attempt=attempt,
                    error=safe_reason(exc),
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
                if attempt < attempts:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        assert last_error is not None
        if self.on_failure == "stop":
            raise PartitionBlocked(
                TopicPartition(record.topic, record.partition),
                "handler",
                record.offset,
                safe_reason(last_error),
            ) from last_error
        await self._dead_letter(name, record, "handler-failed", last_error, attempts=attempts)

    async def _dead_letter(
        self,
        name: str,
        record: ConsumerRecord[Any, Any],
        reason: str,
        error: BaseException,
        attempts: int,
    ) -> None:
        """Publish the record to the DLQ, then track its offset: the partition flows on."""
        dlq_topic = topics.dlq(record.topic, self.group_id)
        detail = "".join(traceback.format_exception_only(error)).strip()
        headers = [(k, v) for k, v in record.headers or () if not k.startswith("dlq_")] + [
            (key, value.encode())
            for key, value in {
                "dlq_reason": reason,
                "dlq_error": detail[:2000],  # the DLQ holds the payload anyway (access-controlled)
                "dlq_error_class": type(error).__name__,
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
                log.error(
                    "dead-letter publish failed, retrying", error=safe_reason(exc), topic=dlq_topic
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        metrics.DLQ_PUBLISHED.labels(self.group_id, record.topic, reason).inc()
        log.error(
            "record dead-lettered",
            reason=reason,
            error=safe_reason(error),  # never the message: it can quote the payload
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            dlq_topic=dlq_topic,
        )
        await self._commit_tracking_only(name, record.offset + 1, resume_at=record.offset)

    async def _commit_tracking_only(
        self, name: str, next_offset: int, resume_at: int | None = None
    ) -> None:
        topic, partition = _split(name)
        tp = TopicPartition(topic, partition)
        tracking = FencedTracking(name, next_offset, expected=self._saved.get(name))
        back = self._next.get(name, 0) if resume_at is None else resume_at
        try:
            await asyncio.to_thread(self.app.process_messages, [], tracking)
            self._saved[name] = next_offset
        except IntegrityError as exc:
            position = await self._reread(tp, back)
            if position is None or position < next_offset:
                metrics.INBOX_FENCED.labels(self.group_id, topic).inc()
                raise PartitionBlocked(
                    tp, "moved", position or 0, "tracking moved by another writer"
                ) from exc
        except Exception as exc:
            if is_transient(exc):
                raise PartitionBlocked(tp, "database", back, safe_reason(exc)) from exc
            raise
        self._unsaved_skips[name] = 0
        self._next[name] = max(self._next.get(name, 0), next_offset)

    def replay_name(self, letter: DeadLetter) -> str:
        return f"{self.group_id}:replay:{letter.topic}:{letter.partition}:{letter.offset}"

    async def replayed(self, letter: DeadLetter) -> bool:
        """Whether `letter` was applied by a replay already."""
        return await asyncio.to_thread(self.app.next_offset, self.replay_name(letter)) is not None

    async def replay(self, letter: DeadLetter) -> ReplayOutcome:
        """Apply one dead-lettered record through this inbox's applier, at most once.

        Its own tracking name (`<group>:replay:<topic>:<partition>:<offset>`, from the record's
        original coordinates) is recorded with its effects, so replaying it again, or a second
        copy of it on the DLQ, has no effect."""
        name = self.replay_name(letter)
        if await self.replayed(letter):
            return "already-applied"
        try:
            envelope = cloudevents.decode(letter.value, letter.headers)
        except cloudevents.DecodeError as exc:
            log.warning("replay: still undecodable", error=safe_reason(exc), offset=letter.offset)
            return "still-failing"
        message = InboundMessage(envelope, letter.topic, letter.partition, letter.offset)
        for attempt in range(1, self.max_attempts + 1):
            try:
                await asyncio.to_thread(
                    self.app.process_messages, [message], FencedTracking(name, 1, expected=None)
                )
                return "applied"
            except IntegrityError as exc:
                if await asyncio.to_thread(self.app.next_offset, name) is not None:
                    return "already-applied"
                error: BaseException = exc
            except Exception as exc:
                if is_transient(exc):
                    raise
                error = exc
            log.warning("replay: record failed", attempt=attempt, error=safe_reason(error))
            await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        return "still-failing"


ReplayOutcome = Literal["applied", "already-applied", "still-failing"]


@dataclass(frozen=True)
class DeadLetter:
    """A record taken off a DLQ topic, with the coordinates it had on its source topic."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


def _split(name: str) -> tuple[str, int]:
    """(topic, partition) from a tracking name `group:topic:partition`."""
    _, topic, partition = name.rsplit(":", 2)
    return topic, int(partition)
