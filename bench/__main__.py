"""`python -m bench`: run the end-to-end benchmark and the ceilings, print one table."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx

from fulfilment_kit.contracts import topics

from .ceilings import kafka_ceiling, postgres_ceiling
from .load import LoadResult, demand, drive_orders, make_catalogue, make_orders, seed_stock
from .measure import (
    ORDER_PLACED,
    SHIPMENT_SHIPPED,
    XACT_COMMIT,
    ProcSampler,
    ProcStat,
    TopicTail,
    cmdline,
    kafka_pid,
    machine_info,
    peak_rss_mib,
    records_by_type,
    stack_info,
    stage_latencies,
    store_counts,
    summary,
    tree,
)
from .platform import REPO, SERVICES, BenchPlatform, api_headers
from .report import table, write_json

QUICK_ORDERS = 300
# Command lines of processes that are other runs of this platform (not the bench's own).
FOREIGN_MARKS = ("/bin/fulfil-", "/bin/pytest", "python -m bench", "honcho")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--orders", type=int, default=2000, help="orders to place (2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="POSTs in flight (32)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ORDERS} orders (overrides --orders)"
    )
    parser.add_argument("--skip-ceilings", action="store_true", help="no Kafka/PostgreSQL ceiling")
    parser.add_argument("--skus", type=int, default=200, help="catalogue size (200)")
    parser.add_argument(
        "--ship-timeout",
        type=float,
        default=None,
        help="seconds to wait for every ShipmentShipped after the last POST (120 + orders/10)",
    )
    parser.add_argument(
        "--ceiling-records", type=int, default=20_000, help="Kafka ceiling records (20000)"
    )
    parser.add_argument(
        "--kafka-inflight", type=int, default=1000, help="Kafka ceiling sends in flight (1000)"
    )
    parser.add_argument(
        "--pg-single", type=int, default=2000, help="event-store ceiling: 1/txn saves (2000)"
    )
    parser.add_argument(
        "--pg-batched",
        type=int,
        default=20_000,
        help="event-store ceiling: events at 100/txn (20000)",
    )
    parser.add_argument(
        "--idle-s", type=float, default=5, help="seconds to sample the idle platform first (5)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the order mix (1)")
    args = parser.parse_args(argv)
    if args.quick:
        args.orders = QUICK_ORDERS
    if args.orders < 1 or args.concurrency < 1:
        parser.error("--orders and --concurrency must be at least 1")
    if args.skus < 3:
        parser.error("--skus must be at least 3 (orders have up to 3 distinct SKUs)")
    if args.ship_timeout is None:
        args.ship_timeout = 120 + args.orders / 10
    return args


def revision() -> str:
    """The commit the platform runs from, `+dirty` with uncommitted changes besides bench/."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":!bench", ":!BENCHMARKS.md"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if status else "")


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def process_groups(platform: BenchPlatform) -> dict[str, Any]:
    """Sampler groups (name -> pids): each service's process tree, the Kafka JVM, every
    PostgreSQL process, the backends serving the run's databases, and this driver."""
    groups: dict[str, Any] = {}
    for name in SERVICES:
        pid = platform[name].pid
        groups[name] = lambda table, pid=pid: tree(pid, table)
    broker = kafka_pid()
    groups["kafka"] = lambda table: tree(broker, table) if broker else []

    def postgres(table: dict[int, ProcStat]) -> list[int]:
        return [s.pid for s in table.values() if s.comm == "postgres"]

    def postgres_ours(table: dict[int, ProcStat]) -> list[int]:
        return [p for p in postgres(table) if any(d in cmdline(p) for d in platform.databases)]

    groups["postgres"] = postgres
    groups["postgres_bench"] = postgres_ours
    me = os.getpid()
    groups["bench"] = lambda table: [me] if me in table else []
    ours = {platform[name].pid for name in SERVICES} | {me}

    def foreign(table: dict[int, ProcStat]) -> list[int]:
        """Other deployments and test runs of the platform on this machine (noise)."""
        return [
            pid
            for pid, stat in table.items()
            if pid not in ours
            and stat.comm not in ("uv", "timeout")
            and any(mark in cmdline(pid) for mark in FOREIGN_MARKS)
        ]

    groups["foreign"] = foreign
    return groups


