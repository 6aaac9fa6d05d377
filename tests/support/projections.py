"""A customer-service-like process that runs only the read models (attach_projections)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from customer_service.projections.store import ProjectionsApplier
from customer_service.projections.wiring import attach_projections
from fulfilment_kit.messaging.inbox import Inbox, InboxApplication
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.settings import PostgresSettings, ServiceSettings
from tests.support.auth import staff_headers
from tests.support.polling import eventually


@dataclass
class ProjectionsProcess:
    runtime: ServiceRuntime
    client: httpx.AsyncClient

    @property
    def inbox(self) -> Inbox:
        return self.runtime.consumers[-1].inbox

    @property
    def applier(self) -> ProjectionsApplier:
        applier = self.runtime.consumers[-1].applier
        assert isinstance(applier, ProjectionsApplier)
        return applier


@contextlib.asynccontextmanager
async def projections_process(database: str) -> AsyncIterator[ProjectionsProcess]:
    """The read models of `database` consuming the five topics, and an HTTP client to them."""
    settings = ServiceSettings(relay_enabled=False, consumer_backoff_s=0.05)
    postgres = PostgresSettings(dbname=database)
    app = InboxApplication(env=eventsourcing_env("customer-service", settings, postgres))
    runtime = ServiceRuntime(
        service="customer-service",
        app=app,
        mapper=lambda _: (),
        output_topics=[],
        settings=settings,
    )
    router = attach_projections(runtime, postgres)
    http = create_http_app(runtime, routers=[router], title="read models under test")
    async with runtime.running():
        await eventually(
            runtime.health.readiness, until=lambda p: not p, what="projections assigned"
        )
        transport = httpx.ASGITransport(app=http)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://rm", headers=staff_headers()
        ) as client:
            yield ProjectionsProcess(runtime, client)
