"""The order driver: a catalogue, enough stock for it, and N orders with bounded concurrency."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from .http1 import Connection, encode_post
from .platform import api_headers

MAX_RECEIPT = 10_000  # the largest quantity one stock receipt may carry
ADDRESS = {
    "recipient_name": "Ada Example",
    "line1": "1 Sample Street",
    "city": "Berlin",
    "postal_code": "10115",
    "country_code": "DE",
}

Line = tuple[str, int, int]  # sku, quantity, unit price in minor units


def make_catalogue(size: int, rng: random.Random) -> list[str]:
    run = f"{rng.getrandbits(32):08X}"
    return [f"BENCH-{run}-{i:04d}" for i in range(size)]


def make_orders(count: int, catalogue: list[str], rng: random.Random) -> list[list[Line]]:
    """`count` orders of 1-3 lines over distinct SKUs, 1-3 units each."""
    orders = []
    for _ in range(count):
        skus = rng.sample(catalogue, rng.randint(1, 3))
        orders.append([(sku, rng.randint(1, 3), rng.randint(199, 9999)) for sku in skus])
    return orders


def demand(orders: list[list[Line]]) -> Counter[str]:
    needed: Counter[str] = Counter()
    for lines in orders:
        for sku, quantity, _ in lines:
            needed[sku] += quantity
    return needed


def order_body(lines: list[Line], token: str = "tok_visa") -> dict[str, Any]:
    return {
        "customer_id": str(uuid.uuid4()),
        "lines": [{"sku": s, "quantity": q, "unit_price_minor": p} for s, q, p in lines],
        "currency": "EUR",
        "payment_token": token,
        "shipping_address": ADDRESS,
    }


@dataclass
class Seeding:
    receipts: int = 0
    conflicts: int = 0  # 409s retried (first receipts of new SKUs all touch one catalogue)


async def seed_stock(
    base_url: str,
    catalogue: list[str],
    needed: Counter[str],
    concurrency: int = 4,
    attempts: int = 20,
) -> Seeding:
    """Receive twice the demand (plus 10) of every SKU, retrying 409 conflicts."""
    gate = asyncio.Semaphore(concurrency)
    seeding = Seeding()

    async def post(client: httpx.AsyncClient, sku: str, quantity: int) -> None:
        for _ in range(attempts):
            reply = await client.post(f"/stock/{sku}/receipts", json={"quantity": quantity})
            if reply.status_code in (200, 201):
                seeding.receipts += 1
                return
            if reply.status_code != 409:
                break
            seeding.conflicts += 1
        raise RuntimeError(f"stock receipt for {sku}: {reply.status_code} {reply.text}")

    async def receive(client: httpx.AsyncClient, sku: str) -> None:
        remaining = 2 * needed[sku] + 10
        async with gate:
            while remaining > 0:  # one SKU's receipts in sequence
                quantity = min(remaining, MAX_RECEIPT)
                await post(client, sku, quantity)
                remaining -= quantity

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60, limits=limits, headers=api_headers()
    ) as client:
        await asyncio.gather(*(receive(client, sku) for sku in catalogue))
    return seeding


@dataclass
class Submission:
    """One POST /orders as the client saw it."""

    index: int
    sent_at: float  # epoch seconds, just before the request
    latency_s: float
    status: int  # HTTP status, 0 on a transport error
    order_id: str | None
    error: str | None = None
    behind_s: float = 0.0  # paced load: how late it was sent after its scheduled time


@dataclass
class LoadResult:
    submissions: list[Submission] = field(default_factory=list)
    started_at: float = 0.0  # epoch of the first POST
    finished_at: float = 0.0  # epoch of the last response

    @property
    def accepted(self) -> list[Submission]:
        return [s for s in self.submissions if s.order_id is not None]

    @property
    def failed(self) -> list[Submission]:
        return [s for s in self.submissions if s.order_id is None]


def pacing_schedule(count: int, rate: float) -> list[float]:
    """Seconds after the start at which each of `count` orders is due at `rate` orders/s
    (open loop: evenly spaced, the first at 0, whatever the platform answers)."""
    if rate <= 0:
        raise ValueError(f"the rate must be positive, not {rate}")
    return [i / rate for i in range(count)]


def pacing_stats(offsets: list[float], sent: list[float]) -> dict[str, float]:
    """How a paced load kept to its schedule: the achieved rate (orders / span of the send
    times), and how late the sends were (scheduled offset vs actual offset)."""
    if not sent:
        return {"n": 0}
    start = min(sent)
    late = [max(0.0, (t - start) - o) for o, t in zip(offsets, sent, strict=True)]
    span = max(sent) - start
    return {
        "n": len(sent),
        "achieved_per_s": (len(sent) - 1) / span if span > 0 else float("nan"),
        "max_behind_s": max(late),
        "mean_behind_s": sum(late) / len(late),
    }


TRANSPORT_ERRORS = (OSError, EOFError, TimeoutError, asyncio.LimitOverrunError, ValueError)
"""What a failed exchange raises (connection refused or reset, closed mid-reply, timed out,
a reply that is not HTTP)."""


def encode_orders(orders: list[list[Line]], authority: str, headers: dict[str, str]) -> list[bytes]:
    """Every order's POST /orders, encoded once: a body of its own (a new customer) and a
    fresh Idempotency-Key each."""
    return [
        encode_post(
            authority,
            "/orders",
            orjson.dumps(order_body(lines)),
            {**headers, "Idempotency-Key": str(uuid.uuid4())},
        )
        for lines in orders
    ]


async def drive_orders(
    base_url: str | Sequence[str],
    orders: list[list[Line]],
    concurrency: int,
    rate: float | None = None,
) -> LoadResult:
    """POST every order with at most `concurrency` requests in flight; with `rate`, order i
    is not sent before `i / rate` seconds after the start (an open-loop paced load, still
    capped at `concurrency` in flight: if the platform falls behind, the sends lag, which
    `Submission.behind_s` records). Several base URLs (replicas) share the connections
    round-robin. Every reply is checked: a 201 must name its order."""
    result = LoadResult()
    urls = [base_url] if isinstance(base_url, str) else list(base_url)
    headers = api_headers()
    # Encoded per URL (the Host header), once, before the first request.
    encoded = {url: encode_orders(orders, urlsplit(url).netloc, headers) for url in set(urls)}
    pending = iter(range(len(orders)))
    due = pacing_schedule(len(orders), rate) if rate else None
    began_at = [0.0]  # monotonic start of the schedule, set when the workers are connected

    async def worker(connection: Connection, requests: list[bytes]) -> None:
        for index in pending:  # the shared iterator hands each order out once
            behind = 0.0
            if due is not None:
                wait = began_at[0] + due[index] - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # the schedule itself, not synchronisation
                behind = max(0.0, time.monotonic() - began_at[0] - due[index])
            sent_at = time.time()
            began = time.perf_counter()
            try:
                reply = await connection.send(requests[index])
            except TRANSPORT_ERRORS as exc:
                latency = time.perf_counter() - began
                error = f"{type(exc).__name__}: {exc}"
                result.submissions.append(
                    Submission(index, sent_at, latency, 0, None, error, behind)
                )
                continue
            latency = time.perf_counter() - began
            if reply.status == 201:
                order_id = str(orjson.loads(reply.body)["order_id"])
                result.submissions.append(
                    Submission(index, sent_at, latency, 201, order_id, None, behind)
                )
            else:
                text = reply.body.decode(errors="replace")[:300]
                result.submissions.append(
                    Submission(index, sent_at, latency, reply.status, None, text, behind)
                )

    async def connection(url: str) -> None:
        # One keep-alive connection per worker (a shared pool costs CPU per request, which
        # the platform would pay for on a small machine).
        conn = Connection(url, timeout_s=60)
        try:
            await worker(conn, encoded[url])
        finally:
            await conn.close()

    began_at[0] = time.monotonic()
    await asyncio.gather(*(connection(urls[i % len(urls)]) for i in range(concurrency)))
    result.submissions.sort(key=lambda s: s.index)
    if result.submissions:
        result.started_at = min(s.sent_at for s in result.submissions)
        result.finished_at = max(s.sent_at + s.latency_s for s in result.submissions)
    return result
