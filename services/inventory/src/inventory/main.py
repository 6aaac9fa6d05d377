"""Wiring of the inventory service process."""

from __future__ import annotations

from fastapi import FastAPI

from fulfilment_kit.observability.business import sampler
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.serve import serve_or_relay
from fulfilment_kit.settings import ServiceSettings
from inventory.api import router
from inventory.application import InventoryApplication
from inventory.contracts import to_public
from inventory.metrics import inventory_meter, sample_low_stock

SERVICE = "inventory"
DEFAULT_PORT = 8002


def create_runtime(settings: ServiceSettings | None = None) -> ServiceRuntime:
    settings = settings or ServiceSettings()
    app = InventoryApplication(env=eventsourcing_env(SERVICE, settings))
    runtime = ServiceRuntime.of_service(
        SERVICE, app, to_public, settings=settings, meter=inventory_meter()
    )
    # Reads every StockItem: only after the log changed, at most every 15 s (ADR 24).
    low_stock = sampler(lambda: sample_low_stock(app), interval_s=15.0, changes=app)
    runtime.background.append(low_stock)
    return runtime


def create_app() -> FastAPI:
    return create_http_app(create_runtime(), routers=[router], title="Inventory service")


def run() -> None:
    """`fulfil-inventory` serves HTTP + relay + inbox; `fulfil-inventory relay` only the relay."""
    serve_or_relay(create_runtime, "inventory.main:create_app", DEFAULT_PORT)
