"""One plain-text table of a run, and its raw numbers as JSON under bench/results/."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

Row = tuple[str, ...]


def num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def ms(value: float | None) -> str:
    return num(None if value is None else value * 1000, 1)


def render(rows: list[Row | str]) -> str:
    """Rows of cells (label left, values right) in aligned columns; a bare string is a line."""
    cells = [r for r in rows if not isinstance(r, str)]
    columns = max(len(r) for r in cells)
    padded = [tuple(r) + ("",) * (columns - len(r)) for r in cells]
    widths = [max(len(r[i]) for r in padded) for i in range(columns)]
    lines = []
    for row in rows:
        if isinstance(row, str):
            lines.append(row)
            continue
        label, *values = tuple(row) + ("",) * (columns - len(row))
        parts = [label.ljust(widths[0])]
        parts += [v.rjust(w) for v, w in zip(values, widths[1:], strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def table(r: dict[str, Any]) -> str:
    machine = r["machine"]
    stack = r.get("stack", {})
    run = r.get("run", {})
    rows: list[Row | str] = [
        f"fulfilment platform benchmark  {r['date']}",
        f"command: {r['command']}   (platform at {r.get('revision', '?')}"
        + (f" from {r['platform_root']}" if r.get("platform_root") else "")
        + f"; {r.get('replicas', 1)} replica(s) of {', '.join(r.get('processes', []))})",
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"{machine['mem_total_gib']} GiB RAM, Linux {machine['kernel']}, "
        f"load avg at start {machine['loadavg_at_start'][0]:.2f}",
        "stack: PostgreSQL {} (fsync={}, synchronous_commit={}), Kafka {} (1 broker, {} "
        "partitions per topic)".format(
            str(stack.get("postgres_server_version", "?")).split()[0],
            stack.get("postgres_fsync", "?"),
            stack.get("postgres_synchronous_commit", "?"),
            stack.get("kafka_version", "?"),
            stack.get("kafka_partitions_per_topic", "?"),
        ),
        "",
        ("THROUGHPUT", "value"),
        (
            "orders posted / accepted (201) / shipped",
            f"{run.get('orders')} / {run.get('accepted')} / {run.get('shipped')}",
        ),
        ("POST phase (first POST -> last 201), s", num(run.get("post_phase_s"), 2)),
        ("orders accepted/s during the POST phase", num(run.get("accepted_per_s"))),
        ("first POST -> last ShipmentShipped ce_time, s", num(run.get("window_s"), 2)),
        ("sustained orders/s end to end", num(run.get("orders_per_s"))),
        *(
            (f"  {name} milestone/s (orders / span of its ce_times)", num(rate))
            for name, rate in run.get("milestone_rates_per_s", {}).items()
        ),
        ("records published in that window (5 topics)", str(run.get("events_in_window"))),
        ("platform events/s (records published / window)", num(run.get("events_per_s"))),
        (
            "event-store events written per order (5 stores)",
            num(run.get("stored_events_per_order"), 1),
        ),
        (
            "DB transactions committed per order (incl. reads, polls)",
            num(run.get("transactions_per_order"), 1),
        ),
        "",
        ("LATENCY, ms", "p50", "p95", "p99"),
    ]
    for name, s in r.get("latency", {}).items():
        label = f"{name} (n={s.get('n', 0)})"
        rows.append((label, ms(s.get("p50")), ms(s.get("p95")), ms(s.get("p99"))))
    rows += [
        "",
        (
            "RESOURCES over the run",
            "CPU s",
            "ms/order",
            "% of 1 core",
            "idle %",
            "peak RSS MiB",
            "events stored",
            "transactions",
        ),
    ]
    resources = r.get("resources", {})
    for name, u in resources.items():
        if name == "machine":
            continue
        stored = u.get("stored_events")
        commits = u.get("transactions")
        rows.append(
            (
                u["label"],
                num(u.get("cpu_s"), 1),
                num(u.get("cpu_ms_per_order"), 1),
                num(u.get("cpu_pct_of_one_core"), 0),
                num(u.get("idle_cpu_pct_of_one_core"), 0),
                num(u.get("peak_rss_mib"), 0),
                "" if stored is None else f"{stored:,}",
                "" if commits is None else f"{commits:,}",
            )
        )
    m = resources.get("machine", {})
    if m:
        rows.append(
            (
                f"whole machine ({machine['nproc']} CPUs; busy % of all CPUs)",
                num(m.get("cpu_s"), 1),
                num(m.get("cpu_ms_per_order"), 1),
                num(m.get("busy_pct"), 0) + "% all",
                num(m.get("idle_cpu_pct_of_one_core"), 0) + "% all",
            )
        )
    paced = r.get("paced")
    if paced:
        pacing = paced.get("pacing", {})
        rows += [
            "",
            (
                f"PACED RUN at {paced['rate_per_s']:g} orders/s (after the saturated run)",
                "value",
            ),
            (
                "orders posted / accepted / shipped",
                f"{paced['orders']} / {paced['accepted']} / {paced['shipped']}",
            ),
            ("achieved send rate, orders/s", num(pacing.get("achieved_per_s"))),
            ("sends behind schedule, max s", num(pacing.get("max_behind_s"), 2)),
            ("LATENCY at that rate, ms", "p50", "p95", "p99"),
        ]
        for name, s in paced.get("latency", {}).items():
            label = f"{name} (n={s.get('n', 0)})"
            rows.append((label, ms(s.get("p50")), ms(s.get("p95")), ms(s.get("p99"))))
        if paced.get("hops"):
            rows.append(("HOPS of placed->shipped at that rate, ms", "p50", "p95", "p99"))
        for name, s in paced.get("hops", {}).items():
            rows.append((f"  {name}", ms(s.get("p50")), ms(s.get("p95")), ms(s.get("p99"))))
        cpu = paced.get("cpu") or {}
        if cpu:
            rows.append(("CPU at that rate", "ms/order"))
            rows.append(
                (
                    "platform (services, Kafka, PostgreSQL)",
                    num(cpu.get("platform_cpu_ms_per_order"), 1),
                )
            )
            for key, value in cpu.items():
                if key.startswith("cpu_ms_per_order:"):
                    rows.append((f"  {key.split(':', 1)[1]}", num(value, 1)))
            rows.append(("whole machine busy, % of all CPUs", num(cpu.get("machine_busy_pct"), 0)))
    rebuilt = r.get("rebuild")
    if rebuilt:
        rows += [
            "",
            ("PROJECTION REBUILD (all, --source topics, dry run)", "value"),
            (
                f"{rebuilt['events']:,} events in {rebuilt['seconds']:.2f} s, events/s",
                num(rebuilt["events_per_s"], 0),
            ),
        ]
    c = r.get("ceilings")
    if c:
        rows += ["", ("CEILINGS (platform stopped)", "per s", "platform/ceil")]
        k = c["kafka"]
        rows += [
            (
                f"kafka produce {k['records']:,} x {k['value_size']} B (acks=all, idempotent)",
                num(k["produce_per_s"], 0),
            ),
            ("kafka consume, read_committed", num(k["consume_per_s"], 0)),
            (
                "kafka produce+consume (records / both phases)",
                num(k["records_per_s"], 0),
                num(c["ratio_kafka"], 3),
            ),
        ]
        p = c["postgres"]
        rows += [
            (
                "postgres event store, 1 event / transaction",
                num(p["single_per_s"], 0),
                num(c["ratio_pg_single"], 3),
            ),
            (
                f"postgres event store, {p['batch_size']} events / transaction",
                num(p["batched_per_s"], 0),
                num(c["ratio_pg_batched"], 3),
            ),
        ]
    for heading, key in (("PROBLEMS", "problems"), ("WARNINGS", "warnings")):
        notes = r.get(key) or []
        if notes:
            rows += ["", heading] + [f"  - {n}" for n in notes]
    return render(rows)


def write_json(r: dict[str, Any], stamp: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(json.dumps(r, indent=2, default=str) + "\n")
    return path
