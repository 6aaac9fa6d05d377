"""One service process: FastAPI + the Kafka broker + outbox relay + inbox, wired in a lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from eventsourcing.application import Application
from fastapi import APIRouter, Depends, FastAPI, Response
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fulfilment_kit.contracts import topics
from fulfilment_kit.http.auth import OPS, SERVICE, install_auth, require
from fulfilment_kit.http.context import CORRELATION_PARAMETER, RequestContextMiddleware
from fulfilment_kit.http.errors import document_problems, install_error_handlers
from fulfilment_kit.http.events import events_router
from fulfilment_kit.http.limits import RequestLimitsMiddleware
from fulfilment_kit.http.metrics import HttpMetricsMiddleware
from fulfilment_kit.messaging.consumer import ConsumerWatch, PartitionGate, subscribe_inbox
from fulfilment_kit.messaging.inbox import Applier, Inbox, InboxApplication, OnFailure
from fulfilment_kit.messaging.relay import EventMapper, OutboxRelay
from fulfilment_kit.observability import metrics as kit_metrics
from fulfilment_kit.observability.build import publish_build_info
from fulfilment_kit.observability.business import EventMeter
from fulfilment_kit.observability.health import Health
from fulfilment_kit.observability.logging import configure_logging
from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.settings import KafkaSettings, ServiceSettings

log = structlog.get_logger(__name__)


DLQ_REASONS = ("undecodable", "handler-failed")
"""The reasons the inbox dead-letters a record for (the `reason` label of the DLQ counter)."""

ExtraConsumer = tuple[str, Applier, Sequence[str]]
"""(consumer group, applier, logical source topics) of a consumer besides the service's own."""


@dataclass
class _Consumer:
    """One consumer group this process runs: its inbox, subscriber and heartbeat name."""

    inbox: Inbox
    subscriber: Any
    heartbeat: str
    applier: Applier
    gate: PartitionGate


