"""`python -m bench.restart`: how long each service takes to be ready after a SIGKILL on a
store of 100k events (issue 7 defect 8), against the same start with its log followers
replaying the whole log (the base, in the same run).

1. The five services on fresh databases and topics (`bench.platform`), a short order run
   (real events of every kind), then the services stopped.
2. Each service's event store grown to `--events` events by copying its own events under
   fresh aggregate ids (one SQL statement); the relay's stored position is moved past the
   copies, as if it had published them before (this measures a restart, not a backlog).
3. Base: every follower position reset to 0 and its items deleted (what a start cost when
   the loops replayed their whole log), the five started at once; then SIGKILL.
4. Restart: the five started again at once, with the positions the base run persisted.
5. Control: the five after a SIGKILL on empty databases: what a start costs without any
   store (importing, connecting, joining the consumer groups) on this machine right now.
Each start reports the seconds from spawning the process to `/readyz` 200 and to every
follower of the service being at the end of the log (inventory's SKU follower catches up
when the stock is listed: the bench lists it once the service is ready).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from typing import Any

import httpx
import psycopg

from .load import demand, drive_orders, make_catalogue, make_orders, seed_stock
from .platform import (
    SERVICES,
    BenchPlatform,
    api_headers,
    create_database,
    database_dsn,
    poll_until,
)

FOLLOWERS = {
    "orders": ["orders-deadlines"],
    "inventory": ["inventory-skus"],
    "payments": [],
    "shipping": ["shipping-auto-dispatch"],
    "customer-service": ["customer-service-cases"],
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def events_table(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND column_name = 'notification_id' AND table_name LIKE '%%events' LIMIT 1"
    ).fetchone()
    assert row is not None, "no event store table"
    return str(row[0])


def grow_store(database: str, service: str, events: int) -> int:
    """Copy the store's events under fresh ids until it holds at least `events`; returns it."""
    with psycopg.connect(database_dsn(database), autocommit=True) as conn:
        table = events_table(conn)
        have = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        copies = max(0, -(-(events - have) // max(have, 1)))
        conn.execute(
            f'INSERT INTO "{table}" (originator_id, originator_version, topic, state) '
            "SELECT md5(c::text || ':' || originator_id::text)::uuid, originator_version, "
            f'topic, state FROM "{table}" CROSS JOIN generate_series(1, %s) AS c '
            "ORDER BY c, notification_id",
            (copies,),
        )
        newest = conn.execute(f'SELECT max(notification_id) FROM "{table}"').fetchone()[0]
        conn.execute(
            "UPDATE fulfil_follower_position SET position = %s WHERE name = %s",
            (newest, f"relay:{service}"),
        )
        return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def reset_followers(database: str, service: str) -> None:
    with psycopg.connect(database_dsn(database), autocommit=True) as conn:
        for name in FOLLOWERS[service]:
            conn.execute(
                "UPDATE fulfil_follower_position SET position = 0 WHERE name = %s", (name,)
            )
            conn.execute("DELETE FROM fulfil_followed_item WHERE follower = %s", (name,))


def followers_behind(database: str, service: str) -> list[str]:
    with psycopg.connect(database_dsn(database), autocommit=True) as conn:
        newest = conn.execute(f'SELECT max(notification_id) FROM "{events_table(conn)}"')
        end = newest.fetchone()[0]
        behind = []
        for name in FOLLOWERS[service]:
            row = conn.execute(
                "SELECT position FROM fulfil_follower_position WHERE name = %s", (name,)
            ).fetchone()
            if row is None or row[0] < end:
                behind.append(name)
        return behind


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed_start(
    platform: BenchPlatform, cpu: dict[str, float], *, followers: bool = True
) -> dict[str, tuple[float, float]]:
    """Start every service at once: seconds to ready and to followers caught up, each.

    `cpu` receives each process's CPU seconds when it was first seen ready: unlike the
    wall-clock figures it hardly depends on what else the shared machine is doing."""
    began = time.monotonic()
    for service in platform.services.values():
        service.start()

    async def one(name: str) -> tuple[float, float]:
        service = platform[name]
        async with httpx.AsyncClient(base_url=service.url, timeout=5) as client:

            async def ready() -> bool:
                if service.exited():
                    raise RuntimeError(f"{name} exited:\n{service.log_tail()}")
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await poll_until(ready, timeout=180, interval=0.05, what=f"{name} ready")
            ready_s = time.monotonic() - began
            cpu[name] = cpu_seconds(service.pid)
            if not followers:
                return ready_s, ready_s
            if name == "inventory":  # its SKU follower catches up when the stock is listed
                listed = await client.get("/stock", timeout=600, headers=api_headers())
                assert listed.status_code == 200, listed.text
            await poll_until(
                lambda: asyncio.to_thread(followers_behind, service.database, name),
                until=lambda behind: not behind,
                timeout=600,
                interval=0.1,
                what=f"{name} followers caught up",
            )
            return ready_s, time.monotonic() - began

    results = await asyncio.gather(*(one(name) for name in SERVICES))
    return dict(zip(SERVICES, results, strict=True))


def kill_all(platform: BenchPlatform) -> None:
    for service in platform.services.values():
        if service.proc and service.proc.poll() is None:
            service.proc.send_signal(signal.SIGKILL)
            service.proc.wait(10)


async def main(args: argparse.Namespace) -> int:
    platform = BenchPlatform(auto_dispatch_s=0.05, processes=SERVICES)
    base_cpu: dict[str, float] = {}
    restart_cpu: dict[str, float] = {}
    empty_cpu: dict[str, float] = {}
    try:
        log(f"starting the platform, {args.orders} orders of real traffic")
        await platform.start()
        rng = random.Random(1)
        catalogue = make_catalogue(20, rng)
        orders = make_orders(args.orders, catalogue, rng)
        await seed_stock(platform["inventory"].url, catalogue, demand(orders))
        await drive_orders(platform["orders"].url, orders, 8)

        async def counts() -> list[int]:
            def count(database: str) -> int:
                with psycopg.connect(database_dsn(database)) as conn:
                    table = events_table(conn)
                    return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])

            return [await asyncio.to_thread(count, s.database) for s in platform.services.values()]

        previous: list[int] = []

        async def quiet() -> bool:
            nonlocal previous
            now = await counts()
            settled, previous = now == previous, now
            return settled

        await poll_until(quiet, timeout=300, interval=2.0, what="the stores stop growing")
        platform.stop_processes()
        sizes = {}
        for name, service in platform.services.items():
            sizes[name] = await asyncio.to_thread(grow_store, service.database, name, args.events)
            await asyncio.to_thread(reset_followers, service.database, name)
        log(f"stores grown: {sizes}")
        log("base: every follower from position 0 (a full replay), five services at once")
        base = await timed_start(platform, base_cpu)
        kill_all(platform)
        log("restart after SIGKILL with the persisted positions, five services at once")
        restart = await timed_start(platform, restart_cpu)
        kill_all(platform)
        log("control: the same five after SIGKILL on empty databases (process start, Kafka join)")
        for service in platform.services.values():
            service.database = await asyncio.to_thread(create_database, "fulfil_bench_empty")
            platform.databases.append(service.database)
            service.env["POSTGRES_DBNAME"] = service.database
        empty = await timed_start(platform, empty_cpu, followers=False)
        kill_all(platform)
    finally:
        problems = await platform.stop()
    print(f"\nrestart on a store of ~{args.events:,} events per service")
    print("wall: seconds from spawn; cpu: CPU seconds the process used until it was ready")
    print(
        f"{'service':18} {'events':>8} | {'base: ready':>11} {'cpu':>5} {'caught up':>9} | "
        f"{'restart: ready':>14} {'cpu':>5} {'caught up':>9} | {'empty: ready':>12} {'cpu':>5}"
    )
    for name in SERVICES:
        b, r, e = base[name], restart[name], empty[name]
        print(
            f"{name:18} {sizes[name]:>8} | {b[0]:>11.1f} {base_cpu[name]:>5.1f} {b[1]:>9.1f} | "
            f"{r[0]:>14.1f} {restart_cpu[name]:>5.1f} {r[1]:>9.1f} | "
            f"{e[0]:>12.1f} {empty_cpu[name]:>5.1f}"
        )
    worst = max(r[0] for r in restart.values())
    wall = max(restart[n][0] - empty[n][0] for n in SERVICES)
    cpu = max(restart_cpu[n] - empty_cpu[n] for n in SERVICES)
    print(f"slowest ready after a restart: {worst:.1f} s wall (required: within 5 s)")
    print(f"most a 100k-event store added over an empty one: {wall:+.1f} s wall, {cpu:+.2f} s CPU")
    print(f"machine load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 0 if worst <= 5 and not problems else 1


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=150)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
