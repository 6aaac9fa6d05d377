"""HTTP RED metrics as a plain ASGI middleware, labelled by route template (never the raw path)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fulfilment_kit.observability import metrics

MAX_CACHED_LABEL_SETS = 512
UNMATCHED = "unmatched"
"""The route label of a request no route matched (a 404 or 405 of the router)."""


def route_template(scope: Scope) -> str:
    """The matched route's template (`/orders/{order_id}`); routing stores the route in scope."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class HttpMetricsMiddleware:
    """Counts requests by route template and status, times them, and tracks those in flight."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self.in_flight = metrics.HTTP_IN_FLIGHT.labels(service)
        # (method, route, status) -> the request counter's and the histogram's children:
        # `labels()` takes a lock and builds a key per call; the label sets are few.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]  # an exception that escapes every handler is served as a 500

        async def send_recording_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        began = time.perf_counter()
        self.in_flight.inc()
        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            self.in_flight.dec()
            elapsed = time.perf_counter() - began
            requests, duration = self._metrics(
                str(scope.get("method", "")), route_template(scope), status[0]
            )
            requests.inc()
            duration.observe(elapsed)

    def _metrics(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                metrics.HTTP_REQUESTS.labels(self.service, method, route, str(status)),
                metrics.HTTP_DURATION.labels(self.service, method, route),
            )
            if len(self._children) < MAX_CACHED_LABEL_SETS:  # odd methods stay uncached
                self._children[key] = children
        return children
