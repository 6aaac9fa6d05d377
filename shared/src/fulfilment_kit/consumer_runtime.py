"""A process that only consumes: consumer groups writing their own tables (read models),
no event store, no relay; its HTTP app serves only `/livez`, `/readyz` and `/metrics`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import structlog
from fastapi import APIRouter, FastAPI

from fulfilment_kit.http.auth import install_auth
from fulfilment_kit.http.context import RequestContextMiddleware
from fulfilment_kit.http.errors import install_error_handlers
from fulfilment_kit.messaging import kafka
from fulfilment_kit.messaging.inbox import MessageProcessor, OnFailure
from fulfilment_kit.observability.build import publish_build_info
from fulfilment_kit.observability.health import Check, Health
from fulfilment_kit.observability.logging import configure_logging
from fulfilment_kit.process import (
    BackgroundJob,
    ConsumerGroup,
    ConsumerGroups,
    install_probes,
    kafka_broker,
    record_readiness,
    supervised,
)
from fulfilment_kit.settings import KafkaSettings, ServiceSettings

log = structlog.get_logger(__name__)


@dataclass
class ConsumerRuntime:
    """Everything a consume-only process runs: its consumer groups and background loops.

    `database` is the readiness check of the database its appliers write (a consumer that
    cannot reach it holds its partitions and says so in the `consumers` check as well).
    """

    service: str
    database: Check
    settings: ServiceSettings = field(default_factory=ServiceSettings)
    kafka_settings: KafkaSettings = field(default_factory=KafkaSettings)
    health: Health = field(default_factory=Health)
    background: list[BackgroundJob] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.broker = kafka_broker(self.service, self.kafka_settings)
        self.groups = ConsumerGroups(self.broker, self.settings, self.kafka_settings)
        self.health.readiness_checks["database"] = self.database
        self.health.readiness_checks["kafka"] = self.groups.kafka_ready
        self.health.readiness_checks["consumers"] = self.groups.consumers_ready
        self.background.append(lambda: record_readiness(self.service, self.health))

    @property
    def consumers(self) -> list[ConsumerGroup]:
        return self.groups.consumers

    def add_consumer(
        self,
        group_id: str,
        applier: MessageProcessor,
        source_topics: Sequence[str] | None = None,
        heartbeat: str | None = None,
        on_failure: OnFailure = "dead_letter",
    ) -> ConsumerGroup:
        """One more consumer group (before `running()`): see `ConsumerGroups.add`."""
        return self.groups.add(group_id, applier, source_topics, heartbeat, on_failure)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start the broker, the groups' watches and the background loops; stop in reverse."""
        await self.groups.start_inboxes()
        await kafka.start_or_refuse(
            self.broker.start(), "starting its consumers", self.kafka_settings
        )
        tasks = self.groups.watch(self.health)
        tasks.extend(
            asyncio.create_task(supervised(job), name="background") for job in self.background
        )
        log.info("consumer process started", groups=[c.inbox.group_id for c in self.consumers])
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            await self.broker.stop()
            await self.groups.stop_inboxes()
            self.close()

    def close(self) -> None:
        """Close the appliers (their connection pools)."""
        self.groups.close_appliers()


def create_consumer_app(
    runtime: ConsumerRuntime, *, title: str, routers: Sequence[APIRouter] = ()
) -> FastAPI:
    """The process's FastAPI app: the probes, and `routers` (each declaring its roles)."""
    configure_logging(runtime.service, runtime.settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with runtime.running():
            yield

    # Without routes of its own there is nothing to document (and nothing to authenticate).
    api = FastAPI(
        title=title,
        version="1",
        lifespan=lifespan,
        openapi_url="/openapi.json" if routers else None,
        docs_url="/docs" if routers else None,
        redoc_url=None,
    )
    api.state.runtime = runtime
    install_error_handlers(api)
    publish_build_info(runtime.service)
    install_probes(api, runtime.health)
    for router in routers:
        api.include_router(router)
    if routers:
        install_auth(api)
    api.add_middleware(RequestContextMiddleware)
    return api
