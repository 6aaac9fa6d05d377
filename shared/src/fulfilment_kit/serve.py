"""Serve a service's FastAPI app factory with uvicorn."""

from __future__ import annotations

import uvicorn

from fulfilment_kit.settings import ServiceSettings


def run_service(factory: str, default_port: int) -> None:
    """Serve an app factory on FULFIL_HTTP_PORT (or the service's default port)."""
    settings = ServiceSettings()
    uvicorn.run(
        factory,
        factory=True,
        host=settings.http_host,
        port=settings.http_port or default_port,
        log_config=None,
        access_log=False,
    )
