"""The figures two benchmark variants are compared on, taken from a run's result, and the
median/ratio arithmetic of `python -m bench.compare` (pure: no I/O)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The platform's own processes in a run's resources (the load driver and other runs apart).
INFRASTRUCTURE = ("kafka", "postgres")


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool


FIGURES: tuple[Figure, ...] = (
    Figure("orders_per_s", "sustained orders/s end to end", "/s", True),
    Figure("machine_cpu_ms_per_order", "machine CPU per order (whole machine)", "ms", False),
    Figure(
        "platform_cpu_ms_per_order",
        "platform CPU per order (services+Kafka+PostgreSQL, driver excluded)",
        "ms",
        False,
    ),
    Figure("platform_driver_cpu_ms_per_order", "platform + load driver CPU per order", "ms", False),
    Figure("services_cpu_ms_per_order", "  of which the services' processes", "ms", False),
    Figure("placed_paid_p50_ms", "placed->paid p50 (saturated)", "ms", False),
    Figure("placed_paid_p99_ms", "placed->paid p99 (saturated)", "ms", False),
    Figure("placed_shipped_p50_ms", "placed->shipped p50 (saturated)", "ms", False),
    Figure("placed_shipped_p99_ms", "placed->shipped p99 (saturated)", "ms", False),
    Figure("paced_achieved_per_s", "paced load: achieved orders/s", "/s", True),
    Figure("paced_placed_paid_p50_ms", "paced load: placed->paid p50", "ms", False),
    Figure("paced_placed_paid_p99_ms", "paced load: placed->paid p99", "ms", False),
    Figure("paced_placed_shipped_p50_ms", "paced load: placed->shipped p50", "ms", False),
    Figure("paced_placed_shipped_p99_ms", "paced load: placed->shipped p99", "ms", False),
    Figure("paced_platform_cpu_ms_per_order", "paced load: platform CPU per order", "ms", False),
    Figure(
        "idle_services_cpu_pct",
        "idle CPU of the platform's processes (all, % of one core)",
        "%",
        False,
    ),
    Figure("rebuild_events_per_s", "projection rebuild (topics, dry run) events/s", "/s", True),
)


def _get(mapping: Mapping[str, Any], *path: str) -> Any:
    value: Any = mapping
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _ms(seconds: Any) -> float | None:
    return None if seconds is None else 1000 * float(seconds)


def _per_order(cpu_s: float | None, orders: int) -> float | None:
    return None if cpu_s is None or orders <= 0 else 1000 * cpu_s / orders


def headline(result: Mapping[str, Any]) -> dict[str, float | None]:
    """The compared figures of one `python -m bench` result (None where it has no such
    figure, e.g. no paced phase); peak RSS per process as `rss_mib:<process>`."""
    run = result.get("run") or {}
    resources: Mapping[str, Any] = result.get("resources") or {}
    processes: Sequence[str] = result.get("processes") or []
    orders = int(run.get("accepted") or 0)

    def cpu(names: Iterable[str]) -> float | None:
        values = [v for v in (_get(resources, n, "cpu_s") for n in names) if v is not None]
        return sum(values) if values else None

    services = cpu(processes)
    platform = cpu([*processes, *INFRASTRUCTURE])
    driver = _get(resources, "bench", "cpu_s")
    idle = [_get(resources, n, "idle_cpu_pct_of_one_core") for n in processes]
    figures: dict[str, float | None] = {
        "orders_per_s": run.get("orders_per_s"),
        "machine_cpu_ms_per_order": _per_order(_get(resources, "machine", "cpu_s"), orders),
        "platform_cpu_ms_per_order": _per_order(platform, orders),
        "platform_driver_cpu_ms_per_order": _per_order(
            None if platform is None or driver is None else platform + driver, orders
        ),
        "services_cpu_ms_per_order": _per_order(services, orders),
        "idle_services_cpu_pct": (
            sum(v for v in idle if v is not None) if idle and None not in idle else None
        ),
        "rebuild_events_per_s": _get(result, "rebuild", "events_per_s"),
    }
    latency = result.get("latency") or {}
    paced = result.get("paced") or {}
    paced_latency = paced.get("latency") or {}
    for prefix, source in (("", latency), ("paced_", paced_latency)):
        for stage, key in (("placed->paid", "placed_paid"), ("placed->shipped", "placed_shipped")):
            for q in ("p50", "p99"):
                figures[f"{prefix}{key}_{q}_ms"] = _ms(_get(source, stage, q))
    figures["paced_achieved_per_s"] = _get(paced, "pacing", "achieved_per_s")
    figures["paced_platform_cpu_ms_per_order"] = _get(paced, "cpu", "platform_cpu_ms_per_order")
    for name in processes:
        figures[f"rss_mib:{name}"] = _get(resources, name, "peak_rss_mib")
    return figures


def median(values: Iterable[float | None]) -> float | None:
    """The median of the figures that exist (None when none does)."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


def ratio(candidate: float | None, base: float | None) -> float | None:
    """candidate / base; None when either is missing or the base is 0."""
    if candidate is None or base is None or base == 0:
        return None
    return candidate / base


def medians(runs: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per figure, the median over runs (keys of any run)."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run))
    return {k: median(run.get(k) for run in runs) for k in keys}


def alternation(rounds: int, variants: int = 2) -> list[tuple[int, int]]:
    """(round, variant) in the order to run them: variants alternate and every other round
    reverses their order (A B, B A, A B, ...) so a drift of the machine's load over the run
    weighs on every variant alike."""
    order: list[tuple[int, int]] = []
    for r in range(rounds):
        sequence = list(range(variants))
        if r % 2:
            sequence.reverse()
        order.extend((r, v) for v in sequence)
    return order