async def diagnose(platform: BenchPlatform, order_ids: list[str]) -> list[dict[str, Any]]:
    """What the services say about orders that never shipped."""
    found = []
    async with httpx.AsyncClient(timeout=10, headers=api_headers()) as client:
        for order_id in order_ids:
            entry: dict[str, Any] = {"order_id": order_id}
            for service, path in (
                ("orders", f"/orders/{order_id}"),
                ("payments", f"/payments/{order_id}"),
                ("shipping", f"/shipments/{order_id}"),
            ):
                try:
                    reply = await client.get(platform[service].url + path)
                    body = reply.json() if reply.status_code == 200 else None
                    entry[service] = (
                        {k: body.get(k) for k in ("status", "flagged_stages", "captured_minor")}
                        if isinstance(body, dict)
                        else reply.status_code
                    )
                except httpx.HTTPError as exc:
                    entry[service] = f"{type(exc).__name__}"
            found.append(entry)
    return found


def log_findings(platform: BenchPlatform) -> dict[str, dict[str, Any]]:
    """Warnings and errors each service logged (they run at FULFIL_LOG_LEVEL=WARNING)."""
    findings = {}
    for name, service in platform.services.items():
        lines = (
            service.log_path.read_text(errors="replace").splitlines()
            if service.log_path.exists()
            else []
        )
        lowered = [line.lower() for line in lines]
        rebalances = sum("rebalanc" in line for line in lowered)
        errors = [
            lines[i] for i, line in enumerate(lowered) if "error" in line or "traceback" in line
        ]
        findings[name] = {
            "log": str(service.log_path),
            "lines": len(lines),
            "error_lines": len(errors),
            "rebalance_lines": rebalances,
            "first_errors": errors[:5],
            "first_lines": lines[:5],
        }
    return findings


def run_figures(
    args: argparse.Namespace,
    platform: BenchPlatform,
    load: LoadResult,
    tail: TopicTail,
    ids: set[str],
    missing: set[str],
    problems: list[str],
) -> dict[str, Any]:
    """Throughput, HTTP outcome and stage latencies, from the driver and the topics."""
    latencies = stage_latencies(tail, ids)
    shipped_at = latencies.ends["placed->shipped"]
    last_shipped = max(shipped_at.values()) if shipped_at else float("nan")
    window = last_shipped - load.started_at
    in_window = [rec for rec in tail.records if load.started_at <= rec.ce_time <= last_shipped]
    after_run = [rec for rec in tail.records if rec.ce_time > last_shipped]
    placed = [rec for rec in tail.records if rec.ce_type == ORDER_PLACED and rec.key in ids]
    post_phase = load.finished_at - load.started_at
    run = {
        "orders": args.orders,
        "concurrency": args.concurrency,
        "skus": args.skus,
        "topic_prefix": platform.prefix,
        "accepted": len(ids),
        "shipped": len(shipped_at),
        "never_shipped": sorted(missing),
        "first_post_epoch": load.started_at,
        "last_response_epoch": load.finished_at,
        "last_shipped_ce_time_epoch": last_shipped,
        "post_phase_s": post_phase,
        "accepted_per_s": len(ids) / post_phase if post_phase > 0 else None,
        "window_s": window,
        "orders_per_s": len(shipped_at) / window if window > 0 else None,
        "events_in_window": len(in_window),
        "events_per_s": len(in_window) / window if window > 0 else None,
        "events_after_last_shipment": len(after_run),
        "records_by_type_in_window": records_by_type(in_window),
        "records_by_type_all": records_by_type(tail.records),
        "order_placed_mean_value_bytes": (
            sum(r.value_size for r in placed) / len(placed) if placed else None
        ),
        "order_placed_headers": (
            [(k, v.decode(errors="replace")) for k, v in placed[0].headers] if placed else []
        ),
    }
    # Each milestone's own rate (orders reaching it / span of its ce_times): the slowest
    # stage shows as the lowest rate.
    milestones = {"placed": {k: latencies.placed[k] for k in ids if k in latencies.placed}}
    milestones |= {stage.split("->")[1]: ends for stage, ends in latencies.ends.items()}
    run["milestone_rates_per_s"] = {
        name: len(times) / (max(times.values()) - min(times.values()))
        for name, times in milestones.items()
        if len(times) > 1 and max(times.values()) > min(times.values())
    }
    between = {"stock_locked->paid": ("stock_locked", "paid"), "paid->shipped": ("paid", "shipped")}
    derived = {
        label: [
            milestones[b][k] - milestones[a][k]
            for k in ids
            if k in milestones[a] and k in milestones[b]
        ]
        for label, (a, b) in between.items()
    }
    statuses = Counter(str(s.status) for s in load.submissions)
    if load.failed:
        problems.append(f"{len(load.failed)} POST /orders failed: {dict(statuses)}")
    for stage, lost in latencies.missing.items():
        if lost:
            problems.append(f"{len(lost)} orders have no {stage.split('->')[1]} event")
    return {
        "run": run,
        "http": {"statuses": dict(statuses), "failures": [vars(s) for s in load.failed[:20]]},
        "latency": {
            "POST /orders (HTTP)": summary([s.latency_s for s in load.accepted]),
            **{stage: summary(values) for stage, values in latencies.stages.items()},
            **{f"  {label} (derived)": summary(values) for label, values in derived.items()},
        },
    }


