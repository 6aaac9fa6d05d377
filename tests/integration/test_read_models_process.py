"""The read models as their own process (`fulfil-read-models`, ADR 17): customer-service serves
their reads from the tables, a stuck projection never touches customer-service's health, and
two replicas share the partitions and write exactly what one rebuild writes."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import psycopg

from customer_service.projections import GROUP, SCHEMA
from customer_service.projections.rebuild import Rebuild
from customer_service.projections.sources import TopicSource
from customer_service.projections.store import datastore
from customer_service.projections.tables import PROJECTIONS
from fulfilment_kit.contracts import topics
from fulfilment_kit.settings import KafkaSettings, PostgresSettings
from tests.integration.test_projections_rebuild import dump, traffic
from tests.support.polling import eventually
from tests.support.processes import (
    ServiceProcess,
    free_port,
    service_process,
    started_service,
    wait_ready,
)
from tests.support.public_events import EventFactory, Published, produce
from tests.support.stack import postgres_admin_dsn

FAST = {"FULFIL_CONSUMER_BACKOFF_S": "0.05", "FULFIL_CONSUMER_MAX_BACKOFF_S": "0.5"}


@asynccontextmanager
async def read_models(
    database: str, name: str = "read-models"
) -> AsyncIterator[tuple[ServiceProcess, httpx.AsyncClient]]:
    """One `fulfil-read-models` process on `database`, once ready, and a client to its probes."""
    port = free_port()
    process = service_process("read-models", database, port, log_name=f"{name}-{database}", **FAST)
    process.start()
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, process, timeout=90)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield process, client
    finally:
        process.stop()


def execute(database: str, statement: str) -> Any:
    dsn = re.sub(r"dbname=\S+", f"dbname={database}", postgres_admin_dsn())
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchone() if cursor.description else None


async def status(client: httpx.AsyncClient, path: str) -> int:
    return (await client.get(path)).status_code


async def test_customer_service_serves_the_read_models_and_a_stuck_projection_spares_it(
    database: str,
) -> None:
    f = EventFactory()
    first, first_events = f.order(uuid.uuid4(), until="paid")
    async with AsyncExitStack() as stack:
        _, rm = await stack.enter_async_context(read_models(database))
        _, cs = await stack.enter_async_context(started_service("customer-service", database))
        assert {"/timeline/{order_id}", "/kpis"}.isdisjoint(await _paths(rm))  # probes only
        await produce(first_events)
        reply = await timeline(cs, first, first_events)
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["events"]) == len(first_events)

        # A projection bug: every write of a timeline row fails from now on.
        await asyncio.to_thread(
            execute,
            database,
            f"CREATE FUNCTION {SCHEMA}.refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'projection bug under test'; END $$; "
            f"CREATE TRIGGER stuck BEFORE INSERT ON {SCHEMA}.timeline "
            f"FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.refuse()",
        )
        second, second_events = f.order(uuid.uuid4(), until="paid")
        await produce(second_events)

        async def handler_retries() -> float:
            return sum_of(
                (await rm.get("/metrics")).text, "fulfil_inbox_retries_total", kind="handler"
            )

        # The partition stops at the failing record and retries it (alerted), nothing is
        # dead-lettered and nothing after it is applied.
        retries = await eventually(
            handler_retries, until=lambda n: n >= 3, timeout=30, what="the projection stuck"
        )
        assert await status(rm, "/livez") == 200  # held at a known reason: waiting, not wedged
        assert await status(cs, "/livez") == 200
        assert await status(cs, "/readyz") == 200
        assert (await cs.get(f"/timeline/{first}")).status_code == 200  # reads go on

        await asyncio.to_thread(execute, database, f"DROP TRIGGER stuck ON {SCHEMA}.timeline")
        reply = await timeline(cs, second, second_events)
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["events"]) == len(second_events)
        assert await handler_retries() >= retries
        assert await status(cs, "/livez") == 200


async def timeline(
    client: httpx.AsyncClient, order_id: uuid.UUID, events: list[Published]
) -> httpx.Response:
    """The order's timeline once every one of `events` is applied (they span several topics)."""
    for item in events:
        reply = await client.get(
            f"/timeline/{order_id}", params={"wait_for": item.ce_id, "timeout_s": 10}
        )
    return reply


