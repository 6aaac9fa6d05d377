"""The two sides of the read models: the consumer that writes them (the read-models process)
and the routes that read them (customer-service's `/timeline`, `/customers`, `/kpis`)."""

from __future__ import annotations

import structlog
from fastapi import APIRouter

from customer_service.projections import GROUP
from customer_service.projections.api import projections_router, unavailable_router
from customer_service.projections.queries import ReadModels
from customer_service.projections.store import ProjectionsApplier, ReadModelRecorder, datastore
from fulfilment_kit.consumer_runtime import ConsumerRuntime
from fulfilment_kit.process import ConsumerGroup
from fulfilment_kit.settings import PostgresSettings, ServiceSettings

log = structlog.get_logger(__name__)

NEEDS_POSTGRES = "the read models need PostgreSQL (FULFIL_PERSISTENCE=postgres)"


def add_projections_consumer(
    runtime: ConsumerRuntime, recorder: ReadModelRecorder
) -> ConsumerGroup:
    """Register the projections' consumer group (`customer-service-projections`) on `runtime`,
    writing through `recorder`: it sees every public event (the timeline records each one),
    so it subscribes to every topic that carries one."""
    # A projection failure is a bug, never a reason to miss an event the producers accepted:
    # the partition stops at it (retried with backoff, alerted), nothing is dead-lettered.
    return runtime.add_consumer(GROUP, ProjectionsApplier(recorder), on_failure="stop")


def read_models_router(
    settings: ServiceSettings, postgres: PostgresSettings | None = None
) -> APIRouter:
    """The routes of `/timeline`, `/customers`, `/kpis` over the tables the read-models
    process writes (created here when missing, so reads answer before it first ran)."""
    if settings.persistence != "postgres":
        log.warning("read models disabled", reason=NEEDS_POSTGRES)
        return unavailable_router(NEEDS_POSTGRES)
    store = datastore(postgres)
    ReadModelRecorder(store).create_table()
    return projections_router(ReadModels(store))
