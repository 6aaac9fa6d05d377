"""The outbox relay SIGKILLed and restarted again and again while orders pour in: none lost."""

from __future__ import annotations

import asyncio
import collections
import json
import random
from pathlib import Path

import httpx

from fulfilment_kit.contracts import topics
from tests.support.polling import eventually
from tests.support.processes import (
    ServiceProcess,
    running_service,
    service_command,
    service_env,
)
from tests.support.stack import read_topic

SAMPLE = json.loads((Path(__file__).parents[2] / "deploy/local/sample-order.json").read_text())
ORDERS = 2000
CONCURRENCY = 8
MIN_KILLS = 6


async def test_relay_killed_repeatedly_loses_nothing(database: str) -> None:
    relay_env = service_env(POSTGRES_DBNAME=database, FULFIL_RELAY_BATCH_SIZE="50")
    relay = ServiceProcess(
        service_command("fulfil-orders", "relay"), relay_env, f"relay-{database}"
    )
    placed: list[str] = []
    state = {"kills": 0, "kills_while_placing": 0}
    placing_done = asyncio.Event()
    async with running_service(
        "orders",
        database,
        client_timeout=30,
        log_name=f"orders-api-{database}",
        FULFIL_RELAY_ENABLED="false",
    ) as client:
        try:
            relay.start()
            done = asyncio.Event()

            async def resumed_times() -> int:
                return relay.log_text().count("relay resuming")

            async def chaos() -> None:
                rng = random.Random(7)
                while not done.is_set():
                    # Wait until the relay has resumed publishing, let it publish a random
                    # short while, then kill it mid-flight.
                    seen = state["kills"]
                    await eventually(
                        resumed_times,
                        until=lambda n, seen=seen: n > seen,
                        timeout=60,
                        what="relay resumed",
                    )
                    try:
                        await asyncio.wait_for(done.wait(), timeout=rng.uniform(0.05, 0.8))
                    except TimeoutError:
                        relay.kill()
                        state["kills"] += 1
                        if not placing_done.is_set():
                            state["kills_while_placing"] += 1
                        relay.start()

            async def enough_kills() -> bool:
                return state["kills"] >= MIN_KILLS

            async def place(client: httpx.AsyncClient, ids: asyncio.Queue[int]) -> None:
                while not ids.empty():
                    n = ids.get_nowait()
                    reply = await client.post(
                        "/orders", json=SAMPLE, headers={"Idempotency-Key": f"crash-{n}"}
                    )
                    assert reply.status_code == 201, reply.text
                    placed.append(reply.json()["order_id"])

            queue: asyncio.Queue[int] = asyncio.Queue()
            for n in range(ORDERS):
                queue.put_nowait(n)
            chaos_task = asyncio.create_task(chaos())
            await asyncio.gather(*(place(client, queue) for _ in range(CONCURRENCY)))
            placing_done.set()
            # Keep killing for a little longer, while the relay works through the backlog.
            await eventually(enough_kills, timeout=90, what=f"{MIN_KILLS} relay kills")
            done.set()
            await chaos_task

            async def published() -> collections.Counter[bytes]:
                records = await read_topic(topics.physical(topics.ORDERS))
                return collections.Counter(r.headers["ce_id"].encode() for r in records)

            wanted = set(placed)

            async def all_published() -> set[str]:
                records = await read_topic(topics.physical(topics.ORDERS))
                return wanted - {r.key.decode() for r in records if r.key}

            await eventually(
                all_published,
                until=lambda missing: not missing,
                timeout=120,
                interval=0.5,
                what="every order on the topic",
            )
            counts = await published()
            duplicates = sum(c - 1 for c in counts.values())
            print(
                f"\nrelay crash test: {len(placed)} orders, relay SIGKILLed {state['kills']} times "
                f"({state['kills_while_placing']} while orders were being placed), "
                f"{sum(counts.values())} records, {duplicates} duplicates"
            )
            assert len(placed) == ORDERS
            assert len(set(placed)) == ORDERS
            assert len(counts) == ORDERS
            assert duplicates == 0
            assert state["kills_while_placing"] >= 2
        finally:
            relay.stop()
