"""A process that only consumes: consumer groups writing their own tables (read models),
no event store, no relay; its HTTP app serves only `/livez`, `/readyz` and `/metrics`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI

from fulfilment_kit.http.auth import install_auth
from fulfilment_kit.http.context import RequestContextMiddleware
from fulfilment_kit.http.errors import install_error_handlers
from fulfilment_kit.observability.build import publish_build_info
from fulfilment_kit.observability.health import Check
from fulfilment_kit.observability.logging import configure_logging
from fulfilment_kit.process import ProcessRuntime, install_probes


@dataclass(kw_only=True)
class ConsumerRuntime(ProcessRuntime):
    """Everything a consume-only process runs: its consumer groups and background loops.

    `database` is the readiness check of the database its appliers write (a consumer that
    cannot reach it holds its partitions and says so in the `consumers` check as well).
    """

    database: Check

    def __post_init__(self) -> None:
        super().__post_init__()
        self._watch_readiness(self.database)


def create_consumer_app(
    runtime: ConsumerRuntime, *, title: str, routers: Sequence[APIRouter] = ()
) -> FastAPI:
    """The process's FastAPI app: the probes, and `routers` (each declaring its roles)."""
    configure_logging(runtime.service, runtime.settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with runtime.running():
            yield

    # Without routes of its own there is nothing to document (and nothing to authenticate).
    api = FastAPI(
        title=title,
        version="1",
        lifespan=lifespan,
        openapi_url="/openapi.json" if routers else None,
        docs_url="/docs" if routers else None,
        redoc_url=None,
    )
    api.state.runtime = runtime
    install_error_handlers(api)
    publish_build_info(runtime.service)
    install_probes(api, runtime.health)
    for router in routers:
        api.include_router(router)
    if routers:
        install_auth(api)
    api.add_middleware(RequestContextMiddleware)
    return api
