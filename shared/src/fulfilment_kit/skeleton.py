"""A service that is not built yet: settings, logging, health and metrics, nothing else."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging.inbox import InboxApplication
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.settings import ServiceSettings

OWN_TOPIC = {
    "orders": topics.ORDERS,
    "inventory": topics.INVENTORY,
    "payments": topics.PAYMENTS,
    "shipping": topics.SHIPPING,
    "customer-service": topics.CUSTOMER_SERVICE,
}


def create_skeleton_app(service: str) -> FastAPI:
    settings = ServiceSettings()
    app = InboxApplication(env=eventsourcing_env(service, settings))
    runtime = ServiceRuntime(
        service=service,
        app=app,
        mapper=lambda _: (),
        output_topics=[OWN_TOPIC[service]],
        settings=settings,
    )
    return create_http_app(runtime, routers=[], title=f"{service} service")


def run_service(factory: str, default_port: int) -> None:
    """Serve an app factory with uvicorn on FULFIL_HTTP_PORT (or the service's default port)."""
    settings = ServiceSettings()
    uvicorn.run(
        factory,
        factory=True,
        host=settings.http_host,
        port=settings.http_port or default_port,
        log_config=None,
        access_log=False,
    )
