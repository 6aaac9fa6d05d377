"""One service process: FastAPI + the Kafka broker + outbox relay + inbox, wired in a lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from eventsourcing.application import Application
from fastapi import APIRouter, Depends, FastAPI

from fulfilment_kit.contracts import topics
from fulfilment_kit.http.auth import OPS, SERVICE, install_auth, require
from fulfilment_kit.http.context import CORRELATION_PARAMETER, RequestContextMiddleware
from fulfilment_kit.http.errors import document_problems, install_error_handlers
from fulfilment_kit.http.events import events_router
from fulfilment_kit.http.hot import HotRoutesMiddleware, check_hot_routes, hot_routes
from fulfilment_kit.http.limits import RequestLimitsMiddleware
from fulfilment_kit.http.metrics import HttpMetricsMiddleware
from fulfilment_kit.messaging.inbox import Inbox, MessageProcessor, ProcessApplication
from fulfilment_kit.messaging.relay import EventMapper, OutboxRelay
from fulfilment_kit.observability import metrics as kit_metrics
from fulfilment_kit.observability.build import publish_build_info
from fulfilment_kit.observability.business import EventMeter
from fulfilment_kit.observability.logging import configure_logging
from fulfilment_kit.process import ProcessRuntime, install_probes

log = structlog.get_logger(__name__)


ConsumerSpec = tuple[str, MessageProcessor, Sequence[str]]
"""(consumer group, applier, logical source topics) of a consumer besides the service's own."""


@dataclass(kw_only=True)
class ServiceRuntime(ProcessRuntime):
    """Everything one service process runs besides its HTTP routes: its relay too."""

    app: Application[Any]
    mapper: EventMapper
    output_topics: Sequence[str]
    source_topics: Sequence[str] = ()
    extra_consumers: list[ConsumerSpec] = field(default_factory=list)
    """More consumer groups in this process (e.g. projections), each with its own inbox."""
    meter: EventMeter | None = None
    """The service's business metrics, counted from the events its relay publishes."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.relay = OutboxRelay(
            service=self.service,
            app=self.app,
            mapper=self.mapper,
            output_topics=self.output_topics,
            kafka_settings=self.kafka_settings,
            batch_size=self.settings.relay_batch_size,
            poll_interval_s=self.settings.relay_poll_interval_s,
            wake_spacing_s=self.settings.relay_wake_spacing_s,
            heartbeat=self.health.heartbeat("relay"),
        )
        if self.meter is not None:
            self.relay.on_published = self.meter.observe
        kit_metrics.RELAY_RESTARTS.labels(self.service)
        kit_metrics.RELAY_LAG.labels(self.service)
        for topic in self.output_topics:
            kit_metrics.RELAY_PUBLISHED.labels(self.service, topics.physical(topic))
        self.inbox: Inbox | None = None
        self._subscriber: Any = None
        if self.source_topics:  # registered even when disabled: operator tools use its inbox
            assert isinstance(self.app, ProcessApplication), "a consuming service needs an inbox"
            main = self.add_consumer(self.service, self.app, self.source_topics, "consumer")
            self.inbox, self._subscriber = main.inbox, main.subscriber
        for group_id, applier, group_topics in self.extra_consumers:
            self.add_consumer(group_id, applier, group_topics)
        self._watch_readiness(self._database_ready)

    @classmethod
    def of_service(
        cls, service: str, app: ProcessApplication, mapper: EventMapper, **fields: Any
    ) -> ServiceRuntime:
        """A platform service's runtime: it publishes its registry topic (`topics.PUBLISHES`)
        and consumes the topics of what its policies react to."""
        return cls(
            service=service,
            app=app,
            mapper=mapper,
            output_topics=[topics.PUBLISHES[service]],
            source_topics=app.subscriptions(),
            **fields,
        )

    async def _database_ready(self) -> str | None:
        await asyncio.wait_for(asyncio.to_thread(self.app.recorder.max_notification_id), 5)
        return None

    def _start_own(self) -> list[asyncio.Task[None]]:
        if not self.settings.relay_enabled:
            return []
        return [asyncio.create_task(self.relay.run(), name="relay")]

    def _stop_own(self) -> None:
        self.relay.stop()

    def close(self) -> None:
        """Close the consumers' appliers and the application (their connection pools)."""
        self._close_appliers(keep=self.app)
        self.app.close()


def create_http_app(
    runtime: ServiceRuntime,
    *,
    routers: Sequence[APIRouter],
    title: str,
    version: str = "1",
    public_paths: Sequence[str] = (),
) -> FastAPI:
    """The service's FastAPI app with health, metrics, errors, request context and auth.

    Every route of `routers` must declare its roles (`fulfilment_kit.http.auth.require`);
    `public_paths` are routes that authenticate by other means (a signed webhook);
    the routers' hot routes (`fulfilment_kit.http.hot.serve_hot`) serve their busiest
    operations without FastAPI's per-request work.
    """
    configure_logging(runtime.service, runtime.settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with runtime.running():
            yield

    api = FastAPI(title=title, version=version, lifespan=lifespan)
    api.state.runtime = runtime
    install_error_handlers(api)

    hot = [route for router in routers for route in hot_routes(router)]
    if hot:  # innermost: behind every kit middleware, like the routes it stands for
        api.add_middleware(HotRoutesMiddleware, api=api, routes=hot)
    api.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=runtime.settings.http_max_body_bytes,
        max_json_depth=runtime.settings.http_max_json_depth,
    )
    _document_kit_behaviour(api)
    publish_build_info(runtime.service)

    install_probes(api, runtime.health)

    api.include_router(
        events_router(runtime.app, runtime.mapper, runtime.relay.source),
        dependencies=[Depends(require(SERVICE, OPS))],
    )
    for router in routers:
        api.include_router(router)
    install_auth(api, public_paths=public_paths)
    check_hot_routes(api, hot)
    # Outside auth, so refused requests (401) are counted and timed too.
    api.add_middleware(HttpMetricsMiddleware, service=runtime.service)
    api.add_middleware(RequestContextMiddleware)  # outermost: 401s carry a correlation id too
    return api


def _document_kit_behaviour(api: FastAPI) -> None:
    """The OpenAPI says what the kit does to every route: its problem statuses (as
    problem+json) and the X-Correlation-Id header."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = generate()
            document_problems(schema)
            for path_item in schema.get("paths", {}).values():
                for operation in path_item.values():
                    parameters = operation.setdefault("parameters", [])
                    if all(p.get("name") != CORRELATION_PARAMETER["name"] for p in parameters):
                        parameters.append(dict(CORRELATION_PARAMETER))
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