@dataclass
class ServiceRuntime:
    """Everything one service process runs besides its HTTP routes."""

    service: str
    app: Application[Any]
    mapper: EventMapper
    output_topics: Sequence[str]
    source_topics: Sequence[str] = ()
    settings: ServiceSettings = field(default_factory=ServiceSettings)
    kafka_settings: KafkaSettings = field(default_factory=KafkaSettings)
    health: Health = field(default_factory=Health)
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    extra_consumers: list[ExtraConsumer] = field(default_factory=list)
    """More consumer groups in this process (e.g. projections), each with its own inbox."""
    meter: EventMeter | None = None
    """The service's business metrics, counted from the events its relay publishes."""

    def __post_init__(self) -> None:
        self.broker = KafkaBroker(
            self.kafka_settings.bootstrap_servers,
            security=self.kafka_settings.faststream_security(),
            middlewares=[KafkaPrometheusMiddleware(registry=REGISTRY, app_name=self.service)],
            logger=None,
        )
        self.relay = OutboxRelay(
            service=self.service,
            app=self.app,
            mapper=self.mapper,
            output_topics=self.output_topics,
            kafka_settings=self.kafka_settings,
            batch_size=self.settings.relay_batch_size,
            poll_interval_s=self.settings.relay_poll_interval_s,
            heartbeat=self.health.heartbeat("relay"),
        )
        if self.meter is not None:
            self.relay.on_published = self.meter.observe
        kit_metrics.RELAY_RESTARTS.labels(self.service)
        kit_metrics.RELAY_LAG.labels(self.service)
        for topic in self.output_topics:
            kit_metrics.RELAY_PUBLISHED.labels(self.service, topics.physical(topic))
        self.inbox: Inbox | None = None
        self._subscriber: Any = None
        self.consumers: list[_Consumer] = []
        if self.source_topics:  # registered even when disabled: operator tools use its inbox
            assert isinstance(self.app, InboxApplication), "a consuming service needs an inbox"
            main = self.add_consumer(self.service, self.app, self.source_topics, "consumer")
            self.inbox, self._subscriber = main.inbox, main.subscriber
        for group_id, applier, group_topics in self.extra_consumers:
            self.add_consumer(group_id, applier, group_topics)
        self.health.readiness_checks["database"] = self._database_ready
        self.health.readiness_checks["kafka"] = self._kafka_ready
        self.health.readiness_checks["consumers"] = self._consumers_ready
        self.background.append(self._record_readiness)

    async def _record_readiness(self, interval_s: float = 2.0) -> None:
        """Readiness as metrics, refreshed every few seconds (a scrape must stay cheap)."""
        ready = kit_metrics.READY.labels(self.service)
        ready.set(0)
        while True:
            problems = await self.health.readiness()
            ready.set(0 if problems else 1)
            for check in self.health.readiness_checks:
                kit_metrics.READINESS_PROBLEMS.labels(self.service, check).set(
                    int(check in problems)
                )
            await asyncio.sleep(interval_s)

    def add_consumer(
        self,
        group_id: str,
        applier: Applier,
        source_topics: Sequence[str],
        heartbeat: str | None = None,
        on_failure: OnFailure = "dead_letter",
    ) -> _Consumer:
        """Run one more consumer group in this process (call before `running()`).

        Its records are applied by `applier` with tracking names `<group_id>:<topic>:<p>`;
        poison goes to `<topic>.dlq.<group_id>` (with on_failure="stop", a record its handler
        keeps failing on stops its partition instead, retried with backoff: read models).
        An applier with a `close()` is closed on shutdown. With FULFIL_CONSUMERS_ENABLED=false
        it is registered but not subscribed (operator tools use its inbox: `fulfil dlq`).
        """
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
                self.broker,
                inbox,
                source_topics,
                max_records=self.settings.consumer_max_records,
                resume_from=self.settings.consumer_resume_from,
                gate=gate,
            )
        for topic in map(topics.physical, source_topics):  # every series exists from 0
            kit_metrics.INBOX_APPLIED.labels(group_id, topic)
            kit_metrics.INBOX_DUPLICATES.labels(group_id, topic)
            for kind in ("database", "handler", "conflict"):
                kit_metrics.INBOX_RETRIES.labels(group_id, topic, kind)
            for reason in DLQ_REASONS:
                kit_metrics.DLQ_PUBLISHED.labels(group_id, topic, reason)
        consumer = _Consumer(inbox, subscriber, heartbeat or f"consumer:{group_id}", applier, gate)
        self.consumers.append(consumer)
        return consumer

    async def _database_ready(self) -> str | None:
        await asyncio.wait_for(asyncio.to_thread(self.app.recorder.max_notification_id), 5)
        return None

    async def _kafka_ready(self) -> str | None:
        if not await self.broker.ping(timeout=3):
            return "broker unreachable"
        for running in self.consumers:
            consumer = running.subscriber.consumer if running.subscriber else None
            if consumer is not None and not consumer.assignment():
                return f"no partitions assigned yet to {running.inbox.group_id}"
        return None

    async def _consumers_ready(self) -> str | None:
        """Not ready while a consumer holds partitions it cannot apply (database, Kafka)."""
        problems = [p for c in self._active() if (p := c.gate.problem()) is not None]
        return "; ".join(problems) or None

    def _active(self) -> list[_Consumer]:
        return [c for c in self.consumers if c.subscriber is not None]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start the broker, relay and background loops; stop them in reverse."""
        tasks: list[asyncio.Task[None]] = []
        for consumer in self._active():
            await consumer.inbox.start()
        await self.broker.start()
        if self.settings.relay_enabled:
            tasks.append(asyncio.create_task(self.relay.run(), name="relay"))
        for consumer in self._active():
            beat = self.health.heartbeat(consumer.heartbeat)
            watch = ConsumerWatch(consumer.inbox, consumer.subscriber, beat, consumer.gate)
            tasks.append(asyncio.create_task(watch.run(), name=f"{consumer.heartbeat}-watch"))
            tasks.append(
                asyncio.create_task(consumer.gate.run(), name=f"{consumer.heartbeat}-gate")
            )
        tasks.extend(
            asyncio.create_task(_supervised(job), name=getattr(job, "__qualname__", "job"))
            for job in self.background
        )
        log.info("service started", topics_in=list(self.source_topics))
        try:
            yield
        finally:
            self.relay.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.broker.stop()
            for consumer in self._active():
                await consumer.inbox.stop()
            for consumer in self.consumers:
                close = getattr(consumer.applier, "close", None)
                if callable(close) and not isinstance(consumer.applier, Application):
                    close()  # the service's own application is closed below
            self.app.close()


async def _supervised(job: Callable[[], Coroutine[Any, Any, None]]) -> None:
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


def create_http_app(
    runtime: ServiceRuntime,
    *,
    routers: Sequence[APIRouter],
    title: str,
    version: str = "1",
    public_paths: Sequence[str] = (),
) -> FastAPI:
    """The service's FastAPI app with health, metrics, errors, request context and auth.

    Every route of `routers` must declare its roles (`fulfilment_kit.http.auth.require`);
    `public_paths` are routes that authenticate by other means (a signed webhook).
    """
    configure_logging(runtime.service, runtime.settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with runtime.running():
            yield

    api = FastAPI(title=title, version=version, lifespan=lifespan)
    api.state.runtime = runtime
    install_error_handlers(api)

    api.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=runtime.settings.http_max_body_bytes,
        max_json_depth=runtime.settings.http_max_json_depth,
    )
    _document_kit_behaviour(api)
    publish_build_info(runtime.service)

    @api.get("/livez", include_in_schema=False)
    async def livez() -> Response:
        problems = runtime.health.liveness()
        return _health_response(problems)

    @api.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        return _health_response(await runtime.health.readiness())

    @api.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    api.include_router(
        events_router(runtime.app, runtime.mapper, runtime.relay.source),
        dependencies=[Depends(require(SERVICE, OPS))],
    )
    for router in routers:
        api.include_router(router)
    install_auth(api, public_paths=public_paths)
    # Outside auth, so refused requests (401) are counted and timed too.
    api.add_middleware(HttpMetricsMiddleware, service=runtime.service)
    api.add_middleware(RequestContextMiddleware)  # outermost: 401s carry a correlation id too
    return api


def _document_kit_behaviour(api: FastAPI) -> None:
    """The OpenAPI says what the kit does to every route: its problem statuses (as
    problem+json) and the X-Correlation-Id header."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = generate()
            document_problems(schema)
            for path_item in schema.get("paths", {}).values():
                for operation in path_item.values():
                    parameters = operation.setdefault("parameters", [])
                    if all(p.get("name") != CORRELATION_PARAMETER["name"] for p in parameters):
                        parameters.append(dict(CORRELATION_PARAMETER))
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def _health_response(problems: dict[str, str]) -> Response:
    import json

    status = 200 if not problems else 503
    body = {"status": "ok" if not problems else "failing", "problems": problems}
    return Response(json.dumps(body), status_code=status, media_type="application/json")
