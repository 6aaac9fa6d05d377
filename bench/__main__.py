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
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from fulfilment_kit.contracts import topics

from . import profile as profiling
from . import rebuild
from .ceilings import kafka_ceiling, postgres_ceiling
from .figures import INFRASTRUCTURE, headline
from .load import (
    LoadResult,
    demand,
    drive_orders,
    make_catalogue,
    make_orders,
    pacing_schedule,
    pacing_stats,
    seed_stock,
)
from .measure import (
    ORDER_PLACED,
    SHIPMENT_SHIPPED,
    XACT_COMMIT,
    ProcSampler,
    ProcStat,
    TopicTail,
    cmdline,
    hop_latencies,
    kafka_pid,
    machine_info,
    peak_rss_mib,
    postgres_pid,
    records_by_type,
    stack_info,
    stage_latencies,
    store_counts,
    summary,
    tree,
)
from .platform import (
    REPO,
    SHARES_DATABASE,
    BenchPlatform,
    api_headers,
    processes_of,
)
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
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="after the saturated run, a paced run at this many orders/s (open loop, still at"
        " most --concurrency in flight); its latencies are reported on their own",
    )
    parser.add_argument(
        "--paced-orders",
        type=int,
        default=None,
        help="orders of the paced run (default: 20 s at --rate, at least 100)",
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="processes of each service and read model (1)"
    )
    parser.add_argument(
        "--platform-root",
        type=Path,
        default=REPO,
        help="the checkout whose services run (its .venv); default this one. The bench code"
        " that drives and measures is always this checkout's",
    )
    parser.add_argument(
        "--skip-rebuild", action="store_true", help="no projection rebuild speed after the run"
    )
    parser.add_argument(
        "--json-out", type=Path, default=None, help="also write the raw numbers to this file"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on every process (or --profile-services) during the load; files in"
        " .local/profiles/<stamp>/ (the figures of a profiled run are not comparable)",
    )
    parser.add_argument("--gil", action="store_true", help="with --profile: py-spy --gil")
    parser.add_argument(
        "--profile-services", default=None, help="with --profile: e.g. orders,inventory (all)"
    )
    parser.add_argument(
        "--profile-format",
        choices=sorted(profiling.FORMATS),
        default="speedscope",
        help="with --profile: speedscope (JSON, default), flamegraph (SVG) or raw",
    )
    parser.add_argument(
        "--profile-rate", type=int, default=100, help="with --profile: samples per second (100)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.orders = QUICK_ORDERS
    if args.orders < 1 or args.concurrency < 1:
        parser.error("--orders and --concurrency must be at least 1")
    if args.replicas < 1 or args.replicas > 9:
        parser.error("--replicas must be from 1 to 9")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be a positive number of orders/s")
    if args.paced_orders is not None and args.rate is None:
        parser.error("--paced-orders needs --rate")
    if args.rate is not None and args.paced_orders is None:
        args.paced_orders = max(100, round(20 * args.rate))
    if args.paced_orders is not None and args.paced_orders < 1:
        parser.error("--paced-orders must be at least 1")
    if (args.gil or args.profile_services) and not args.profile:
        parser.error("--gil and --profile-services go with --profile")
    args.platform_root = args.platform_root.resolve()
    if not (args.platform_root / ".venv" / "bin").is_dir():
        parser.error(f"--platform-root {args.platform_root} has no .venv (uv sync there first)")
    if args.profile:
        try:
            profiling.choose(args.profile_services, processes_of(args.platform_root))
        except ValueError as exc:
            parser.error(str(exc))
    if args.skus < 3:
        parser.error("--skus must be at least 3 (orders have up to 3 distinct SKUs)")
    if args.ship_timeout is None:
        args.ship_timeout = 120 + args.orders / 10
    return args


def revision(root: Path = REPO) -> str:
    """The commit of the checkout at `root`, `+dirty` with uncommitted changes besides bench/."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":!bench", ":!BENCHMARKS.md"],
            cwd=root,
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
    assert platform.processes is not None
    for name in platform.processes:
        pids = [s.pid for s in platform.replicas_of(name)]
        groups[name] = lambda table, pids=pids: [p for root in pids for p in tree(root, table)]
    broker = kafka_pid()
    groups["kafka"] = lambda table: tree(broker, table) if broker else []

    postmaster = postgres_pid()

    def postgres(table: dict[int, ProcStat]) -> list[int]:
        if postmaster is not None:  # the local stack's server, not the machine's others
            return [p for p in tree(postmaster, table) if table[p].comm == "postgres"]
        return [s.pid for s in table.values() if s.comm == "postgres"]

    def postgres_ours(table: dict[int, ProcStat]) -> list[int]:
        return [p for p in postgres(table) if any(d in cmdline(p) for d in platform.databases)]

    groups["postgres"] = postgres
    groups["postgres_bench"] = postgres_ours
    me = os.getpid()
    groups["bench"] = lambda table: [me] if me in table else []
    ours = {s.pid for s in platform.services.values()} | {me}

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
    assert platform.processes is not None
    services = platform.processes
    for name in (*services, "kafka", "postgres", "postgres_bench", "bench", "foreign"):
        entry: dict[str, Any] = dict(usage.get(name, {}))
        entry["idle_cpu_pct_of_one_core"] = idle_usage.get(name, {}).get("cpu_pct_of_one_core")
        procs = int(entry.get("processes", 0))
        if name in services:
            pids = [s.pid for s in platform.replicas_of(name)]
            entry["label"] = (
                f"{name} (pid {pids[0]})" if len(pids) == 1 else f"{name} ({len(pids)} replicas)"
            )
            # The highest replica's (the figure per process that matters for its limits).
            rss = [r for r in (peak_rss_mib(pid) for pid in pids) if r is not None]
            entry["peak_rss_mib"] = max(rss) if rss else None
            entry["peak_rss_mib_replicas"] = rss
            if name in stored_after:
                written = {
                    t: n - stored_before[name].get(t, 0) for t, n in stored_after[name].items()
                }
                entry["transactions"] = written.pop(XACT_COMMIT, None)
                entry["store_rows_written"] = written
                entry["stored_events"] = sum(n for t, n in written.items() if t.endswith("_events"))
        elif name == "kafka":
            entry["label"] = "kafka JVM" if kafka_pid() else "kafka JVM (not local: n/a)"
            entry["peak_rss_mib"] = peak_rss_mib(kafka_pid())
        elif name == "postgres":
            server = "this stack's server" if postgres_pid() else "all processes"
            entry["label"] = f"postgres, {server} (max {procs}; mem = sum PSS)"
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


async def paced_phase(
    args: argparse.Namespace,
    platform: BenchPlatform,
    orders: list[Any],
    tail: TopicTail,
    result: dict[str, Any],
    groups: dict[str, Any],
) -> None:
    """A second load at `--rate` orders/s after the saturated one has settled: its stage
    latencies and CPU are those at that load, kept apart from the saturated run's."""
    problems: list[str] = result["problems"]
    urls = [s.url for s in platform.replicas_of("orders")]
    say(
        f"paced run: {len(orders)} orders at {args.rate:g}/s ({args.concurrency} in flight at most)"
    )
    sampler = ProcSampler(groups)
    sampler.start()
    try:
        load = await drive_orders(urls, orders, args.concurrency, rate=args.rate)
        ids = {s.order_id for s in load.accepted if s.order_id}
        missing = await tail.wait_for(
            SHIPMENT_SHIPPED, ids, args.ship_timeout, lambda done: None, lambda: None
        )
    finally:
        sampler.stop()
    usage = sampler.usage()
    if missing:
        problems.append(f"paced run: {len(missing)} accepted orders never shipped")
    if load.failed:
        problems.append(f"paced run: {len(load.failed)} POST /orders failed")
    latencies = stage_latencies(tail, ids)
    schedule = pacing_schedule(len(orders), args.rate)
    shipped = latencies.ends["placed->shipped"]
    window = (max(shipped.values()) - load.started_at) if shipped else float("nan")
    result["paced"] = {
        "rate_per_s": args.rate,
        "orders": len(orders),
        "accepted": len(ids),
        "shipped": len(shipped),
        "orders_per_s": len(shipped) / window if window > 0 else None,
        "pacing": pacing_stats(
            [schedule[s.index] for s in load.submissions], [s.sent_at for s in load.submissions]
        ),
        "latency": {
            "POST /orders (HTTP)": summary([s.latency_s for s in load.accepted]),
            **{stage: summary(values) for stage, values in latencies.stages.items()},
        },
        "hops": {hop: summary(v) for hop, v in hop_latencies(tail, ids).items()},
        "cpu": paced_cpu(usage, platform.processes or [], len(ids)),
    }
    pacing = result["paced"]["pacing"]
    if pacing.get("max_behind_s", 0) > 1:
        result["warnings"].append(
            f"paced run: sends fell up to {pacing['max_behind_s']:.1f} s behind the schedule"
            f" (achieved {pacing['achieved_per_s']:.1f}/s of {args.rate:g}/s): the platform or"
            " the driver could not keep the rate"
        )


def paced_cpu(
    usage: dict[str, dict[str, float]], processes: Sequence[str], orders: int
) -> dict[str, float | None]:
    """CPU ms per order at the paced rate: the platform's (services, Kafka and this stack's
    PostgreSQL server, as the saturated run's platform figure), each process's, and the
    machine's busy share."""
    per_order = {
        name: 1000 * usage[name]["cpu_s"] / orders if orders and name in usage else None
        for name in (*processes, *INFRASTRUCTURE)
    }
    known = [v for v in per_order.values() if v is not None]
    return {
        "platform_cpu_ms_per_order": sum(known) if known else None,
        **{f"cpu_ms_per_order:{name}": v for name, v in per_order.items()},
        "machine_busy_pct": usage.get("machine", {}).get("busy_pct"),
    }


def measure_rebuild(platform: BenchPlatform, result: dict[str, Any]) -> None:
    """Projection rebuild events/s of the run's topics (the checkout's own CLI)."""
    database = platform.replicas_of("customer-service")[0].database
    say("projection rebuild (all, from the topics, dry run)")
    try:
        figure = rebuild.measure(platform.root, database, platform.prefix)
    except RuntimeError as exc:
        result["warnings"].append(f"projection rebuild not measured: {exc}")
        return
    result["rebuild"] = {
        "events": figure.events,
        "seconds": figure.seconds,
        "wall_s": figure.wall_s,
        "events_per_s": figure.events_per_s,
    }


async def run_platform(args: argparse.Namespace, result: dict[str, Any]) -> None:
    platform = BenchPlatform(root=args.platform_root, replicas=args.replicas)
    tail: TopicTail | None = None
    sampler: ProcSampler | None = None
    profiler: profiling.Profiler | None = None
    problems: list[str] = result["problems"]  # the run is wrong or incomplete: exit 1
    warnings: list[str] = result["warnings"]  # the figures are suspect (noise, log lines)
    try:
        say(
            f"starting the platform (topic prefix {platform.prefix}, {args.replicas} replica(s)"
            f" of each, from {platform.root})"
        )
        await platform.start()
        assert platform.processes is not None
        result["processes"] = list(platform.processes)
        result["replicas"] = args.replicas
        if platform.root != REPO:
            result["platform_root"] = str(platform.root)
        rng = random.Random(args.seed)
        catalogue = make_catalogue(args.skus, rng)
        # The paced run's orders are drawn after the saturated run's: the saturated orders
        # are the same with or without --rate.
        everything = make_orders(args.orders + (args.paced_orders or 0), catalogue, rng)
        orders, paced_orders = everything[: args.orders], everything[args.orders :]
        needed = demand(everything)
        seeding = await seed_stock(platform["inventory"].url, catalogue, needed)
        result["seeding"] = vars(seeding)
        say(
            f"seeded {len(catalogue)} SKUs with twice their demand ({seeding.receipts} receipts,"
            f" {seeding.conflicts} 409 conflicts retried)"
        )
        tail = TopicTail()
        await tail.start()
        groups = process_groups(platform)
        # Every consumer group settled (each replica ready with its partitions, for a few
        # heartbeats) before the idle window and the clock start: no start-up rebalance
        # is measured.
        result["settled_wait_s"] = round(await platform.wait_settled(), 2)
        say(f"every replica ready and its consumer groups settled ({result['settled_wait_s']}s)")
        idle: ProcSampler | None = None
        if args.idle_s > 0:
            # Idle means no traffic: the seeding's events are processed first.
            if not await tail.settle():
                warnings.append("the topics did not go quiet after seeding: idle CPU is not idle")
            say(f"sampling the idle platform for {args.idle_s:g}s")
            idle = ProcSampler(groups)
            await asyncio.to_thread(idle.run_for, args.idle_s)
        databases = {
            name: platform[name].database
            for name in platform.processes
            if name not in SHARES_DATABASE
        }
        stored_before = await asyncio.to_thread(store_counts, databases)
        if args.profile:
            chosen = profiling.choose(args.profile_services, platform.processes)
            directory = profiling.PROFILE_DIR / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            profiler = profiling.Profiler(
                directory, fmt=args.profile_format, gil=args.gil, rate=args.profile_rate
            )
            profiler.start({name: platform[name].pid for name in chosen})
            say(f"py-spy on {', '.join(chosen)}{' (--gil)' if args.gil else ''} -> {directory}")
            warnings.append("profiled run (py-spy attached): the figures are not comparable")
        # Settled again (a replica that dropped out during the idle window is waited for).
        result["settled_wait_s"] += round(await platform.wait_settled(), 2)
        sampler = ProcSampler(groups)
        sampler.start()

        urls = [s.url for s in platform.replicas_of("orders")]
        say(f"placing {args.orders} orders, {args.concurrency} in flight")
        load = await drive_orders(urls, orders, args.concurrency)
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
        if profiler is not None:
            result["profiles"] = profiler.stop()
            for name, where in result["profiles"].items():
                say(f"  profile of {name}: {where}")
            profiler = None
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
        total_stored = sum(result["resources"][name]["stored_events"] for name in databases)
        # Counted once the topics are quiet: includes the few events after the last shipment.
        result["run"]["stored_events"] = total_stored
        result["run"]["stored_events_per_order"] = total_stored / len(ids) if ids else None
        transactions = sum(result["resources"][n].get("transactions") or 0 for n in databases)
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
        if paced_orders:
            await paced_phase(args, platform, paced_orders, tail, result, groups)
            if not await tail.settle():
                problems.append("the topics did not go quiet within 60 s after the paced run")
        if not args.skip_rebuild:
            await asyncio.to_thread(measure_rebuild, platform, result)
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
        result["headline"] = headline(result)
    finally:
        if profiler is not None:
            profiler.stop()
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
        "revision": revision(args.platform_root),  # the platform's
        "bench_revision": revision(),  # the code that drove and measured it
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
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(path.read_text())
    print(table(result))
    print(f"\nraw numbers: {path.relative_to(path.parents[2])}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(run())
