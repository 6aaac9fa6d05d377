"""Concurrent-write conflicts as 409 problem+json (never a 500), from one place in the kit."""

from __future__ import annotations

import psycopg
import structlog
from eventsourcing.persistence import IntegrityError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fulfilment_kit.idempotency import ConcurrentUpdate, IdempotencyConflict

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
CONCURRENT_WRITE = (
    "the resource was changed by a concurrent request; read it again and retry if still wanted"
)


def _conflict(detail: str) -> JSONResponse:
    body = {"type": "about:blank", "title": "Conflict", "status": 409, "detail": detail}
    return JSONResponse(body, status_code=409, media_type=PROBLEM_JSON)


def install_conflict_handlers(app: FastAPI) -> None:
    """Map an optimistic-concurrency or unique-key conflict that escaped a command, and the
    kit's command exceptions, to 409 problem+json. Called by `install_error_handlers`."""

    @app.exception_handler(IntegrityError)
    @app.exception_handler(psycopg.errors.IntegrityError)
    async def _integrity(request: Request, exc: Exception) -> JSONResponse:
        # The database's message names tables and keys: log it, answer in general terms.
        log.info("concurrent write conflict", path=request.url.path, error=type(exc).__name__)
        return _conflict(CONCURRENT_WRITE)

    @app.exception_handler(ConcurrentUpdate)
    @app.exception_handler(IdempotencyConflict)
    async def _command(_: Request, exc: Exception) -> JSONResponse:
        return _conflict(str(exc))
