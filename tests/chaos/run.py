"""One chaos run: the platform with replicas, mixed traffic, the faults spaced out while
orders flow, then the invariants checked from outside and the table printed."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging.admin import ensure_topics
from tests.chaos.faults import Fault, Faults
from tests.chaos.harness import Api, ChaosPlatform
from tests.chaos.invariants import Check, check, rebuilt_equals_live, snapshot, stock_histories
from tests.chaos.traffic import Order, Stock, Traffic
from tests.chaos.watch import EventWatch
from tests.support.card_provider import card_provider
from tests.support.polling import eventually
from tests.support.stack import delete_topics, end_offsets

REPORT_DIR = Path(__file__).resolve().parents[2] / ".local" / "chaos"


@dataclass(frozen=True)
class Size:
    orders: int
    traffic_s: float
    """Orders are placed evenly over this long (the faults run meanwhile)."""
    full: bool

    @classmethod
    def from_env(cls) -> Size:
        orders = int(os.environ.get("CHAOS_ORDERS", "600"))
        full = orders > 1000
        default_s = orders / 5 if full else 170
        return cls(orders, float(os.environ.get("CHAOS_TRAFFIC_S", default_s)), full)


@dataclass
class Result:
    size: Size
    orders: list[Order]
    faults: list[Fault]
    checks: list[Check]
    refused: Counter[str]
    seconds: dict[str, float] = field(default_factory=dict)
    api_retries: int = 0
    pools_renewed: int = 0
    webhooks: Counter[int] = field(default_factory=Counter)
    final_states: Counter[str] = field(default_factory=Counter)

    @property
    def violations(self) -> int:
        return sum(c.violations for c in self.checks)


async def quiet_topics(timeout: float = 180) -> None:
    """Nothing new on any topic for a few seconds: every consumer and relay is done."""
    names = [topics.physical(t) for t in topics.ALL]
    last: list[object] = [None]

    async def unchanged() -> bool:
        ends = await end_offsets(names)
        same = ends == last[0]
        last[0] = ends
        return same

    await eventually(unchanged, timeout=timeout, interval=4, what="topics quiet")


async def run_chaos(size: Size) -> Result:
    names = topics.all_physical_topics()
    await ensure_topics(names)
    clock = time.monotonic()
    seconds: dict[str, float] = {}
    with card_provider() as provider:
        platform = ChaosPlatform(provider)
        api = Api(platform)
        watch = EventWatch()
        try:
            await platform.start_all()
            seconds["start"] = time.monotonic() - clock
            await watch.start()
            tag = uuid.uuid4().hex[:6].upper()
            stock = Stock(
                plentiful=[f"CH-{tag}-{i:02d}" for i in range(12)],
                scarce={f"CH-{tag}-SCARCE-{i}": max(6, size.orders // 80) for i in range(3)},
            )
            traffic = Traffic(api, watch, stock, seed=int(os.environ.get("CHAOS_SEED", "8")))
            await traffic.receive_stock()
            faults = Faults(platform, watch, full=size.full)

            async def place_all() -> list[asyncio.Task[None]]:
                tasks = []
                for i in range(size.orders):
                    tasks.append(asyncio.create_task(traffic.run(traffic.new_order())))
                    due = clock_traffic + (i + 1) * size.traffic_s / size.orders
                    await asyncio.sleep(max(0.0, due - time.monotonic()))  # the arrival rate
                return tasks

            async def inject() -> None:
                await asyncio.sleep(10)  # steady traffic first: the baseline of the first fault
                await faults.run()

            clock_traffic = time.monotonic()
            tasks, _ = await asyncio.gather(place_all(), inject())
            seconds["traffic_and_faults"] = time.monotonic() - clock_traffic
            await asyncio.gather(*tasks)
            await faults.settle()
            await quiet_topics()
            seconds["settle"] = time.monotonic() - clock_traffic - seconds["traffic_and_faults"]
            faults.measure()

            clock_check = time.monotonic()
            accepted = [o for o in traffic.orders if o.order_id]
            snap = await snapshot(api, accepted, stock)
            skus = [*stock.plentiful, *stock.scarce]
            histories = await asyncio.to_thread(stock_histories, platform, skus)
            captures = sum(
                1 for c in provider.ledger.charges.values() if c.get("status") == "captured"
            )
            checks = check(snap, traffic.orders, stock, faults.poison, histories, captures)
            rows, differing, examples = await rebuilt_equals_live(platform)
            rebuilt = Check("read-model rows differing from a rebuild from scratch (rows compared)")
            rebuilt.checked, rebuilt.violations, rebuilt.examples = rows, differing, examples
            ready = Check("replicas not ready at the end (replicas checked)")
            down = await platform.not_ready()
            ready.checked, ready.violations, ready.examples = (
                len(platform.expected_up()),
                len(down),
                down[:3],
            )
            checks += [rebuilt, ready]
            seconds["checks"] = time.monotonic() - clock_check
            final = Counter(
                snap.orders[o.order_id]["status"] if o.order_id in snap.orders else "missing"
                for o in accepted
                if o.order_id
            )
            return Result(
                size,
                traffic.orders,
                faults.log,
                checks,
                traffic.refused,
                seconds,
                api.retries,
                api.pools_renewed,
                traffic.webhook_answers,
                final,
            )
        finally:
            await watch.stop()
            await api.close()
            platform.stop_all()
            platform.drop_databases()
            await delete_topics(names)


def table(result: Result, wall_s: float) -> str:
    size = result.size
    accepted = [o for o in result.orders if o.order_id]
    out = [
        f"chaos run: {len(result.orders)} orders ({len(accepted)} accepted) over "
        f"{size.traffic_s:.0f} s, 2 replicas of each service and of the read models, "
        f"wall time {wall_s:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in result.seconds.items())})",
        "",
        "orders by final state           count",
    ]
    for state, n in sorted(result.final_states.items(), key=lambda kv: -kv[1]):
        out.append(f"  {state:<30}{n:>6}")
    scenarios = Counter(o.scenario for o in accepted)
    out += ["", "scenarios: " + ", ".join(f"{k} {v}" for k, v in sorted(scenarios.items()))]
    if result.refused:
        out.append(f"orders refused by the API: {dict(result.refused)}")
    out += [
        f"client retries (502/503/504/connection): {result.api_retries} (connection pools "
        f"renewed after a PoolTimeout: {result.pools_renewed}); webhook answers "
        f"{dict(sorted(result.webhooks.items()))}",
        "",
        f"{'fault':<62}{'at (s)':>8}{'wall':>10}{'ready (s)':>11}{'recovery (s)':>14}",
    ]
    for f in result.faults:
        ready = "" if f.replica_ready_s is None else f"{f.replica_ready_s:.1f}"
        recovery = "not recovered" if f.recovery_s is None else f"{f.recovery_s:.1f}"
        out.append(f"  {f.name:<60}{f.started:>8.1f}{f.wall_time:>10}{ready:>11}{recovery:>14}")
    out += ["", f"{'invariant':<86}{'checked':>9}{'violations':>12}"]
    for c in result.checks:
        out.append(f"  {c.name:<84}{c.checked:>9}{c.violations:>12}")
        for example in c.examples:
            out.append(f"      e.g. {example[:150]}")
    out += ["", f"violations: {result.violations}"]
    return "\n".join(out)


def save(text: str) -> Path:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = REPORT_DIR / f"report-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    path.write_text(text + "\n")
    (REPORT_DIR / "last-report.txt").write_text(text + "\n")
    return path
