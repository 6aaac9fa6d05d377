"""Per-request log context as a plain ASGI middleware (Starlette's BaseHTTPMiddleware costs
a task group and memory streams per request: a third of a busy service's time)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CORRELATION_HEADER = b"x-correlation-id"
REQUEST_LOG_KEYS = ("correlation_id", "request_id")
"""What the middleware binds for a request's log lines (and unbinds after it)."""
CORRELATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}$"
"""What a caller's X-Correlation-Id may be: 1-128 visible ASCII characters (a UUID, a trace id,
`checkout:1234`); it is copied onto every Kafka record and log line the request causes."""
_CORRELATION_ID = re.compile(CORRELATION_ID_PATTERN.encode())


CORRELATION_PARAMETER: dict[str, Any] = {
    "name": "X-Correlation-Id",
    "in": "header",
    "required": False,
    "description": "Correlates the request with the events it causes; echoed in the response. "
    "A new id is made when it is missing; an invalid one is refused with 400.",
    "schema": {"type": "string", "pattern": CORRELATION_ID_PATTERN, "maxLength": 128},
}
"""The header in the OpenAPI of every operation."""


def header_value(scope: Scope, name: bytes) -> bytes | None:
    """The value of a request header (lower-case `name`; the last one if repeated), found
    without building a dict of every header per request and middleware."""
    found = None
    for key, value in scope["headers"]:
        if key == name:
            found = value
    return found


class RequestContextMiddleware:
    """Binds correlation and request ids for the request's log lines; echoes the correlation id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = header_value(scope, CORRELATION_HEADER)
        if raw is not None and not _CORRELATION_ID.fullmatch(raw):
            await _bad_correlation_id(send)
            return
        correlation_id = raw.decode("ascii") if raw else str(uuid.uuid4())
        structlog.contextvars.bind_contextvars(
            correlation_id=correlation_id, request_id=str(uuid.uuid4())
        )

        async def send_with_correlation(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                headers.append((CORRELATION_HEADER, correlation_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_correlation)
        finally:
            structlog.contextvars.unbind_contextvars(*REQUEST_LOG_KEYS)


async def _bad_correlation_id(send: Send) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "detail": "invalid header X-Correlation-Id: 1 to 128 characters from A-Z, a-z, "
            "0-9 and ._:/+=@- starting with a letter or digit",
            "errors": [
                {
                    "field": "X-Correlation-Id",
                    "message": "must match " + CORRELATION_ID_PATTERN,
                    "type": "correlation_id",
                }
            ],
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})
