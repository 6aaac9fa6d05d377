"""Wiring of the shipping service process."""

from __future__ import annotations

from fastapi import FastAPI

from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.privacy import open_vault
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.serve import serve_or_relay
from fulfilment_kit.settings import ServiceSettings
from shipping.api import WEBHOOK_PATH, router
from shipping.application import ShippingApplication
from shipping.contracts import to_public
from shipping.dispatcher import AutoDispatcher
from shipping.gateway import (
    CarrierGateway,
    HttpCarrierGateway,
    RetryingCarrier,
    SandboxCarrier,
)
from shipping.metrics import initialise_metrics
from shipping.settings import ShippingSettings

SERVICE = "shipping"
DEFAULT_PORT = 8004


def create_carrier(settings: ShippingSettings) -> CarrierGateway:
    inner: CarrierGateway
    if settings.carrier_gateway == "http":
        assert settings.carrier_url is not None
        assert settings.carrier_key is not None
        inner = HttpCarrierGateway(
            base_url=settings.carrier_url,
            api_key=settings.carrier_key.get_secret_value(),
            timeout_s=settings.carrier_timeout_s,
        )
    else:
        inner = SandboxCarrier()
    return RetryingCarrier(
        inner, attempts=settings.carrier_attempts, backoff_s=settings.carrier_backoff_s
    )


def create_runtime(
    settings: ServiceSettings | None = None, shipping: ShippingSettings | None = None
) -> ServiceRuntime:
    settings = settings or ServiceSettings()
    shipping = shipping or ShippingSettings()
    app = ShippingApplication(
        env=eventsourcing_env(SERVICE, settings),
        carrier=create_carrier(shipping),
        vault=open_vault(SERVICE, may_open=("contact",), service_settings=settings),
    )
    runtime = ServiceRuntime.of_service(SERVICE, app, to_public, settings=settings)
    initialise_metrics()
    if shipping.shipping_auto_dispatch_s > 0:
        dispatcher = AutoDispatcher(
            app,
            after_s=shipping.shipping_auto_dispatch_s,
            on_dispatched=runtime.relay.wake,
            heartbeat=runtime.health.heartbeat("auto-dispatch"),
        )
        runtime.background.append(dispatcher.run)
    return runtime


def create_app() -> FastAPI:
    shipping = ShippingSettings()
    api = create_http_app(
        create_runtime(shipping=shipping),
        routers=[router],
        title="Shipping service",
        public_paths=[WEBHOOK_PATH],
    )
    api.state.carrier_webhook_secrets = shipping.webhook_secrets()
    api.state.carrier_webhook_tolerance_s = shipping.carrier_webhook_tolerance_s
    return api


def run() -> None:
    """`fulfil-shipping` serves HTTP + relay; `fulfil-shipping relay` runs only the relay."""
    serve_or_relay(create_runtime, "shipping.main:create_app", DEFAULT_PORT)
