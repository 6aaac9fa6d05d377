"""Rebuilding the read models from the topics equals the live tables, row for row; the swap
is atomic and the live consumer carries on into the new tables."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from customer_service.projections import SCHEMA
from customer_service.projections.rebuild import Rebuild, RebuildReport
from customer_service.projections.sources import TopicSource
from customer_service.projections.store import datastore
from customer_service.projections.tables import PROJECTIONS, TABLES
from fulfilment_kit.settings import PostgresSettings
from tests.support import kafka_security
from tests.support.projections import ProjectionsProcess, projections_process
from tests.support.public_events import EventFactory, Published, produce

FULFIL = Path(sys.executable).with_name("fulfil")
REPO = Path(__file__).resolve().parents[2]


def fulfil(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The `fulfil` command line in a process of its own, as an operator runs it."""
    return subprocess.run(
        [str(FULFIL), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={
            **os.environ,
            **kafka_security.service_env("read-models"),
            "POSTGRES_DBNAME": database,
        },
        check=False,
    )


@pytest.fixture
async def rm(database: str) -> AsyncIterator[ProjectionsProcess]:
    async with projections_process(database) as process:
        yield process


def traffic(f: EventFactory, orders: int = 12) -> list[Published]:
    customers = [uuid.uuid4() for _ in range(4)]
    events: list[Published] = []
    for n in range(orders):
        customer = customers[n % len(customers)]
        until = ("placed", "paid", "delivered")[n % 3]
        order_id, order_events = f.order(customer, price=100 * (n + 1), until=until)
        events += order_events
        if until == "delivered" and n % 2:
            events += f.return_and_refund(order_id, customer, 50)
        if n % 4 == 0:
            events += f.case(customer, order_id, breach=n % 8 == 0)
    events += [f.stock_low("MUG", 1), f.stock_received("MUG", 9, 10), f.stock_low("TEE", 2)]
    return events


async def settle(rm: ProjectionsProcess, events: list[Published]) -> None:
    for item in events:
        reply = await rm.client.get("/kpis", params={"wait_for": item.ce_id, "timeout_s": 10})
        assert reply.status_code == 200, reply.text


async def rebuild(
    database: str, mode: Any, names: tuple[str, ...] = tuple(PROJECTIONS)
) -> RebuildReport:
    store = datastore(PostgresSettings(dbname=database))
    try:
        return await Rebuild(store, names, TopicSource(), mode=mode).run()
    finally:
        store.close()


def dump(database: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every live read-model table, sorted."""
    store = datastore(PostgresSettings(dbname=database))
    try:
        tables = {}
        with store.transaction(commit=False) as curs:
            for name, table in TABLES.items():
                columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
                curs.execute(
                    sql.SQL("SELECT {} FROM {}.{}").format(
                        columns, sql.Identifier(SCHEMA), sql.Identifier(name)
                    )
                )
                tables[name] = sorted(tuple(r.values()) for r in curs.fetchall())
        return tables
    finally:
        store.close()


async def test_rebuild_from_topics_equals_live_and_swaps_atomically(
    rm: ProjectionsProcess, database: str
) -> None:
    f = EventFactory()
    events = traffic(f)
    await produce(events)
    await settle(rm, events)
    live = await asyncio.to_thread(dump, database)
    assert all(live[name] for name in TABLES), {k: len(v) for k, v in live.items()}

    compared = await rebuild(database, "compare")
    assert compared.events == len(events)
    assert compared.equal, compared.differences
    assert compared.rows == {name: len(rows) for name, rows in live.items()}

    swapped = await rebuild(database, "swap")
    assert swapped.swapped
    assert await asyncio.to_thread(dump, database) == live

    # the live consumer carries on, into the swapped-in tables
    more = traffic(f, orders=3)
    await produce(more)
    await settle(rm, more)
    grown = await asyncio.to_thread(dump, database)
    assert len(grown["timeline"]) > len(live["timeline"])
    kpis = (await rm.client.get("/kpis")).json()
    assert kpis["orders"] == 15
    assert (await rebuild(database, "compare")).equal


async def test_rebuild_while_events_keep_arriving_still_equals_live(
    rm: ProjectionsProcess, database: str
) -> None:
    f = EventFactory()
    first = traffic(f, orders=30)
    await produce(first)
    await settle(rm, first)

    swap = asyncio.create_task(rebuild(database, "swap"))

    async def keep_producing() -> list[Published]:
        """Produce batches for as long as the rebuild runs (at least one; bounded)."""
        sent: list[Published] = []
        while not sent or (not swap.done() and len(sent) < 150):
            batch = traffic(f, orders=3)
            await produce(batch)
            sent += batch
        return sent

    later = await keep_producing()
    swapped = await swap
    assert swapped.swapped
    await settle(rm, later)
    compared = await rebuild(database, "compare")
    assert compared.equal, compared.differences


async def test_rebuild_of_one_projection_leaves_the_others_alone(
    rm: ProjectionsProcess, database: str
) -> None:
    f = EventFactory()
    events = traffic(f, orders=6)
    await produce(events)
    await settle(rm, events)
    before = await asyncio.to_thread(dump, database)
    dry = await rebuild(database, "dry-run", ("kpis",))
    assert not dry.swapped
    assert dry.rows["order_facts"] == len(before["order_facts"])
    report = await rebuild(database, "swap", ("timeline",))
    assert report.swapped
    assert set(report.rows) == {"timeline"}
    assert await asyncio.to_thread(dump, database) == before


async def test_workers_sharing_the_partitions_rebuild_the_rows_of_the_live_tables(
    rm: ProjectionsProcess, database: str
) -> None:
    f = EventFactory()
    events = traffic(f, orders=16)
    await produce(events)
    await produce(events[:5])  # copies at later offsets: applied once, by whichever worker
    await settle(rm, events)
    live = await asyncio.to_thread(dump, database)

    compared = await asyncio.to_thread(
        fulfil, database, "projections", "compare", "all", "--workers", "3"
    )
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert f"{len(events) + 5:,} events" in compared.stdout
    assert "skipped 5 duplicate" in compared.stdout
    assert compared.stdout.count(": equal") == len(TABLES), compared.stdout

    swapped = await asyncio.to_thread(
        fulfil, database, "projections", "rebuild", "all", "--workers", "4"
    )
    assert swapped.returncode == 0, swapped.stdout + swapped.stderr
    assert "swapped in" in swapped.stdout
    assert await asyncio.to_thread(dump, database) == live
