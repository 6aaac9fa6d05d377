"""The services run on uvloop with the httptools parser (fulfilment_kit.serve)."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from fulfilment_kit import serve
from tests.support.polling import eventually


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _loop_reporter(scope: Scope, receive: Receive, send: Send) -> None:
    """An app answering with the class of the event loop serving it."""
    if scope["type"] != "http":
        return
    loop = type(asyncio.get_running_loop())
    body = f"{loop.__module__}.{loop.__name__}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_run_service_serves_on_uvloop_and_httptools(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: captured.update(kw, app=app))
    serve.run_service("orders.main:create_app", 8000)
    assert captured["loop"] == "uvloop"
    assert captured["http"] == "httptools"

    port = _free_port()
    config = uvicorn.Config(
        _loop_reporter,
        host="127.0.0.1",
        port=port,
        loop=captured["loop"],
        http=captured["http"],
        log_config=None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:

        async def started() -> bool:
            return server.started

        asyncio.run(eventually(started, timeout=20, what="uvicorn started"))
        reply = httpx.get(f"http://127.0.0.1:{port}/")
        assert reply.text.startswith("uvloop")
        assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    finally:
        server.should_exit = True
        thread.join(10)
