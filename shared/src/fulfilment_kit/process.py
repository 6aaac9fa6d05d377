"""What every platform process runs besides its own work: consumer groups (inbox, partition
gate, watch), supervised background loops, readiness as metrics, and the probe routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import FastAPI, Response
from faststream.exceptions import IncorrectState
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fulfilment_kit import heap, priority
from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.messaging.consumer import (
    ConsumerWatch,
    InboxSubscriber,
    PartitionGate,
    subscribe_inbox,
)
from fulfilment_kit.messaging.inbox import Inbox, MessageProcessor, OnFailure
from fulfilment_kit.messaging.policy import check_subscription, subscriptions_of
from fulfilment_kit.observability import metrics as kit_metrics
from fulfilment_kit.observability.health import Check, Health
from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.settings import KafkaSettings, ServiceSettings

log = structlog.get_logger(__name__)

DLQ_REASONS = ("undecodable", "handler-failed")
"""The reasons the inbox dead-letters a record for (the `reason` label of the DLQ counter)."""


def kafka_broker(service: str, kafka_settings: KafkaSettings) -> KafkaBroker:
    """The FastStream broker of one process: its connection and admin client (readiness).

    The consumers are the kit's own (`InboxSubscriber`, ADR 25); the relay and the DLQ use
    the kit's producers. `service` names the process in the broker's client id."""
    return KafkaBroker(
        kafka_settings.bootstrap_servers,
        security=kafka_settings.faststream_security(),
        client_id=f"fulfil-{service}",
        logger=None,
    )


@dataclass
class ConsumerGroup:
    """One consumer group a process runs: its inbox, subscriber and heartbeat name."""

    inbox: Inbox
    subscriber: InboxSubscriber | None
    heartbeat: str
    applier: MessageProcessor
    gate: PartitionGate


BackgroundJob = Callable[[], Coroutine[Any, Any, None]]


async def supervised(job: BackgroundJob) -> None:
    """Run a background loop; if it crashes, log it and start it again with backoff."""
    delay = 0.5
    while True:
        try:
            await job()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task crashed, restarting", task=job.__qualname__, delay=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def record_readiness(service: str, health: Health, interval_s: float = 5.0) -> None:
    """Readiness as metrics, refreshed every few seconds (a scrape must stay cheap)."""
    ready = kit_metrics.READY.labels(service)
    ready.set(0)
    while True:
        problems = await health.readiness()
        ready.set(0 if problems else 1)
        for check in health.readiness_checks:
            kit_metrics.READINESS_PROBLEMS.labels(service, check).set(int(check in problems))
        await asyncio.sleep(interval_s)


@dataclass(kw_only=True)
class ProcessRuntime:
    """What every platform process runs: its consumer groups on one broker (each with its own
    inbox), its supervised background loops, and readiness (database, Kafka, consumers) as
    checks and metrics."""

    service: str
    settings: ServiceSettings = field(default_factory=ServiceSettings)
    kafka_settings: KafkaSettings = field(default_factory=KafkaSettings)
    health: Health = field(default_factory=Health)
    background_consumers: bool = False
    """Whether this process's consumers are off the order's path: their batches are spaced
    by `consumer_background_round_spacing_s`, not `consumer_round_spacing_s`, and the
    process runs `background_nice` lower in CPU priority (ADR 29)."""
    background: list[BackgroundJob] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.broker = kafka_broker(self.service, self.kafka_settings)
        self.consumers: list[ConsumerGroup] = []
        """The consumer groups this process runs (a service's own first), each its own inbox."""

    def _watch_readiness(self, database: Check) -> None:
        """Ready when `database`, Kafka and the consumers are; refreshed as metrics."""
        self.health.readiness_checks["database"] = database
        self.health.readiness_checks["kafka"] = self.kafka_ready
        self.health.readiness_checks["consumers"] = self.consumers_ready
        self.background.append(lambda: record_readiness(self.service, self.health))

    def add_consumer(
        self,
        group_id: str,
        applier: MessageProcessor,
        source_topics: Sequence[str] | None = None,
        heartbeat: str | None = None,
        on_failure: OnFailure = "dead_letter",
    ) -> ConsumerGroup:
        """Run one more consumer group in this process (call before `running()`) on
        `source_topics` (by default the topics of what the applier's policies react to:
        `subscriptions_of`). An applier with a `close()` is closed on shutdown.

        Its records are applied by `applier` with tracking names `<group_id>:<topic>:<p>`;
        poison goes to `<topic>.dlq.<group_id>` (with on_failure="stop", a record its handler
        keeps failing on stops its partition instead, retried with backoff: read models).
        With FULFIL_CONSUMERS_ENABLED=false it is registered but not subscribed (operator
        tools use its inbox: `fulfil dlq`). A topic none of the applier's policies react to
        is refused (an applier without `reacts_to` sees every event of its topics).
        """
        if source_topics is None:
            source_topics = subscriptions_of(applier)
        reacts_to = getattr(applier, "reacts_to", ())
        if reacts_to:
            check_subscription(group_id, reacts_to, source_topics)
        inbox = Inbox(
            app=applier,
            group_id=group_id,
            kafka_settings=self.kafka_settings,
            max_attempts=self.settings.consumer_max_attempts,
            backoff_s=self.settings.consumer_backoff_s,
            on_failure=on_failure,
        )
        gate = PartitionGate(inbox, max_backoff_s=self.settings.consumer_max_backoff_s)
        subscriber = None
        if self.settings.consumers_enabled:
            subscriber = subscribe_inbox(
                inbox,
                source_topics,
                self.kafka_settings,
                max_records=self.settings.consumer_max_records,
                resume_from=self.settings.consumer_resume_from,
                gate=gate,
                commit_interval_s=self.settings.consumer_commit_interval_s,
                round_spacing_s=(
                    self.settings.consumer_background_round_spacing_s
                    if self.background_consumers
                    else self.settings.consumer_round_spacing_s
                ),
            )
        for topic in map(topics.physical, source_topics):  # every series exists from 0
            kit_metrics.INBOX_APPLIED.labels(group_id, topic)
            kit_metrics.INBOX_DUPLICATES.labels(group_id, topic)
            for kind in ("database", "handler", "conflict"):
                kit_metrics.INBOX_RETRIES.labels(group_id, topic, kind)
            for reason in DLQ_REASONS:
                kit_metrics.DLQ_PUBLISHED.labels(group_id, topic, reason)
        group = ConsumerGroup(inbox, subscriber, heartbeat or f"consumer:{group_id}", applier, gate)
        self.consumers.append(group)
        return group

    def active(self) -> list[ConsumerGroup]:
        """The groups that are subscribed (all of them unless consumers are disabled)."""
        return [c for c in self.consumers if c.subscriber is not None]

    async def kafka_ready(self) -> str | None:
        try:
            admin = self.broker.config.admin_client
        except IncorrectState:  # the broker is not connected (yet)
            return "broker unreachable"
        if not await kafka.reachable(admin, timeout_s=3):
            return "broker unreachable"
        for running in self.consumers:
            consumer = running.subscriber.consumer if running.subscriber else None
            if consumer is not None and not consumer.assignment():
                return f"no partitions assigned yet to {running.inbox.group_id}"
        return None

    async def consumers_ready(self) -> str | None:
        """Not ready while a consumer holds partitions it cannot apply (database, Kafka)."""
        problems = [p for c in self.active() if (p := c.gate.problem()) is not None]
        return "; ".join(problems) or None

    async def _start_inboxes(self) -> None:
        """Before the broker starts: each inbox's producer (DLQ) and tracking reads."""
        for consumer in self.active():
            await consumer.inbox.start()

    async def _start_subscribers(self) -> None:
        for consumer in self.active():
            assert consumer.subscriber is not None
            await consumer.subscriber.start()

    async def _stop_subscribers(self) -> None:
        for consumer in self.active():
            assert consumer.subscriber is not None
            await consumer.subscriber.stop()

    def _watch_consumers(self) -> list[asyncio.Task[None]]:
        """After the broker started: each group's watch (its heartbeat) and partition gate."""
        tasks = []
        for consumer in self.active():
            beat = self.health.heartbeat(consumer.heartbeat)
            watch = ConsumerWatch(consumer.inbox, consumer.subscriber, beat, consumer.gate)
            tasks.append(asyncio.create_task(watch.run(), name=f"{consumer.heartbeat}-watch"))
            tasks.append(
                asyncio.create_task(consumer.gate.run(), name=f"{consumer.heartbeat}-gate")
            )
        return tasks

    async def _stop_inboxes(self) -> None:
        for consumer in self.active():
            await consumer.inbox.stop()

    def _close_appliers(self, keep: object = None) -> None:
        """Close every applier that has a `close()` (but `keep`: its owner closes it)."""
        for consumer in self.consumers:
            close = getattr(consumer.applier, "close", None)
            if callable(close) and consumer.applier is not keep:
                close()

    def _start_own(self) -> list[asyncio.Task[None]]:
        """The process's own tasks besides consumers and background loops (a relay)."""
        return []

    def _stop_own(self) -> None:
        """Ask the process's own tasks to stop (first thing on the way out)."""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start the broker, its own tasks, the groups' watches and the background loops;
        stop them in reverse."""
        if self.background_consumers and priority.lowered(self.settings.background_nice):
            log.info("off the order's path: CPU priority lowered", by=self.settings.background_nice)
        await self._start_inboxes()
        await kafka.start_or_refuse(
            self.broker.start(), "starting its consumers", self.kafka_settings
        )
        try:
            await self._start_subscribers()
        except BaseException:
            await self._stop_subscribers()
            await self.broker.stop()
            raise
        tasks = [*self._start_own(), *self._watch_consumers()]
        tasks.extend(
            asyncio.create_task(supervised(job), name=getattr(job, "__qualname__", "job"))
            for job in self.background
        )
        log.info("process started", groups=[c.inbox.group_id for c in self.consumers])
        heap.settled()
        try:
            yield
        finally:
            self._stop_own()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_subscribers()
            await self.broker.stop()
            await self._stop_inboxes()
            self.close()

    def close(self) -> None:
        """Close the consumers' appliers (their connection pools)."""
        self._close_appliers()


def install_probes(api: FastAPI, health: Health) -> None:
    """`/livez`, `/readyz` and `/metrics`: open (no token), outside the OpenAPI."""

    @api.get("/livez", include_in_schema=False)
    async def livez() -> Response:
        return health_response(health.liveness())

    @api.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        return health_response(await health.readiness())

    @api.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def health_response(problems: dict[str, str]) -> Response:
    status = 200 if not problems else 503
    body = {"status": "ok" if not problems else "failing", "problems": problems}
    return Response(json.dumps(body), status_code=status, media_type="application/json")