async def _paths(client: httpx.AsyncClient) -> set[str]:
    reply = await client.get("/openapi.json")
    return set(reply.json()["paths"]) if reply.status_code == 200 else set()


def applied_count(database: str) -> int:
    row = execute(database, f"SELECT count(*) FROM {SCHEMA}.applied")
    return int(row[0])


def sum_of(metrics: str, name: str, **labels: str) -> float:
    """The sum of the projections' group's series of `name` that carry `labels`."""
    total = 0.0
    for line in metrics.splitlines():
        series, _, value = line.rpartition(" ")
        if not series.startswith(name + "{") or f'consumer="{GROUP}"' not in series:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def partitions_in(metrics: str) -> set[str]:
    """`<logical topic>/<partition>` of each partition this process reports a position for."""
    found = set()
    for line in metrics.splitlines():
        if line.startswith("fulfil_consumer_tracked_offset{") and f'consumer="{GROUP}"' in line:
            topic = re.search(r'topic="([^"]+)"', line)
            partition = re.search(r'partition="(\d+)"', line)
            assert topic is not None, line
            assert partition is not None, line
            found.add(f"{topic.group(1).removeprefix(topics.prefix())}/{partition.group(1)}")
    return found


async def reported(client: httpx.AsyncClient) -> set[str]:
    return partitions_in((await client.get("/metrics")).text)


async def settle(database: str, expected: int) -> None:
    await eventually(
        lambda: asyncio.to_thread(applied_count, database),
        until=lambda n: n == expected,
        timeout=60,
        what=f"{expected} events applied",
    )


async def test_two_replicas_share_the_partitions_and_equal_a_single_rebuild(
    database: str,
) -> None:
    f = EventFactory()
    events = traffic(f, orders=40)
    half = len(events) // 2
    assert len({e.ce_id for e in events}) == len(events)
    async with AsyncExitStack() as stack:
        one, first = await stack.enter_async_context(read_models(database, "read-models-1"))
        every = {f"{t}/{p}" for t in topics.ALL for p in range(KafkaSettings().topic_partitions)}
        await eventually(  # alone, it owns every partition (and reports each)
            lambda: reported(first), until=lambda found: found == every, what="one owner"
        )
        _, second = await stack.enter_async_context(read_models(database, "read-models-2"))
        # both ready: each has partitions assigned (readiness says none until it has)
        await eventually(
            lambda: asyncio.gather(status(first, "/readyz"), status(second, "/readyz")),
            until=lambda s: list(s) == [200, 200],
            timeout=60,
            what="both replicas ready",
        )
        await produce(events[:half])
        await settle(database, half)

        async def owned() -> list[set[str]]:
            return [await reported(first), await reported(second)]

        # every partition reported by exactly one replica: the one that owns it (a replica
        # drops a revoked partition's gauges, or the dashboards would count its lag twice)
        split = await eventually(
            owned,
            until=lambda s: all(s) and s[0] | s[1] == every and not s[0] & s[1],
            timeout=30,
            what="the partitions split between the replicas, each reported by its owner only",
        )
        assert len(split[0]) + len(split[1]) == len(every)
        shares = [
            sum_of((await c.get("/metrics")).text, "fulfil_inbox_applied_total")
            for c in (first, second)
        ]
        assert sum(shares) == half, shares  # each record applied by exactly one replica
        assert all(share > 0 for share in shares), shares  # and both did some of the work

        one.kill()  # the other takes the dead replica's partitions over
        await produce(events[half:])
        await settle(database, len(events))

    live = await asyncio.to_thread(dump, database)
    store = datastore(PostgresSettings(dbname=database))
    try:
        compared = await Rebuild(store, tuple(PROJECTIONS), TopicSource(), mode="compare").run()
    finally:
        store.close()
    assert compared.events == len(events)
    assert compared.equal, compared.differences
    assert compared.rows == {name: len(rows) for name, rows in live.items()}
