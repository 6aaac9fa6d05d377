"""The consumer of an Inbox: batch fetch loop, seek-to-tracked-offset, hold and retry.

A consumer never moves past an offset it has not applied or dead-lettered. Whatever the
inbox could not get past (database down, a conflict, a fenced write, a projection failure,
a retention gap) is *held*: the partition is sought back to its tracked offset, paused, and
resumed with backoff, so aiokafka's position never runs ahead of the database. A retention
gap is resumed only after an operator accepted it (`fulfil consumers accept-gap`).
See docs/adr/0014-inbox-never-skips.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.messaging.inbox import Inbox, PartitionBlocked, safe_reason
from fulfilment_kit.observability import metrics
from fulfilment_kit.observability.health import Heartbeat
from fulfilment_kit.persistence.notifications import Wakeup
from fulfilment_kit.settings import KafkaSettings

log = structlog.get_logger(__name__)

# Held for these reasons, the consumer cannot do its job at all: /readyz says so.
NOT_READY_KINDS = ("database", "unpositioned", "kafka")
GAP_RECHECK_S = 5.0


@dataclass
class Hold:
    """Why a partition is held at its tracked offset, and when to try again."""

    kind: str
    reason: str
    since: float
    attempt: int
    retry_at: float
    resumed: bool = False
    lost: int = 0


class PartitionGate:
    """Holds the partitions an inbox cannot get past and resumes them with backoff."""

    def __init__(self, inbox: Inbox, max_backoff_s: float = 30.0) -> None:
        self.inbox = inbox
        self.max_backoff_s = max_backoff_s
        self.subscriber: Any = None
        self.holds: dict[TopicPartition, Hold] = {}
        self._held = Wakeup()  # a new hold: its retry time may be sooner than the gate's sleep

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        return self.subscriber.consumer if self.subscriber is not None else None

    async def log_start(self, tps: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        consumer = self.consumer
        assert consumer is not None
        starts: Mapping[TopicPartition, int] = await asyncio.wait_for(
            consumer.beginning_offsets(list(tps)), 10
        )
        return starts

    def hold(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        kind: str,
        resume_at: int | None,
        reason: str,
        lost: int = 0,
    ) -> None:
        """Seek `tp` back to `resume_at` (None: its position is unknown), pause it, retry later."""
        if tp not in consumer.assignment():
            self.inbox.forget(tp)  # revoked meanwhile: its new owner carries on
            return
        if resume_at is not None:
            consumer.seek(tp, resume_at)
        consumer.pause(tp)
        now = time.monotonic()
        previous = self.holds.get(tp)
        attempt = previous.attempt + 1 if previous is not None else 1
        delay = min(self.inbox.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        if kind == "gap":
            delay = GAP_RECHECK_S
        if previous is not None and previous.kind != kind:
            self._gauge(tp, previous.kind).set(0)
        self.holds[tp] = Hold(
            kind=kind,
            reason=reason,
            since=previous.since if previous is not None else now,
            attempt=attempt,
            retry_at=now + max(delay, 0.05),
            lost=lost,
        )
        self._held.set()
        self._gauge(tp, kind).set(1)
        fields = {
            "consumer": self.inbox.group_id,
            "topic": tp.topic,
            "partition": tp.partition,
            "reason": reason,
            "resume_at": resume_at,
            "retry_in_s": round(delay, 2),
            "attempt": attempt,
        }
        if kind == "gap":
            metrics.INBOX_RETENTION_GAP.labels(
                self.inbox.group_id, tp.topic, str(tp.partition)
            ).set(lost)
            if previous is not None and previous.kind == "gap":
                return  # re-checked every few seconds; said once
            log.error(
                "partition stopped: records were deleted by retention before they were applied;"
                " accept the gap with `fulfil consumers accept-gap "
                f"{self.inbox.group_id} {tp.topic} {tp.partition}`",
                lost_records=lost,
                **fields,
            )
        elif kind in ("handler", "conflict", "error"):
            log.error("partition stopped at a failing record, retrying", kind=kind, **fields)
        else:
            log.warning("partition held at its tracked offset, retrying", kind=kind, **fields)

    def hold_blocked(self, consumer: AIOKafkaConsumer, blocked: PartitionBlocked) -> None:
        self.hold(
            consumer, blocked.tp, blocked.kind, blocked.resume_at, blocked.reason, blocked.lost
        )

    def release(self, tp: TopicPartition) -> None:
        hold = self.holds.pop(tp, None)
        if hold is None:
            return
        self._gauge(tp, hold.kind).set(0)
        if hold.kind == "gap":
            metrics.INBOX_RETENTION_GAP.labels(
                self.inbox.group_id, tp.topic, str(tp.partition)
            ).set(0)
        log.info(
            "partition flows again",
            consumer=self.inbox.group_id,
            topic=tp.topic,
            partition=tp.partition,
            held_s=round(time.monotonic() - hold.since, 1),
        )

    def drop(self, tps: Iterable[TopicPartition]) -> None:
        """Forget holds of revoked partitions (their new owner places them itself)."""
        for tp in tps:
            hold = self.holds.pop(tp, None)
            if hold is not None:
                self._gauge(tp, hold.kind).set(0)

    def holding(self, tp: TopicPartition) -> bool:
        hold = self.holds.get(tp)
        return hold is not None and not hold.resumed

    def _gauge(self, tp: TopicPartition, kind: str) -> Any:
        return metrics.INBOX_PARTITION_BLOCKED.labels(
            self.inbox.group_id, tp.topic, str(tp.partition), kind
        )

    async def place(self, consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition]) -> None:
        """Seek each of `tps` to its tracked offset; hold those it cannot place (yet)."""
        positions: dict[TopicPartition, int | None] = {}
        down: str | None = None
        for tp in sorted(tps):
            if down is not None:
                self.hold(consumer, tp, "unpositioned", None, down)
                continue
            try:
                positions[tp] = await self.inbox.tracked_position(tp)
            except Exception as exc:  # the database is down: never leave it unsought
                down = f"cannot read the tracked offset: {safe_reason(exc)}"
                self.hold(consumer, tp, "unpositioned", None, down)
        tracked = [tp for tp, position in positions.items() if position]
        starts: Mapping[TopicPartition, int] = {}
        if tracked:
            try:
                starts = await self.log_start(tracked)
            except Exception as exc:
                for tp in tracked:
                    positions.pop(tp)
                    self.hold(consumer, tp, "kafka", None, f"log start: {_kafka_reason(exc)}")
        for tp, position in positions.items():
            start = starts.get(tp)
            if position and start is not None and position < start:
                reason = f"tracked offset {position} is below the log start offset {start}"
                self.hold(consumer, tp, "gap", None, reason, lost=start - position)
                continue
            # Offset 0 when nothing is tracked: a log truncated by retention makes it
            # out of range, and auto_offset_reset="earliest" moves to the first record.
            # (seek_to_beginning would wait ~0.5 s per partition for an offset lookup.)
            consumer.seek(tp, position or 0)
            # Placed without a gap: the series exists (at 0) for the retention-gap alert.
            metrics.INBOX_RETENTION_GAP.labels(
                self.inbox.group_id, tp.topic, str(tp.partition)
            ).set(0)
            hold = self.holds.get(tp)
            if hold is not None:
                consumer.resume(tp)
                if hold.kind in ("unpositioned", "gap", "kafka", "moved"):
                    self.release(tp)  # placed: the database and the log answered
                else:
                    hold.resumed = True
                    self._held.set()

    async def maintain(self) -> None:
        """Retry the holds that are due: place them again and resume them."""
        consumer = self.consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        now = time.monotonic()
        due = []
        for tp, hold in list(self.holds.items()):
            if tp not in assigned:
                self.drop([tp])
            elif hold.resumed:
                with contextlib.suppress(Exception):  # caught up: nothing left to retry
                    highwater = consumer.highwater(tp)
                    if highwater is not None and await consumer.position(tp) >= highwater:
                        self.release(tp)
            elif now >= hold.retry_at:
                due.append(tp)
        replace = [
            tp for tp in due if self.holds[tp].kind in ("unpositioned", "gap", "kafka", "moved")
        ]
        if replace:
            await self.place(consumer, replace)
        for tp in due:
            waiting = self.holds.get(tp)
            if waiting is not None and tp not in replace:
                consumer.resume(tp)  # sought back when it was held: it refetches from there
                waiting.resumed = True

    async def run(self, interval_s: float = 0.2, idle_s: float = 30.0) -> None:
        """Retry holds when due; with nothing held it sleeps until a partition is held."""
        while True:
            try:
                await self.maintain()
            except Exception as exc:
                log.warning("partition gate skipped a round", error=safe_reason(exc))
            await self._held.wait(self._next_wait(interval_s, idle_s))

    def _next_wait(self, interval_s: float, idle_s: float) -> float:
        """Until the earliest retry; `interval_s` while a resumed partition catches up."""
        if not self.holds:
            return idle_s
        if any(hold.resumed for hold in self.holds.values()):
            return interval_s
        soonest = min(hold.retry_at for hold in self.holds.values())
        return min(idle_s, max(soonest - time.monotonic(), 0.0))

    def problem(self) -> str | None:
        """A readiness problem while the consumer cannot work at all (database, Kafka)."""
        down = [(tp, h) for tp, h in self.holds.items() if h.kind in NOT_READY_KINDS]
        if not down:
            return None
        since = time.monotonic() - min(h.since for _, h in down)
        _, hold = down[0]
        return (
            f"{self.inbox.group_id}: {len(down)} partition(s) held for {since:.0f}s and retried "
            f"({hold.kind}: {hold.reason})"
        )


def _kafka_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]  # Kafka's errors carry no payload


class TrackedOffsetListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, seek each partition to the offset tracked in the database."""

    def __init__(
        self, inbox: Inbox, resume_from: str = "database", gate: PartitionGate | None = None
    ) -> None:
        self.inbox = inbox
        self.resume_from = resume_from
        self.gate = gate or PartitionGate(inbox)
        self.subscriber: Any = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self.inbox.forget(tp)
        self.gate.drop(revoked)
        forget_partition_series(self.inbox.group_id, revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer: AIOKafkaConsumer = self.subscriber.consumer
        if self.resume_from == "kafka":
            # fault injection: trust Kafka's committed offset like a plain consumer
            for tp in sorted(assigned):
                with contextlib.suppress(Exception):
                    await self.inbox.tracked_position(tp)
        else:
            await self.gate.place(consumer, assigned)
        log.info(
            "partitions assigned", partitions=[f"{tp.topic}/{tp.partition}" for tp in assigned]
        )


def forget_partition_series(group_id: str, tps: Iterable[TopicPartition]) -> None:
    """Drop the per-partition gauges of partitions this process no longer owns: a replica
    that kept its last values after a rebalance would count the new owner's lag twice."""
    for tp in tps:
        labels = (group_id, tp.topic, str(tp.partition))
        for gauge in (
            metrics.CONSUMER_LAG,
            metrics.CONSUMER_TRACKED_OFFSET,
            metrics.INBOX_TRACKED_LAG,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)


@dataclass(frozen=True)
class SubscribedTopic:
    """A topic a subscriber reads (its physical name)."""

    name: str


class InboxSubscriber:
    """Feeds an inbox from its own consumer group: fetch a batch, apply it, and now and then
    commit the positions to Kafka (for lag dashboards, KEDA and `kafka-consumer-groups`;
    the database's tracking records say where the consumer resumes: ADR 2, 24).

    The kit's own loop over `getmany`: FastStream's subscriber ran a middleware chain,
    dependency injection and a header parser per batch and committed every batch, a third
    of a consumer's time while it did nothing the inbox needs (ADR 25)."""

    def __init__(
        self,
        inbox: Inbox,
        gate: PartitionGate,
        listener: TrackedOffsetListener,
        physical_topics: Sequence[str],
        kafka_settings: KafkaSettings,
        *,
        group_id: str,
        max_records: int,
        commit_interval_s: float,
        fetch_timeout_ms: int = 1000,
        round_spacing_s: float = 0.0,
    ) -> None:
        self.inbox = inbox
        self.gate = gate
        self.listener = listener
        self.topics = [SubscribedTopic(t) for t in physical_topics]
        self.kafka_settings = kafka_settings
        self.group_id = group_id
        self.max_records = max_records
        self.commit_interval_s = commit_interval_s
        self.fetch_timeout_ms = fetch_timeout_ms
        self.round_spacing_s = round_spacing_s
        """Least time between the starts of two batches (a full batch goes on at once):
        records that arrive meanwhile wait in the fetcher and make the next batch larger."""
        self.consumer: AIOKafkaConsumer | None = None
        self.commits = 0
        """Offset commits sent to Kafka (tests and the benchmark read it)."""
        self._task: asyncio.Task[None] | None = None
        self._uncommitted = False
        self._committed_at = 0.0
        self._consuming = False

    async def start(self) -> None:
        consumer = kafka.consumer(
            self.kafka_settings,
            self.group_id,
            # Notice a dead member within seconds (the broker's minimum session is 6 s):
            # a rebalance waits for it, and so does a clean shutdown during that rebalance.
            session_timeout_ms=6000,
            heartbeat_interval_ms=1500,
            max_poll_records=self.max_records,
            # The broker answers a fetch as soon as records arrive: a longer wait only makes
            # an idle consumer ask less often (aiokafka's default: twice a second per broker).
            fetch_max_wait_ms=2000,
        )
        consumer.subscribe(topics=[t.name for t in self.topics], listener=self.listener)
        self.consumer = consumer
        await kafka.start_or_refuse(
            self._start_checked(consumer), "starting its consumers", self.kafka_settings
        )
        self._committed_at = time.monotonic()
        self._task = asyncio.create_task(self._run(consumer), name=f"{self.group_id}-consume")

    async def _start_checked(self, consumer: AIOKafkaConsumer) -> None:
        """Start, and ask for one committed offset: the group's ACLs answer now (joining
        the group happens in the background, where a refusal would only be retried)."""
        await consumer.start()
        if not self.topics:
            return
        with contextlib.suppress(TimeoutError):  # slow, not refused: the loop carries on
            await asyncio.wait_for(
                consumer.committed(TopicPartition(self.topics[0].name, 0)),
                self.kafka_settings.request_timeout_s,
            )

    async def stop(self) -> None:
        # Stopped while applying a batch: its positions may be ahead of the database.
        applying = self._consuming
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        consumer, self.consumer = self.consumer, None
        if consumer is None:
            return
        if not applying:
            with contextlib.suppress(Exception):  # the last positions, so lag reads true
                await asyncio.wait_for(self._commit(consumer), 5)
        with contextlib.suppress(Exception):  # aiokafka#1101: stop can hang
            await asyncio.wait_for(consumer.stop(), 30)

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        next_round = 0.0
        while True:
            # Not a poll: the fetcher goes on fetching meanwhile, and an idle consumer waits
            # in `getmany` below, so this only spaces batches while records keep coming.
            if (rest := next_round - time.monotonic()) > 0:
                await asyncio.sleep(rest)
            try:
                fetched = await consumer.getmany(
                    timeout_ms=self.fetch_timeout_ms, max_records=self.max_records
                )
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                log.warning("consumer fetch failed", error=_kafka_reason(exc))
                await asyncio.sleep(5)
                continue
            if fetched:
                records = [r for b in fetched.values() for r in b]
                if len(records) < self.max_records:
                    next_round = time.monotonic() + self.round_spacing_s
                self._consuming = True
                try:
                    await self.consume(consumer, records)
                finally:
                    self._consuming = False
            if self._uncommitted and self._commit_due():
                await self._commit(consumer)

    async def consume(
        self, consumer: AIOKafkaConsumer, fetched: Sequence[ConsumerRecord[Any, Any]]
    ) -> None:
        """Apply one fetched batch; hold what cannot be applied, release what flowed."""
        assigned = consumer.assignment()
        gate = self.gate
        # Records of a partition held or revoked since they were fetched are not applied:
        # it was sought back (or has a new owner) and they come again.
        records = [
            r
            for r in fetched
            if (tp := TopicPartition(r.topic, r.partition)) in assigned and not gate.holding(tp)
        ]
        try:
            failures = await self.inbox.apply_records(records)
        except Exception as exc:  # whatever it is, the batch is not skipped
            log.exception("consumer failed on a batch; holding its partitions")
            failures = [
                PartitionBlocked(tp, "error", self.inbox.resume_at(tp, records), safe_reason(exc))
                for tp in {TopicPartition(r.topic, r.partition) for r in records}
            ]
        for blocked in failures:
            gate.hold_blocked(consumer, blocked)
        failed = {f.tp for f in failures}
        for tp in {TopicPartition(r.topic, r.partition) for r in records} - failed:
            gate.release(tp)
        self._uncommitted = True

    def _commit_due(self) -> bool:
        return time.monotonic() - self._committed_at >= self.commit_interval_s

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the positions of every assigned partition (held ones were sought back)."""
        self._uncommitted = False
        self._committed_at = time.monotonic()
        try:
            await consumer.commit()
            self.commits += 1
        except Exception as exc:  # a rebalance in progress: the next interval commits
            self._uncommitted = True
            log.info("offset commit skipped", error=_kafka_reason(exc))


def subscribe_inbox(
    inbox: Inbox,
    source_topics: Sequence[str],
    kafka_settings: KafkaSettings,
    *,
    max_records: int = 500,
    resume_from: str = "database",
    gate: PartitionGate | None = None,
    commit_interval_s: float = 5.0,
    round_spacing_s: float = 0.0,
) -> InboxSubscriber:
    """A subscriber feeding `inbox` from `source_topics` (logical names); `start()` it."""
    gate = gate or PartitionGate(inbox)
    listener = TrackedOffsetListener(inbox, resume_from, gate)
    subscriber = InboxSubscriber(
        inbox,
        gate,
        listener,
        [topics.physical(t) for t in source_topics],
        kafka_settings,
        # The deployment's prefix keeps two deployments on one cluster out of each
        # other's consumer groups; DLQ and tracking names stay the logical name.
        group_id=topics.physical(inbox.group_id),
        max_records=max_records,
        commit_interval_s=commit_interval_s,
        round_spacing_s=round_spacing_s,
    )
    listener.subscriber = subscriber
    gate.subscriber = subscriber
    inbox.log_start = gate.log_start
    return subscriber


class ConsumerWatch:
    """Beats the heartbeat while the consumer progresses, sits idle at zero lag, or holds
    its partitions for a known reason (a held partition is waiting, not wedged)."""

    def __init__(
        self,
        inbox: Inbox,
        subscriber: Any,
        heartbeat: Heartbeat,
        gate: PartitionGate | None = None,
    ) -> None:
        self.inbox = inbox
        self.subscriber = subscriber
        self.heartbeat = heartbeat
        self.gate = gate
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
        held = set(self.gate.holds) if self.gate is not None else set()
        ends: Mapping[TopicPartition, int] = {}
        paused = [tp for tp in consumer.assignment() if tp in held]
        if paused:  # a paused partition is not fetched: its high-water mark would stand still
            with contextlib.suppress(Exception):
                ends = await asyncio.wait_for(consumer.end_offsets(paused), 5)
        waiting = []
        for tp in consumer.assignment():
            highwater = ends.get(tp, consumer.highwater(tp))
            if highwater is None:
                continue
            tracked = self.inbox.next_offset(tp)
            metrics.INBOX_TRACKED_LAG.labels(self.inbox.group_id, tp.topic, str(tp.partition)).set(
                max(0, highwater - tracked)
            )
            if tp in held:
                continue
            # Caught up when the consumer has read to the high-water mark: the last offsets
            # may be transaction markers, which are never tracked, so compare positions.
            position = await consumer.position(tp)
            caught_up = position >= highwater
            labels = (self.inbox.group_id, tp.topic, str(tp.partition))
            metrics.CONSUMER_LAG.labels(*labels).set(max(0, highwater - position))
            metrics.CONSUMER_TRACKED_OFFSET.labels(*labels).set(tracked)
            if not caught_up and self._last.get(tp) == tracked:
                waiting.append(f"{tp.topic}/{tp.partition}")
            self._last[tp] = tracked
        if not waiting:
            self.heartbeat.beat()
        else:
            log.warning("consumer has unread records and made no progress", partitions=waiting)
