"""Wiring of the customer-service service process."""

from __future__ import annotations

from fastapi import FastAPI

from customer_service.api import router
from customer_service.application import CustomerServiceApplication
from customer_service.cases.sla import SlaWatch
from customer_service.clock import LOOPBACK, ServiceClock, clock_router
from customer_service.contracts import to_public
from customer_service.metrics import CaseSampler, customer_service_meter
from customer_service.projections.wiring import read_models_router
from customer_service.returns.labels import RetryingLabels, SandboxLabels
from customer_service.settings import CustomerServiceSettings
from fulfilment_kit.observability.business import sampler
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.serve import serve_or_relay
from fulfilment_kit.settings import ServiceSettings

SERVICE = "customer-service"
DEFAULT_PORT = 8005
BACKGROUND_CONSUMERS = True
"""Off the order's path: cases follow the orders, no order waits for them (spaced batches, a
lower CPU priority: ADR 28, 29; the Deployment's CPU request, deploy/k8s)."""


def create_runtime(
    settings: ServiceSettings | None = None,
    customer_service: CustomerServiceSettings | None = None,
    clock: ServiceClock | None = None,
) -> ServiceRuntime:
    settings = settings or ServiceSettings()
    cs = customer_service or CustomerServiceSettings()
    clock = clock or ServiceClock()
    labels = RetryingLabels(
        SandboxLabels(), attempts=cs.return_label_attempts, backoff_s=cs.return_label_backoff_s
    )
    app = CustomerServiceApplication(
        env=eventsourcing_env(SERVICE, settings),
        return_policy=cs.return_policy(),
        sla=cs.sla_policy(),
        labels=labels,
        clock=clock,
    )
    runtime = ServiceRuntime.of_service(
        SERVICE,
        app,
        to_public,
        settings=settings,
        meter=customer_service_meter(app),
        background_consumers=BACKGROUND_CONSUMERS,
    )
    runtime.background.append(sampler(CaseSampler(app).sample, interval_s=5.0, changes=app))
    watch = SlaWatch(
        app,
        clock=clock,
        interval_s=cs.case_sla_poll_s,
        on_breached=runtime.relay.wake,
        heartbeat=runtime.health.heartbeat("sla-watch"),
    )
    runtime.background.append(watch.run)
    return runtime


def create_app() -> FastAPI:
    cs = CustomerServiceSettings()
    clock = ServiceClock()
    runtime = create_runtime(customer_service=cs, clock=clock)
    # The read models are written by their own process (fulfil-read-models, ADR 17).
    routers = [router, read_models_router(runtime.settings)]
    if cs.test_clock:
        if runtime.settings.http_host not in LOOPBACK:
            raise RuntimeError(
                "FULFIL_TEST_CLOCK=1 needs FULFIL_HTTP_HOST on loopback (tests only, never exposed)"
            )
        routers.append(clock_router)
    api = create_http_app(
        runtime,
        routers=routers,
        title="Customer-service service",
    )
    api.state.clock = clock
    return api


def run() -> None:
    """`fulfil-customer-service` serves HTTP + relay; `... relay` runs only the relay."""
    serve_or_relay(create_runtime, "customer_service.main:create_app", DEFAULT_PORT)
