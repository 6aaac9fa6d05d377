"""Wiring of the orders service process."""

from __future__ import annotations

from fastapi import FastAPI

from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.privacy import open_vault
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.serve import serve_or_relay
from fulfilment_kit.settings import ServiceSettings
from orders.api import router
from orders.application import OrdersApplication
from orders.contracts import to_public
from orders.deadlines import DeadlineWatch
from orders.metrics import order_meter
from orders.settings import OrdersSettings

SERVICE = "orders"
DEFAULT_PORT = 8001


def create_runtime(
    settings: ServiceSettings | None = None, orders: OrdersSettings | None = None
) -> ServiceRuntime:
    settings = settings or ServiceSettings()
    orders = orders or OrdersSettings()
    app = OrdersApplication(
        env=eventsourcing_env(SERVICE, settings),
        vault=open_vault(SERVICE, may_open=("contact",), service_settings=settings),
    )
    runtime = ServiceRuntime.of_service(
        SERVICE, app, to_public, settings=settings, meter=order_meter()
    )
    runtime.background.append(DeadlineWatch(app, deadlines_s=orders.deadlines_s()).run)
    return runtime


def create_app() -> FastAPI:
    return create_http_app(create_runtime(), routers=[router], title="Orders service")


def run() -> None:
    """`fulfil-orders` serves HTTP + relay; `fulfil-orders relay` runs only the relay."""
    serve_or_relay(create_runtime, "orders.main:create_app", DEFAULT_PORT)
