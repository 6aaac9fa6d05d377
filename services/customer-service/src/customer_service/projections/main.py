"""Wiring of the read-models process (`fulfil-read-models`): the projections' consumer group
writing the tables of schema `readmodels` in customer-service's database (ADR 17).

It serves only `/livez`, `/readyz` and `/metrics`; customer-service serves the reads.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from customer_service.projections.store import ReadModelRecorder, datastore
from customer_service.projections.wiring import NEEDS_POSTGRES, add_projections_consumer
from fulfilment_kit.consumer_runtime import ConsumerRuntime, create_consumer_app
from fulfilment_kit.serve import run_service
from fulfilment_kit.settings import PostgresSettings, ServiceSettings

SERVICE = "read-models"
"""The deployable's name: its Kafka user, its `service` metric label, its Deployment."""
DEFAULT_PORT = 8006
BACKGROUND_CONSUMERS = True
"""Off the order's path: the read models follow the orders, no order waits for them (spaced
batches, a lower CPU priority: ADR 28, 29; the Deployment's CPU request, deploy/k8s)."""


def create_runtime(
    settings: ServiceSettings | None = None,
    postgres: PostgresSettings | None = None,
    *,
    create_tables: bool = True,
) -> ConsumerRuntime:
    """The read-models process: one consumer group, its tables created first unless told not
    to (a unit test without a database)."""
    settings = settings or ServiceSettings()
    if settings.persistence != "postgres":
        raise RuntimeError(NEEDS_POSTGRES)
    store = datastore(postgres)
    recorder = ReadModelRecorder(store)
    if create_tables:
        recorder.create_table()

    def select_one() -> None:
        with store.transaction(commit=False) as curs:
            curs.execute("SELECT 1")

    async def database() -> str | None:
        await asyncio.wait_for(asyncio.to_thread(select_one), 5)
        return None

    runtime = ConsumerRuntime(
        service=SERVICE,
        database=database,
        settings=settings,
        background_consumers=BACKGROUND_CONSUMERS,
    )
    add_projections_consumer(runtime, recorder)
    return runtime


def create_app() -> FastAPI:
    return create_consumer_app(create_runtime(), title="Read models")


def run() -> None:
    """`fulfil-read-models`: the projections' consumer and the probes."""
    run_service("customer_service.projections.main:create_app", DEFAULT_PORT)
