"""Wiring of the orders service process."""

from __future__ import annotations

import sys

from fastapi import FastAPI

from fulfilment_kit.contracts import topics
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.privacy import open_vault
from fulfilment_kit.relay_only import run_relay_only
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.serve import run_service
from fulfilment_kit.settings import ServiceSettings
from orders.api import router
from orders.application import OrdersApplication
from orders.contracts import to_public
from orders.deadlines import DeadlineWatch
from orders.metrics import order_meter
from orders.settings import OrdersSettings

SERVICE = "orders"
DEFAULT_PORT = 8001
SOURCE_TOPICS = (topics.INVENTORY, topics.PAYMENTS, topics.SHIPPING, topics.CUSTOMER_SERVICE)


def create_runtime(
    settings: ServiceSettings | None = None, orders: OrdersSettings | None = None
) -> ServiceRuntime:
    settings = settings or ServiceSettings()
    orders = orders or OrdersSettings()
    app = OrdersApplication(
        env=eventsourcing_env(SERVICE, settings),
        vault=open_vault(SERVICE, may_open=("contact",), service_settings=settings),
    )
    runtime = ServiceRuntime(
        service=SERVICE,
        app=app,
        mapper=to_public,
        output_topics=[topics.ORDERS],
        source_topics=SOURCE_TOPICS,
        settings=settings,
        meter=order_meter(),
    )
    runtime.background.append(DeadlineWatch(app, deadlines_s=orders.deadlines_s()).run)
    return runtime


def create_app() -> FastAPI:
    return create_http_app(create_runtime(), routers=[router], title="Orders service")


def run() -> None:
    """`fulfil-orders` serves HTTP + relay; `fulfil-orders relay` runs only the relay."""
    if sys.argv[1:] == ["relay"]:
        run_relay_only(create_runtime())
    else:
        run_service("orders.main:create_app", DEFAULT_PORT)
