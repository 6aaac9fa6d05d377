"""Issue 7 defect 7: a database outage answers 503 problem+json with Retry-After (one kit
handler), and the same Idempotency-Key retried after the restart gives the one result.

Stops and restarts this run's own PostgreSQL (deploy/local/stack.sh pg-down / pg-up, on the
POSTGRES_PORT of this environment) while real service processes run against it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fulfilment_kit.http.errors import DATABASE_RETRY_AFTER_S
from tests.support.auth import signed
from tests.support.polling import eventually
from tests.support.processes import free_port, running_service, service_process, wait_ready
from tests.support.stack import create_database, drop_database

REPO = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((REPO / "deploy/local/sample-order.json").read_text())
SERVICES = ("orders", "inventory", "payments", "shipping", "customer-service")


def _stack(command: str) -> None:
    if os.environ.get("POSTGRES_HOST", "127.0.0.1") not in ("127.0.0.1", "localhost"):
        pytest.skip("PostgreSQL is external: this test stops only the local stack's")
    subprocess.run(
        ["bash", str(REPO / "deploy/local/stack.sh"), command],
        check=True,
        capture_output=True,
        timeout=120,
    )


@contextlib.contextmanager
def postgres_stopped() -> Iterator[None]:
    """This stack's PostgreSQL is down inside the block (and up again afterwards, always)."""
    _stack("pg-down")
    try:
        yield
    finally:
        _stack("pg-up")


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    names = {service: create_database("fulfil_outage") for service in SERVICES}
    yield names
    for name in names.values():
        drop_database(name)


@pytest.fixture
async def clients(databases: dict[str, str]) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(
                running_service(name, databases[name], client_timeout=30)
            )
            for name in SERVICES
        }
        yield clients


def _assert_503_problem(reply: httpx.Response, what: str) -> None:
    assert reply.status_code == 503, f"{what}: {reply.status_code} {reply.text[:300]}"
    assert reply.headers["content-type"] == "application/problem+json", what
    assert reply.headers["retry-after"] == str(DATABASE_RETRY_AFTER_S), what
    problem = reply.json()
    assert problem["status"] == 503, problem
    assert problem["title"] == "Database unavailable", problem


async def _first_success(call: Any, what: str) -> httpx.Response:
    """Retry `call` (the same request) until the restarted database answers."""
    return await eventually(
        call, until=lambda r: r.status_code != 503, timeout=60, interval=0.5, what=what
    )


async def test_database_outage_is_503_problem_and_the_same_key_gives_one_result(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    orders, inventory, payments = clients["orders"], clients["inventory"], clients["payments"]
    shipping, cs = clients["shipping"], clients["customer-service"]
    unknown = str(uuid.uuid4())
    order_key = {"Idempotency-Key": f"outage-order-{uuid.uuid4()}"}
    stock_key = {"Idempotency-Key": f"outage-stock-{uuid.uuid4()}"}
    sku = f"OUTAGE-{uuid.uuid4().hex[:8].upper()}"

    def place() -> Any:
        return orders.post("/orders", json=SAMPLE, headers=order_key)

    def receive() -> Any:
        return inventory.post(f"/stock/{sku}/receipts", json={"quantity": 7}, headers=stock_key)

    calls: dict[str, Any] = {
        "POST /orders": place,
        "POST /stock/{sku}/receipts": receive,
        "GET /stock": lambda: inventory.get("/stock"),
        "POST /carrier/webhooks": lambda: shipping.post(
            "/carrier/webhooks", **signed({"tracking_number": "SBXOUTAGE1", "status": "delivered"})
        ),
        "POST /payments/{id}/refunds": lambda: payments.post(
            f"/payments/{unknown}/refunds", json={"amount_minor": 100, "reason": "goodwill"}
        ),
        "POST /returns/{id}/receipt": lambda: cs.post(
            f"/returns/{unknown}/receipt",
            json={"lines": [{"sku": "MUG-BLUE", "quantity": 1, "result": "restockable"}]},
        ),
    }

    with postgres_stopped():
        for what, call in calls.items():
            started = time.monotonic()
            _assert_503_problem(await call(), what)
            # eventsourcing tries a statement 10 times, each waiting pool_timeout_s (1 s)
            assert time.monotonic() - started < 20, f"{what}: 503 only after a long wait"

    # The same requests once the database is back: each gives its one result.
    first_order = await _first_success(place, "POST /orders after the restart")
    assert first_order.status_code == 201, first_order.text
    again = await place()
    assert again.status_code == 201, again.text
    assert again.json()["order_id"] == first_order.json()["order_id"]
    assert again.headers["idempotent-replayed"] == "true"

    first_receipt = await _first_success(receive, "POST /stock receipts after the restart")
    assert first_receipt.status_code == 200, first_receipt.text
    replay = await receive()
    assert replay.headers["idempotent-replayed"] == "true"
    stock = (await inventory.get(f"/stock/{sku}")).json()
    assert stock["on_hand"] == 7, stock

    listing = await _first_success(calls["GET /stock"], "GET /stock")
    assert listing.status_code == 200
    assert sku in [s["sku"] for s in listing.json()]
    for what in (
        "POST /carrier/webhooks",
        "POST /payments/{id}/refunds",
        "POST /returns/{id}/receipt",
    ):
        reply = await _first_success(calls[what], what)
        assert reply.status_code == 404, f"{what}: {reply.text}"
        assert reply.headers["content-type"] == "application/problem+json"


async def test_a_replica_started_while_the_database_is_down_comes_up_when_it_is_back() -> None:
    """A replica (re)started during an outage (a rolling deploy, a node drain) waits for the
    database and comes up, instead of exiting at start (the chaos suite's restarted replica)."""
    database = create_database("fulfil_outage_start")
    port = free_port()
    process = service_process("payments", database, port, log_name=f"start-{database}")
    try:
        with postgres_stopped():
            process.start()

            async def waiting() -> bool:
                if process.proc is not None and process.proc.poll() is not None:
                    raise AssertionError(f"payments exited at start:\n{process.log_tail()}")
                return "database not answering at start" in process.log_text()

            await eventually(waiting, timeout=60, what="payments waiting for the database")
        await wait_ready(f"http://127.0.0.1:{port}", process, timeout=90)
    finally:
        process.stop()
        drop_database(database)
