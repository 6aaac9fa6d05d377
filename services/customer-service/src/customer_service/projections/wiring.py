"""Attach the read models to a service runtime: one more consumer group plus HTTP routes."""

from __future__ import annotations

import structlog
from fastapi import APIRouter

from customer_service.projections import GROUP
from customer_service.projections.api import projections_router, unavailable_router
from customer_service.projections.queries import ReadModels
from customer_service.projections.store import ProjectionsApplier, ReadModelRecorder, datastore
from fulfilment_kit.contracts import topics
from fulfilment_kit.runtime import ServiceRuntime
from fulfilment_kit.settings import PostgresSettings

log = structlog.get_logger(__name__)


def attach_projections(
    runtime: ServiceRuntime, postgres: PostgresSettings | None = None
) -> APIRouter:
    """Register the projections consumer (group `customer-service-projections`, all five
    topics) on `runtime` and return the router of `/timeline`, `/customers`, `/kpis`."""
    if runtime.settings.persistence != "postgres":
        reason = "the read models need PostgreSQL (FULFIL_PERSISTENCE=postgres)"
        log.warning("read models disabled", reason=reason)
        return unavailable_router(reason)
    store = datastore(postgres)
    recorder = ReadModelRecorder(store)
    recorder.create_table()
    # A projection failure is a bug, never a reason to miss an event the producers accepted:
    # the partition stops at it (retried with backoff, alerted), nothing is dead-lettered.
    runtime.add_consumer(GROUP, ProjectionsApplier(recorder), topics.ALL, on_failure="stop")
    return projections_router(ReadModels(store))
