"""Stage deadlines: no order waits silently. Follows the order log, flags the overdue ones."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.utils import get_topic
from prometheus_client import Counter, Gauge, Histogram

from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.persistence.follower import LogFollower, Writes, seconds_until
from fulfilment_kit.persistence.notifications import Wakeup, on_commit
from orders.application import OrderNotFound, OrdersApplication
from orders.domain import Order, OrderStatus
from orders.settings import OrdersSettings

log = structlog.get_logger(__name__)

ORDERS_FLAGGED = Counter(
    "fulfil_orders_flagged_total",
    "Orders that passed the deadline of a stage",
    ["stage"],
    registry=REGISTRY,
)
ORDERS_OVERDUE = Gauge(
    "fulfil_orders_overdue",
    "Orders now waiting in a stage past its deadline",
    ["stage"],
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "fulfil_order_stage_seconds",
    "Time an order spent in a stage before moving on",
    ["stage"],
    # An edge on each default stage deadline (120 s, 2 d, 14 d), so "within the deadline"
    # is one bucket: fulfil_order_stage_seconds_bucket{le="120"} / _count.
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 3600, 86400, 172800, 1209600),
    registry=REGISTRY,
)

DEFAULT_DEADLINES_S = OrdersSettings.model_construct().deadlines_s()
"""The stages with a deadline, and their default seconds (the settings' defaults)."""

_ENTERS: dict[type[Any], OrderStatus] = {
    Order.Placed: OrderStatus.PLACED,
    Order.StockLocked: OrderStatus.STOCK_LOCKED,
    Order.Paid: OrderStatus.PAID,
    Order.Shipped: OrderStatus.SHIPPED,
    Order.Delivered: OrderStatus.DELIVERED,
    Order.Rejected: OrderStatus.REJECTED,
    Order.Cancelled: OrderStatus.CANCELLED,
}


FOLLOWER = "orders-deadlines"
_WATCHED: list[type[Any]] = [*_ENTERS, Order.Flagged]
WATCHED_TOPICS = tuple(get_topic(cls) for cls in _WATCHED)


@dataclass
class DeadlineWatch:
    """Keeps each live order's stage in a table followed from the log; flags the overdue.

    The table holds one row per order in a stage with a deadline (placed, stock locked,
    paid, shipped), due when the deadline passes; it is followed from the persisted
    position, so a restart reads only the new events. Replicas claim due rows with
    `SKIP LOCKED`: each overdue order is flagged by one of them.

    A round runs when the order log changed (a commit's notification, any replica) or the
    next deadline falls due, at most every `interval_s`, and at least every `fallback_s`.
    """

    app: OrdersApplication
    deadlines_s: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES_S))
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    interval_s: float = 1.0
    fallback_s: float = 10.0

    def __post_init__(self) -> None:
        self.follower = LogFollower(self.app, FOLLOWER, self._project, topics=WATCHED_TOPICS)
        self.next_due: datetime | None = None
        """After a round: the earliest deadline still pending (the loop sleeps until it)."""
        self.wakeup = Wakeup()

    async def run(self) -> None:
        async with on_commit(self.app, self.wakeup.set):
            while True:
                wait = self.fallback_s
                try:
                    await self.tick()
                    wait = seconds_until(self.next_due, self.clock(), self.fallback_s)
                except Exception as exc:  # a bad round must not end the watch
                    log.warning("deadline watch round failed", error=f"{type(exc).__name__}: {exc}")
                    wait = self.interval_s
                await self.wakeup.wait(wait, spacing_s=self.interval_s)

    async def tick(self) -> list[UUID]:
        """Catch up with the log, then flag every order past its deadline; returns those flagged."""
        return await asyncio.to_thread(self.step)

    def step(self) -> list[UUID]:
        self.follower.catch_up()
        flagged = []
        with self.follower.claim_due("deadline", self.clock()) as claim:
            for item in claim.items:
                order_id, stage = UUID(item.key), str(item.data["stage"])
                assert item.due_at is not None
                try:
                    done = self.app.flag_overdue(order_id, stage, item.due_at)
                except OrderNotFound:
                    claim.done(item)
                    continue
                if done:  # else it moved on or changed meanwhile: the log tells, next round
                    claim.put(replace(item, due_at=None, data={**item.data, "flagged": True}))
                    flagged.append(order_id)
                    ORDERS_FLAGGED.labels(stage).inc()
                    log.warning("order overdue", order_id=str(order_id), stage=stage)
        self.next_due = claim.next_due
        self._update_overdue_gauge()
        return flagged

    def _project(self, events: Sequence[Any], writes: Writes) -> None:
        writes.prefetch("deadline", (str(e.originator_id) for e in events))
        for event in events:
            key = str(event.originator_id)
            previous = writes.get("deadline", key)
            if isinstance(event, Order.Flagged):  # its fields: vars (declared by its method)
                if previous is not None and previous.data["stage"] == vars(event)["stage"]:
                    writes.put("deadline", key, due_at=None, **{**previous.data, "flagged": True})
                continue
            stage = str(_ENTERS[type(event)])
            if previous is not None:
                entered_at = datetime.fromisoformat(previous.data["entered_at"])
                spent = (event.timestamp - entered_at).total_seconds()
                STAGE_SECONDS.labels(previous.data["stage"]).observe(max(spent, 0.0))
            if stage not in DEFAULT_DEADLINES_S:
                writes.drop("deadline", key)
                continue
            deadline_s = self.deadlines_s.get(stage)
            due_at = None if deadline_s is None else event.timestamp + timedelta(seconds=deadline_s)
            writes.put(
                "deadline",
                key,
                due_at=due_at,
                stage=stage,
                entered_at=event.timestamp.isoformat(),
                flagged=False,
            )

    def _update_overdue_gauge(self) -> None:
        counts = dict.fromkeys(self.deadlines_s, 0)
        for item in self.follower.items("deadline", flagged=True):
            stage = str(item.data["stage"])
            counts[stage] = counts.get(stage, 0) + 1
        for stage, n in counts.items():
            ORDERS_OVERDUE.labels(stage).set(n)