def resource_figures(
    platform: BenchPlatform,
    sampler: ProcSampler,
    idle: ProcSampler | None,
    stored_before: dict[str, dict[str, int]],
    stored_after: dict[str, dict[str, int]],
    warnings: list[str],
) -> dict[str, dict[str, Any]]:
    """CPU, memory and event-store writes per process group, busy and idle."""
    usage = sampler.usage()
    idle_usage = idle.usage() if idle is not None else {}
    resources: dict[str, dict[str, Any]] = {}
    for name in (*SERVICES, "kafka", "postgres", "postgres_bench", "bench", "foreign"):
        entry: dict[str, Any] = dict(usage.get(name, {}))
        entry["idle_cpu_pct_of_one_core"] = idle_usage.get(name, {}).get("cpu_pct_of_one_core")
        procs = int(entry.get("processes", 0))
        if name in SERVICES:
            entry["label"] = f"{name} (pid {platform[name].pid})"
            entry["peak_rss_mib"] = peak_rss_mib(platform[name].pid)
            written = {t: n - stored_before[name].get(t, 0) for t, n in stored_after[name].items()}
            entry["transactions"] = written.pop(XACT_COMMIT, None)
            entry["store_rows_written"] = written
            entry["stored_events"] = sum(n for t, n in written.items() if t.endswith("_events"))
        elif name == "kafka":
            entry["label"] = "kafka JVM" if kafka_pid() else "kafka JVM (not local: n/a)"
            entry["peak_rss_mib"] = peak_rss_mib(kafka_pid())
        elif name == "postgres":
            entry["label"] = f"postgres, all processes (max {procs}; mem = sum PSS)"
            entry["peak_rss_mib"] = entry.get("peak_mem_mib_sampled")
        elif name == "postgres_bench":
            entry["label"] = f"  of which backends of the run's DBs (max {procs})"
            entry["peak_rss_mib"] = entry.get("peak_mem_mib_sampled")
        elif name == "bench":
            entry["label"] = "bench driver (this process)"
            entry["peak_rss_mib"] = peak_rss_mib(os.getpid())
        else:
            entry["label"] = f"other runs of the platform on the machine (max {procs} procs)"
            entry["peak_rss_mib"] = None
            if entry.get("cpu_s", 0) > 0.5:
                warnings.append(
                    f"other runs of the platform (tests, `make run`) used {entry['cpu_s']:.1f}"
                    " CPU s on this machine during the run: the figures are noisier"
                )
        resources[name] = entry
    resources["machine"] = dict(usage.get("machine", {}))
    resources["machine"]["idle_cpu_pct_of_one_core"] = idle_usage.get("machine", {}).get("busy_pct")
    return resources


