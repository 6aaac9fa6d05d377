"""Serve a service's FastAPI app factory with uvicorn."""

from __future__ import annotations

import sys
from collections.abc import Callable

import uvicorn

from fulfilment_kit import heap, priority
from fulfilment_kit.relay_only import run_relay_only
from fulfilment_kit.runtime import ServiceRuntime
from fulfilment_kit.settings import ServiceSettings

EVENT_LOOP = "uvloop"
HTTP_PROTOCOL = "httptools"


def serve_or_relay(
    create_runtime: Callable[[], ServiceRuntime], factory: str, default_port: int
) -> None:
    """A service's command: `fulfil-<service>` serves HTTP, relay, inbox and background loops
    (`factory`); `fulfil-<service> relay` runs only the relay."""
    heap.settle_after_start()
    if sys.argv[1:] == ["relay"]:
        run_relay_only(create_runtime())
    else:
        run_service(factory, default_port)


def run_service(factory: str, default_port: int) -> None:
    """Serve an app factory on FULFIL_HTTP_PORT (or the service's default port).

    On uvloop and httptools (pinned by the kit, not left to uvicorn's "auto"): the event
    loop and the HTTP parser in C, a service's own Python code keeps the CPU."""
    settings = ServiceSettings()
    heap.settle_after_start()  # the process's `running()` settles its heap once started
    priority.lower_after_start()  # and lowers its priority if it is off the order's path
    uvicorn.run(
        factory,
        factory=True,
        host=settings.http_host,
        port=settings.http_port or default_port,
        loop=EVENT_LOOP,
        http=HTTP_PROTOCOL,
        log_config=None,
        access_log=False,
    )
