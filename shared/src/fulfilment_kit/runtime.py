"""One service process: FastAPI + the Kafka broker + outbox relay + inbox, wired in a lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from eventsourcing.application import Application
from fastapi import APIRouter, FastAPI, Request, Response
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fulfilment_kit.http.errors import install_error_handlers
from fulfilment_kit.messaging.consumer import ConsumerWatch, subscribe_inbox
from fulfilment_kit.messaging.inbox import Inbox, InboxApplication
from fulfilment_kit.messaging.relay import EventMapper, OutboxRelay
from fulfilment_kit.observability.health import Health
from fulfilment_kit.observability.logging import configure_logging
from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.settings import KafkaSettings, ServiceSettings

log = structlog.get_logger(__name__)


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

    def __post_init__(self) -> None:
        self.broker = KafkaBroker(
            self.kafka_settings.bootstrap_servers,
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
        self.inbox: Inbox | None = None
        self._subscriber: Any = None
        if self.source_topics and self.settings.consumers_enabled:
            assert isinstance(self.app, InboxApplication), "a consuming service needs an inbox"
            self.inbox = Inbox(
                app=self.app,
                group_id=self.service,
                kafka_settings=self.kafka_settings,
                max_attempts=self.settings.consumer_max_attempts,
                backoff_s=self.settings.consumer_backoff_s,
            )
            self._subscriber = subscribe_inbox(
                self.broker,
                self.inbox,
                self.source_topics,
                max_records=self.settings.consumer_max_records,
                resume_from=self.settings.consumer_resume_from,
            )
        self.health.readiness_checks["database"] = self._database_ready
        self.health.readiness_checks["kafka"] = self._kafka_ready

    async def _database_ready(self) -> str | None:
        await asyncio.wait_for(asyncio.to_thread(self.app.recorder.max_notification_id), 5)
        return None

    async def _kafka_ready(self) -> str | None:
        if not await self.broker.ping(timeout=3):
            return "broker unreachable"
        consumer = self._subscriber.consumer if self._subscriber else None
        if consumer is not None and not consumer.assignment():
            return "no partitions assigned yet"
        return None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start the broker, relay and background loops; stop them in reverse."""
        tasks: list[asyncio.Task[None]] = []
        if self.inbox is not None:
            await self.inbox.start()
        await self.broker.start()
        if self.settings.relay_enabled:
            tasks.append(asyncio.create_task(self.relay.run(), name="relay"))
        if self.inbox is not None:
            watch = ConsumerWatch(self.inbox, self._subscriber, self.health.heartbeat("consumer"))
            tasks.append(asyncio.create_task(watch.run(), name="consumer-watch"))
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
            if self.inbox is not None:
                await self.inbox.stop()
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
    runtime: ServiceRuntime, *, routers: Sequence[APIRouter], title: str, version: str = "1"
) -> FastAPI:
    """The service's FastAPI app with health, metrics, errors and request context."""
    configure_logging(runtime.service, runtime.settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with runtime.running():
            yield

    api = FastAPI(title=title, version=version, lifespan=lifespan)
    api.state.runtime = runtime
    install_error_handlers(api)

    @api.middleware("http")
    async def request_context(request: Request, call_next: Any) -> Response:
        correlation_id = request.headers.get("x-correlation-id") or str(uuid.uuid4())
        structlog.contextvars.bind_contextvars(
            correlation_id=correlation_id, request_id=str(uuid.uuid4())
        )
        try:
            response: Response = await call_next(request)
        finally:
            structlog.contextvars.unbind_contextvars("correlation_id", "request_id")
        response.headers["x-correlation-id"] = correlation_id
        return response

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

    for router in routers:
        api.include_router(router)
    return api


def _health_response(problems: dict[str, str]) -> Response:
    import json

    status = 200 if not problems else 503
    body = {"status": "ok" if not problems else "failing", "problems": problems}
    return Response(json.dumps(body), status_code=status, media_type="application/json")
