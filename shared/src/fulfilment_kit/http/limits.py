"""Bounds on what a request may send, enforced before anything parses it (plain ASGI).

A body above `max_body_bytes` is refused with 413 from its Content-Length alone, or as soon
as the streamed bytes pass the limit (chunked bodies): a 100 MB upload is never read whole.
A JSON body nested deeper than `max_json_depth` is refused with 400 before FastAPI parses it.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fulfilment_kit.http.errors import PROBLEM_JSON

DEFAULT_MAX_BODY_BYTES = 256 * 1024
DEFAULT_MAX_JSON_DEPTH = 16

# A JSON string (skipped whole, escapes included) or one bracket.
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """Whether `body` (JSON text, valid or not) nests arrays/objects deeper than `max_depth`."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    depth = 0
    for token in _JSON_TOKENS.finditer(body):
        char = token.group()
        if char in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return True
        elif char in (b"]", b"}"):
            depth -= 1
    return False


class _TooLarge(Exception):
    pass


class RequestLimitsMiddleware:
    """Refuses bodies above `max_body_bytes` (413) and JSON deeper than `max_json_depth` (400)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_type = None
        for name, value in scope["headers"]:  # the last of a repeated header counts
            if name == b"content-length":
                declared = value
            elif name == b"content-type":
                content_type = value
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _problem(send, 400, "Bad Request", "Content-Length is not a number")
                return
            if length > self.max_body_bytes:
                await self._too_large(send)
                return
        try:
            body, first = await self._read_body(receive)
        except _TooLarge:
            await self._too_large(send)
            return
        is_json = content_type is None or b"json" in content_type
        if body and is_json and json_depth_exceeds(body, self.max_json_depth):
            await _problem(
                send,
                400,
                "Bad Request",
                f"the JSON body nests deeper than {self.max_json_depth} levels",
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {**first, "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> tuple[bytes, Message]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), message  # a disconnect: let the app see it
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), message

    async def _too_large(self, send: Send) -> None:
        await _problem(
            send,
            413,
            "Content Too Large",
            f"the request body is larger than {self.max_body_bytes} bytes",
        )


async def _problem(send: Send, status: int, title: str, detail: str) -> None:
    import json

    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()
    headers: list[Any] = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
