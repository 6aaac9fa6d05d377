"""The bench's load driver over its own HTTP/1.1 client, against a real local server."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from bench.http1 import Connection, encode_post
from bench.load import drive_orders, make_catalogue, make_orders
from tests.support.polling import eventually


class Recorder:
    """An ASGI app that answers POST /orders like the orders service (201 with the order),
    refuses every fifth order with a 409 problem, answers every seventh chunked, and closes
    the connection after every eleventh; it records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append((headers, json.loads(body)))
        n = len(self.requests)
        if n % 5 == 0:
            payload, status = b'{"title": "Conflict", "status": 409}', 409
        else:
            payload, status = json.dumps({"order_id": f"order-{n}"}).encode(), 201
        reply_headers = [(b"content-type", b"application/json")]
        if n % 11 == 0:
            reply_headers.append((b"connection", b"close"))
        if n % 7 == 0:  # no content-length: uvicorn sends it chunked
            await send({"type": "http.response.start", "status": status, "headers": reply_headers})
            await send({"type": "http.response.body", "body": payload[:5], "more_body": True})
            await send({"type": "http.response.body", "body": payload[5:]})
            return
        reply_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": reply_headers})
        await send({"type": "http.response.body", "body": payload})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    app = Recorder()
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, http="httptools")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()

    async def started() -> bool:
        return running.started

    asyncio.run(eventually(started, timeout=20, what="uvicorn started"))
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        running.should_exit = True
        thread.join(10)


def test_every_order_is_posted_once_and_every_reply_is_checked(
    server: tuple[str, Recorder],
) -> None:
    url, app = server
    rng = random.Random(7)
    orders = make_orders(60, make_catalogue(10, rng), rng)
    result = asyncio.run(drive_orders(url, orders, concurrency=4))
    assert [s.index for s in result.submissions] == list(range(60))
    assert len(app.requests) == 60
    accepted = {s.order_id for s in result.accepted}
    assert len(accepted) == 48  # every fifth is refused
    assert all(s.status == 409 and "Conflict" in (s.error or "") for s in result.failed)
    keys = {h["idempotency-key"] for h, _ in app.requests}
    customers = {b["customer_id"] for _, b in app.requests}
    assert len(keys) == len(customers) == 60  # a fresh key and customer per order
    assert all(h["authorization"].startswith("Bearer ") for h, _ in app.requests)
    sent = sorted(
        [(line["sku"], line["quantity"]) for line in body["lines"]] for _, body in app.requests
    )
    assert sent == sorted([(sku, q) for sku, q, _ in lines] for lines in orders)


def test_a_refused_connection_is_a_transport_error_not_a_crash() -> None:
    port = _free_port()  # nobody listens
    rng = random.Random(1)
    orders = make_orders(3, make_catalogue(3, rng), rng)
    result = asyncio.run(drive_orders(f"http://127.0.0.1:{port}", orders, concurrency=2))
    assert [s.status for s in result.submissions] == [0, 0, 0]
    assert all(s.order_id is None and s.error for s in result.submissions)


def test_the_client_reads_chunked_and_length_framed_replies_on_one_connection(
    server: tuple[str, Recorder],
) -> None:
    url, app = server

    async def exchange() -> list[tuple[int, bytes]]:
        connection = Connection(url)
        request = encode_post(
            url.removeprefix("http://"), "/orders", b'{"customer_id": "c", "lines": []}', {}
        )
        try:
            return [
                (reply.status, reply.body)
                for reply in [await connection.send(request) for _ in range(14)]
            ]
        finally:
            await connection.close()

    replies = asyncio.run(exchange())
    assert [status for status, _ in replies] == [409 if n % 5 == 0 else 201 for n in range(1, 15)]
    assert replies[6][1] == json.dumps({"order_id": "order-7"}).encode()  # chunked
    assert replies[11][1] == json.dumps({"order_id": "order-12"}).encode()  # after a close
    assert all(h["content-type"] == "application/json" for h, _ in app.requests)


def test_the_sampler_reads_each_processs_memory_once_per_sample_across_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Groups overlap (postgres and the run's own backends): a process's PSS is read once
    per sample and counted in every group it belongs to; CPU is unaffected."""
    import os

    from bench import measure

    reads: list[int] = []

    def pss(pid: int) -> int:
        reads.append(pid)
        return 2048

    monkeypatch.setattr(measure, "pss_kb", pss)
    me = os.getpid()
    sampler = measure.ProcSampler({"all": lambda table: [me], "ours": lambda table: [me]})
    _, groups, _ = sampler.sample()
    assert reads == [me]
    assert groups["all"].mem_kb == groups["ours"].mem_kb == 2048
    assert groups["all"].processes == groups["ours"].processes == 1


def test_the_sampler_reads_memory_every_few_samples_and_cpu_every_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from bench import measure

    values = iter(range(1000, 10_000))
    reads: list[int] = []

    def pss(pid: int) -> int:
        reads.append(pid)
        return next(values)

    monkeypatch.setattr(measure, "pss_kb", pss)
    me = os.getpid()
    sampler = measure.ProcSampler({"me": lambda table: [me]}, memory_every=3)
    memory = [sampler.sample()[1]["me"].mem_kb for _ in range(7)]
    assert memory == [1000, 1000, 1000, 1001, 1001, 1001, 1002]  # read at samples 0, 3, 6
    assert len(reads) == 3
    assert len(sampler.samples) == 7
