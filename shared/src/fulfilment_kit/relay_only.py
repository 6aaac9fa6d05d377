"""Run only a service's outbox relay (for a dedicated relay deployment, or to kill it in tests)."""

from __future__ import annotations

import asyncio
import signal

import structlog
import uvloop

from fulfilment_kit import heap
from fulfilment_kit.observability.logging import configure_logging
from fulfilment_kit.runtime import ServiceRuntime


def run_relay_only(runtime: ServiceRuntime) -> None:
    """Publish the service's events until SIGTERM/SIGINT."""
    configure_logging(f"{runtime.service}-relay", runtime.settings.log_level)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runtime.relay.stop)
        structlog.get_logger(__name__).info("relay-only process started")
        heap.settled()
        await runtime.relay.run()

    try:
        uvloop.run(main())  # the loop the services run on (fulfilment_kit.serve)
    finally:
        runtime.app.close()
