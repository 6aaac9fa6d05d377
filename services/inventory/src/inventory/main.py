"""Wiring of the inventory service process."""

from __future__ import annotations

import sys

from fastapi import FastAPI

from fulfilment_kit.contracts import topics
from fulfilment_kit.observability.business import sampler
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.relay_only import run_relay_only
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.serve import run_service
from fulfilment_kit.settings import ServiceSettings
from inventory.api import router
from inventory.application import InventoryApplication
from inventory.contracts import to_public
from inventory.metrics import inventory_meter, sample_low_stock

SERVICE = "inventory"
DEFAULT_PORT = 8002
SOURCE_TOPICS = (topics.ORDERS, topics.PAYMENTS, topics.SHIPPING, topics.CUSTOMER_SERVICE)


def create_runtime(settings: ServiceSettings | None = None) -> ServiceRuntime:
    settings = settings or ServiceSettings()
    app = InventoryApplication(env=eventsourcing_env(SERVICE, settings))
    runtime = ServiceRuntime(
        service=SERVICE,
        app=app,
        mapper=to_public,
        output_topics=[topics.INVENTORY],
        source_topics=SOURCE_TOPICS,
        settings=settings,
        meter=inventory_meter(),
    )
    runtime.background.append(sampler(lambda: sample_low_stock(app), interval_s=5.0))
    return runtime


def create_app() -> FastAPI:
    return create_http_app(create_runtime(), routers=[router], title="Inventory service")


def run() -> None:
    """`fulfil-inventory` serves HTTP + relay + inbox; `fulfil-inventory relay` only the relay."""
    if sys.argv[1:] == ["relay"]:
        run_relay_only(create_runtime())
    else:
        run_service("inventory.main:create_app", DEFAULT_PORT)