async def run_platform(args: argparse.Namespace, result: dict[str, Any]) -> None:
    platform = BenchPlatform()
    tail: TopicTail | None = None
    sampler: ProcSampler | None = None
    problems: list[str] = result["problems"]  # the run is wrong or incomplete: exit 1
    warnings: list[str] = result["warnings"]  # the figures are suspect (noise, log lines)
    try:
        say(f"starting the platform (topic prefix {platform.prefix})")
        await platform.start()
        rng = random.Random(args.seed)
        catalogue = make_catalogue(args.skus, rng)
        orders = make_orders(args.orders, catalogue, rng)
        needed = demand(orders)
        seeding = await seed_stock(platform["inventory"].url, catalogue, needed)
        result["seeding"] = vars(seeding)
        say(
            f"seeded {len(catalogue)} SKUs with twice their demand ({seeding.receipts} receipts,"
            f" {seeding.conflicts} 409 conflicts retried)"
        )
        tail = TopicTail()
        await tail.start()
        groups = process_groups(platform)
        idle: ProcSampler | None = None
        if args.idle_s > 0:
            say(f"sampling the idle platform for {args.idle_s:.0f}s")
            idle = ProcSampler(groups)
            await asyncio.to_thread(idle.run_for, args.idle_s)
        databases = {name: platform[name].database for name in SERVICES}
        stored_before = await asyncio.to_thread(store_counts, databases)
        sampler = ProcSampler(groups)
        sampler.start()

        say(f"placing {args.orders} orders, {args.concurrency} in flight")
        load = await drive_orders(platform["orders"].url, orders, args.concurrency)
        ids = {s.order_id for s in load.accepted if s.order_id}
        say(f"{len(ids)} accepted in {load.finished_at - load.started_at:.1f}s; waiting to ship")
        last_report = [time.monotonic(), 0]

        def progress(done: int) -> None:
            if time.monotonic() - last_report[0] >= 5 and done != last_report[1]:
                say(f"  shipped {done}/{len(ids)}")
                last_report[:] = [time.monotonic(), done]

        def services_alive() -> None:
            if dead := platform.dead():
                raise RuntimeError(f"service process(es) exited: {', '.join(dead)}")

        missing = await tail.wait_for(
            SHIPMENT_SHIPPED, ids, args.ship_timeout, progress, services_alive
        )
        sampler.stop()
        if missing:
            problems.append(f"{len(missing)} accepted orders never shipped within the deadline")
        if not await tail.settle():
            problems.append("the topics did not go quiet within 60 s after the last shipment")
        stored_after = await asyncio.to_thread(store_counts, databases)
        dead = platform.dead()
        if dead:
            problems.append(f"service process(es) exited during the run: {', '.join(dead)}")

        result.update(run_figures(args, platform, load, tail, ids, missing, problems))
        result["resources"] = resource_figures(
            platform, sampler, idle, stored_before, stored_after, warnings
        )
        for entry in result["resources"].values():
            if "cpu_s" in entry and ids:
                entry["cpu_ms_per_order"] = 1000 * entry["cpu_s"] / len(ids)
        total_stored = sum(result["resources"][name]["stored_events"] for name in SERVICES)
        # Counted once the topics are quiet: includes the few events after the last shipment.
        result["run"]["stored_events"] = total_stored
        result["run"]["stored_events_per_order"] = total_stored / len(ids) if ids else None
        transactions = sum(result["resources"][n].get("transactions") or 0 for n in SERVICES)
        result["run"]["transactions"] = transactions
        result["run"]["transactions_per_order"] = transactions / len(ids) if ids else None
        result["samples"] = [
            {"t": t, "machine_busy_s": m[0], **{k: vars(v) for k, v in by_group.items()}}
            for t, by_group, m in sampler.samples
        ]
        if missing:
            stuck = await diagnose(platform, sorted(missing)[:10])
            result["stuck_orders"] = stuck
            seen = Counter(str(entry.get("orders")) for entry in stuck)
            problems.append(f"what orders says about the first 10 unshipped: {dict(seen)}")
        result["service_logs"] = log_findings(platform)
        rebalances = {
            n: f["rebalance_lines"]
            for n, f in result["service_logs"].items()
            if f["rebalance_lines"]
        }
        if rebalances:
            warnings.append(f"consumer-group rebalance warnings in the service logs: {rebalances}")
        logged_errors = {
            n: f["error_lines"] for n, f in result["service_logs"].items() if f["error_lines"]
        }
        if logged_errors:
            warnings.append(f"error lines in the service logs: {logged_errors}")
    finally:
        if sampler is not None:
            sampler.stop()
        if tail is not None:
            await tail.stop()
        say("stopping the platform (processes, databases, topics)")
        problems.extend(await platform.stop())


