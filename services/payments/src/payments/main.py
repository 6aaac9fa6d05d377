"""Wiring of the payments service process."""

from __future__ import annotations

from fastapi import FastAPI

from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.privacy import open_vault
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.serve import serve_or_relay
from fulfilment_kit.settings import ServiceSettings
from payments.api import router
from payments.application import PaymentsApplication
from payments.contracts import to_public
from payments.gateway import PaymentGateway
from payments.metrics import payment_meter
from payments.worker import ProviderWorker

SERVICE = "payments"
DEFAULT_PORT = 8003


def create_runtime(
    settings: ServiceSettings | None = None, gateway: PaymentGateway | None = None
) -> ServiceRuntime:
    settings = settings or ServiceSettings()
    app = PaymentsApplication(
        env=eventsourcing_env(SERVICE, settings),
        gateway=gateway,
        vault=open_vault(SERVICE, may_open=("payment",), service_settings=settings),
    )
    runtime = ServiceRuntime.of_service(
        SERVICE, app, to_public, settings=settings, meter=payment_meter()
    )
    if settings.consumers_enabled:
        # The provider calls the policy recorded as intents, outside its transactions.
        worker = ProviderWorker(
            app,
            on_recorded=runtime.relay.wake,
            heartbeat=runtime.health.heartbeat("provider-worker"),
        )
        runtime.background.append(worker.run)
    return runtime


def create_app() -> FastAPI:
    return create_http_app(create_runtime(), routers=[router], title="Payments service")


def run() -> None:
    """`fulfil-payments` serves HTTP, relay and inbox; `fulfil-payments relay` only the relay."""
    serve_or_relay(create_runtime, "payments.main:create_app", DEFAULT_PORT)
