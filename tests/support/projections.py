"""The read-models process (its runtime, in this process) plus customer-service's read routes
over the same tables, as one ASGI app to call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from customer_service.projections import GROUP
from customer_service.projections.main import create_runtime
from customer_service.projections.store import ProjectionsApplier
from customer_service.projections.wiring import read_models_router
from fulfilment_kit.consumer_runtime import ConsumerRuntime, create_consumer_app
from fulfilment_kit.messaging.inbox import Inbox
from fulfilment_kit.process import ConsumerGroup
from fulfilment_kit.settings import PostgresSettings, ServiceSettings
from tests.support.auth import staff_headers
from tests.support.polling import eventually


@dataclass
class ProjectionsProcess:
    runtime: ConsumerRuntime
    client: httpx.AsyncClient

    @property
    def consumer(self) -> ConsumerGroup:
        (consumer,) = [c for c in self.runtime.consumers if c.inbox.group_id == GROUP]
        return consumer

    @property
    def inbox(self) -> Inbox:
        return self.consumer.inbox

    @property
    def applier(self) -> ProjectionsApplier:
        applier = self.consumer.applier
        assert isinstance(applier, ProjectionsApplier)
        return applier


@contextlib.asynccontextmanager
async def projections_process(database: str) -> AsyncIterator[ProjectionsProcess]:
    """The read models of `database` consuming the five topics, and an HTTP client to them."""
    settings = ServiceSettings(relay_enabled=False, consumer_backoff_s=0.05)
    postgres = PostgresSettings(dbname=database)
    runtime = create_runtime(settings, postgres)
    http = create_consumer_app(
        runtime, title="read models under test", routers=[read_models_router(settings, postgres)]
    )
    async with runtime.running():
        await eventually(
            runtime.health.readiness, until=lambda p: not p, what="projections assigned"
        )
        transport = httpx.ASGITransport(app=http)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://rm", headers=staff_headers()
        ) as client:
            yield ProjectionsProcess(runtime, client)