async def run_ceilings(args: argparse.Namespace, result: dict[str, Any]) -> None:
    run = result.get("run", {})
    value_size = round(run.get("order_placed_mean_value_bytes") or 600)
    headers = [(k, v.encode()) for k, v in run.get("order_placed_headers", [])]
    say(f"kafka ceiling: {args.ceiling_records} records of {value_size} B")
    k = await kafka_ceiling(args.ceiling_records, value_size, headers, inflight=args.kafka_inflight)
    say(f"postgres ceiling: {args.pg_single} saves at 1/txn, {args.pg_batched} at 100/txn")
    p = await asyncio.to_thread(postgres_ceiling, args.pg_single, args.pg_batched)
    events_per_s = run.get("events_per_s") or float("nan")
    result["ceilings"] = {
        "kafka": k.as_dict(),
        "postgres": p.as_dict(),
        "ratio_kafka": events_per_s / k.records_per_s,
        "ratio_pg_single": events_per_s / p.single_per_s,
        "ratio_pg_batched": events_per_s / p.batched_per_s,
    }


async def main(args: argparse.Namespace, result: dict[str, Any]) -> None:
    task = asyncio.current_task()
    assert task is not None
    interrupts = 0

    def interrupt() -> None:
        # The first Ctrl-C/SIGTERM cancels the run, whose `finally` blocks tear the platform
        # down; later ones (a terminal and `uv run` may both deliver one) must not cut that
        # teardown short.
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            say("interrupted: tearing the platform down")
            task.cancel()
        else:
            say("still tearing down (processes stop within ~15 s)")

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)
    await run_platform(args, result)
    if not args.skip_ceilings:
        await run_ceilings(args, result)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    now = datetime.now(UTC)
    result: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
        "revision": revision(),
        "args": vars(args),
        "machine": machine_info(),
        "stack": stack_info(),
        "topics": list(topics.ALL),
        "problems": [],
        "warnings": [],
    }
    try:
        asyncio.run(main(args, result))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; the platform was torn down (no results written)")
        return 130
    except Exception as exc:
        result["problems"].append(f"run failed: {type(exc).__name__}: {exc}")
        path = write_json(result, now.strftime("%Y%m%dT%H%M%SZ"))
        say(f"run failed: {type(exc).__name__}: {exc} (partial results in {path})")
        raise
    path = write_json(result, now.strftime("%Y%m%dT%H%M%SZ"))
    print(table(result))
    print(f"\nraw numbers: {path.relative_to(path.parents[2])}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(run())
