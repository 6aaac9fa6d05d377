"""Hot routes: an operation served without FastAPI's per-request work (plain ASGI).

FastAPI spends more CPU on a request than a busy command's own work: routing over every
route, solving the dependency tree, its telemetry and exit stacks, `json.loads` then a
validation, and validating the returned model again before serialising it. A `HotRoute`
serves one (method, path) directly, inside every kit middleware (request context, metrics,
auth, body limits) and with the app's own exception handlers (the same problem+json answers).
Its FastAPI route stays: it is the operation's description (OpenAPI, declared roles), and it
serves every request the hot route declines (`serve` returns None), so anything unusual (a
body FastAPI would refuse, an odd content type) gets exactly FastAPI's answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Serve = Callable[[Request, bytes], Awaitable[Response | None]]
"""(request, its whole body) -> the response, or None: let the FastAPI route answer."""

_DECLINED = "fulfil.hot_declined"
_BODY = "fulfil.hot_body"
_ROUTER_KEY = "fulfil_hot_routes"


@dataclass(frozen=True)
class HotRoute:
    """`method path` served by `serve`; the app's FastAPI route of the same method and path
    describes it and answers what `serve` declines."""

    method: str
    path: str
    serve: Serve


def serve_hot(router: APIRouter, method: str, path: str) -> Callable[[Serve], Serve]:
    """Decorator: `serve` is `router`'s hot route for `method path` (which `router` must
    also declare as a FastAPI route); `create_http_app` installs it with the router."""

    def register(serve: Serve) -> Serve:
        hot_routes(router).append(HotRoute(method, path, serve))
        return serve

    return register


def hot_routes(router: APIRouter) -> list[HotRoute]:
    """The hot routes registered on `router`."""
    found: list[HotRoute] | None = getattr(router, _ROUTER_KEY, None)
    if found is None:
        found = []
        setattr(router, _ROUTER_KEY, found)
    return found


def described_route(api: FastAPI, hot: HotRoute) -> APIRoute:
    """The FastAPI route `hot` stands in for (its description, roles and fallback)."""
    for context in iter_route_contexts(api.routes):
        route = context.original_route
        if (
            isinstance(route, APIRoute)
            and str(context.path_format) == hot.path
            and hot.method in (context.methods or ())
        ):
            return route
    raise RuntimeError(f"hot route {hot.method} {hot.path} has no FastAPI route describing it")


def check_hot_routes(api: FastAPI, routes: Sequence[HotRoute]) -> None:
    """Refuse to build an app whose hot route stands for no FastAPI route."""
    for hot in routes:
        described_route(api, hot)


def _handlers(api: FastAPI) -> Mapping[Any, Any]:
    """The app's exception handlers as FastAPI gives them to its ExceptionMiddleware (the
    500/Exception one stays with the outermost ServerErrorMiddleware, as for every route)."""
    return {k: v for k, v in api.exception_handlers.items() if k not in (500, Exception)}


class HotRoutesMiddleware:
    """Serves the hot routes; every other request goes on to FastAPI (add it innermost)."""

    def __init__(self, app: ASGIApp, api: FastAPI, routes: Sequence[HotRoute]) -> None:
        self.app = app
        self._api = api
        self._hot = {(hot.method, hot.path): hot for hot in routes}
        self._served: dict[tuple[str, str], tuple[APIRoute, ExceptionMiddleware]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self._hot.get((scope.get("method", ""), scope.get("path", "")))
        if hot is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, guarded = self._resolved(hot)
        body, other = await _read_body(receive)
        if other is not None:  # the client went away: FastAPI's route sees the disconnect
            await self.app(scope, _replaying(other, receive), send)
            return
        scope["route"] = route  # what the metrics label by: the route's template
        scope[_BODY] = body
        await guarded(scope, receive, send)
        if scope.pop(_DECLINED, False):
            del scope["route"]
            whole = {"type": "http.request", "body": body, "more_body": False}
            await self.app(scope, _replaying(whole, receive), send)

    def _resolved(self, hot: HotRoute) -> tuple[APIRoute, ExceptionMiddleware]:
        key = (hot.method, hot.path)
        served = self._served.get(key)
        if served is None:

            async def serve(scope: Scope, receive: Receive, send: Send) -> None:
                response = await hot.serve(Request(scope, receive, send), scope.pop(_BODY))
                if response is None:
                    scope[_DECLINED] = True
                    return
                await response(scope, receive, send)

            served = (
                described_route(self._api, hot),
                ExceptionMiddleware(serve, _handlers(self._api)),
            )
            self._served[key] = served
        return served


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body, or what came instead of its end (a disconnect)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), None


def _replaying(first: Message, receive: Receive) -> Receive:
    """`receive` with `first` given back first (what the hot route already read)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return first
        return await receive()

    return replay
