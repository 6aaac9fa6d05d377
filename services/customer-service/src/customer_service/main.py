"""Wiring of the customer-service service process."""

from __future__ import annotations

import sys
from datetime import timedelta

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from customer_service.api import router
from customer_service.application import CustomerServiceApplication
from customer_service.cases.domain import SlaPolicy
from customer_service.cases.sla import SlaWatch
from customer_service.clock import LOOPBACK, ServiceClock, clock_router
from customer_service.contracts import to_public
from customer_service.metrics import CaseSampler, customer_service_meter
from customer_service.projections.wiring import read_models_router
from customer_service.returns.domain import ReturnPolicy
from customer_service.returns.labels import RetryingLabels, SandboxLabels
from fulfilment_kit.contracts import topics
from fulfilment_kit.observability.business import sampler
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.relay_only import run_relay_only
from fulfilment_kit.runtime import ServiceRuntime, create_http_app
from fulfilment_kit.serve import run_service
from fulfilment_kit.settings import ServiceSettings

SERVICE = "customer-service"
DEFAULT_PORT = 8005
SOURCE_TOPICS = topics.CONSUMERS[SERVICE]

_HOUR = 3600.0


class CustomerServiceSettings(BaseSettings):
    """Settings of the customer-service service itself (FULFIL_*)."""

    model_config = SettingsConfigDict(env_prefix="FULFIL_", extra="ignore")

    return_window_days: float = Field(default=30.0, ge=0)
    return_auto_approve_max_minor: int = Field(default=20_000, ge=0)
    return_damaged_refund_percent: int = Field(default=0, ge=0, le=100)
    return_label_attempts: int = Field(default=3, ge=1)
    return_label_backoff_s: float = Field(default=0.05, ge=0)
    case_sla_urgent_first_response_s: float = Field(default=1 * _HOUR, gt=0)
    case_sla_urgent_resolution_s: float = Field(default=8 * _HOUR, gt=0)
    case_sla_high_first_response_s: float = Field(default=4 * _HOUR, gt=0)
    case_sla_high_resolution_s: float = Field(default=24 * _HOUR, gt=0)
    case_sla_normal_first_response_s: float = Field(default=8 * _HOUR, gt=0)
    case_sla_normal_resolution_s: float = Field(default=72 * _HOUR, gt=0)
    case_sla_low_first_response_s: float = Field(default=24 * _HOUR, gt=0)
    case_sla_low_resolution_s: float = Field(default=168 * _HOUR, gt=0)
    case_sla_poll_s: float = Field(default=1.0, gt=0)
    test_clock: bool = False
    """Mount `POST /_test/clock` (move the service clock forward): tests only, and only when
    the service listens on loopback; it answers loopback callers with the ops role only."""

    def return_policy(self) -> ReturnPolicy:
        return ReturnPolicy(
            window_days=self.return_window_days,
            auto_approve_max_minor=self.return_auto_approve_max_minor,
            damaged_refund_percent=self.return_damaged_refund_percent,
        )

    def sla_policy(self) -> SlaPolicy:
        def pair(priority: str) -> tuple[timedelta, timedelta]:
            first = getattr(self, f"case_sla_{priority}_first_response_s")
            resolution = getattr(self, f"case_sla_{priority}_resolution_s")
            return timedelta(seconds=first), timedelta(seconds=resolution)

        return SlaPolicy({p: pair(p) for p in ("urgent", "high", "normal", "low")})


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
    runtime = ServiceRuntime(
        service=SERVICE,
        app=app,
        mapper=to_public,
        output_topics=[topics.CUSTOMER_SERVICE],
        source_topics=SOURCE_TOPICS,
        settings=settings,
        meter=customer_service_meter(app),
    )
    runtime.background.append(sampler(CaseSampler(app).sample, interval_s=5.0))
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
    if sys.argv[1:] == ["relay"]:
        run_relay_only(create_runtime())
    else:
        run_service("customer_service.main:create_app", DEFAULT_PORT)
