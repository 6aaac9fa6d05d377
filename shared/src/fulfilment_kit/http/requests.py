"""What a route needs from its request: the service's application, a command's trace, and
the answer after a command (the relay woken, or the replay marked): one
copy for every service."""

from __future__ import annotations

import uuid
from typing import TypeVar

import structlog
from fastapi import Request, Response

from fulfilment_kit.tracing import Trace

A = TypeVar("A")


def app_of(request: Request, kind: type[A]) -> A:
    """The application serving `request` (the runtime's), checked to be a `kind`."""
    app = request.app.state.runtime.app
    assert isinstance(app, kind), f"the runtime serves {type(app).__name__}, not {kind.__name__}"
    return app


def trace_of(
    request: Request,
    cause: str | None = None,
    *,
    key: str | None = None,
    default: str | None = None,
) -> Trace:
    """A command's trace: the caller's X-Correlation-Id, else `default` when given, else the
    request's correlation id; caused by `cause`, else `http:<idempotency key or new uuid>`."""
    fallback = default
    if fallback is None:
        fallback = structlog.contextvars.get_contextvars().get("correlation_id", "")
    return Trace(
        correlation_id=request.headers.get("x-correlation-id") or fallback,
        causation_id=cause or f"http:{key or uuid.uuid4()}",
    )


def wake_relay(request: Request) -> None:
    """Tell the relay that a commit left events to publish (it need not wait for its poll)."""
    request.app.state.runtime.relay.wake()


def answer_command(
    request: Request, response: Response, *, applied: bool, location: str | None = None
) -> bool:
    """After a command: wake the relay when it applied (its events wait to be published),
    else mark the answer a replay (`Idempotent-Replayed: true`); `Location` when given.
    Returns `applied`."""
    if applied:
        wake_relay(request)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    if location is not None:
        response.headers["Location"] = location
    return applied
