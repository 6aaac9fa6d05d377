"""Stage deadlines: no order waits silently. Follows the order log, flags the overdue ones."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from prometheus_client import Counter, Gauge, Histogram

from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.persistence.follower import LogFollower
from orders.application import OrderNotFound, OrdersApplication
from orders.domain import Order, OrderStatus

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
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
    registry=REGISTRY,
)

DEFAULT_DEADLINES_S = {
    OrderStatus.PLACED: 120.0,
    OrderStatus.STOCK_LOCKED: 120.0,
    OrderStatus.PAID: 2 * 86400.0,
    OrderStatus.SHIPPED: 14 * 86400.0,
}

_ENTERS: dict[type[Any], OrderStatus] = {
    Order.Placed: OrderStatus.PLACED,
    Order.StockLocked: OrderStatus.STOCK_LOCKED,
    Order.Paid: OrderStatus.PAID,
    Order.Shipped: OrderStatus.SHIPPED,
    Order.Delivered: OrderStatus.DELIVERED,
    Order.Rejected: OrderStatus.REJECTED,
    Order.Cancelled: OrderStatus.CANCELLED,
}


def deadlines_from_env() -> dict[str, float]:
    """FULFIL_ORDERS_DEADLINE_<STAGE>_S overrides the default seconds of a stage."""
    return {
        str(stage): float(os.environ.get(f"FULFIL_ORDERS_DEADLINE_{stage.upper()}_S", default))
        for stage, default in DEFAULT_DEADLINES_S.items()
    }


@dataclass
class _Waiting:
    stage: str
    entered_at: datetime
    flagged: bool = False


@dataclass
class DeadlineWatch:
    """Keeps each live order's stage from the log; flags those past their stage's deadline."""

    app: OrdersApplication
    deadlines_s: dict[str, float] = field(default_factory=deadlines_from_env)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    interval_s: float = 1.0

    def __post_init__(self) -> None:
        self.follower = LogFollower(self.app)
        self.waiting: dict[UUID, _Waiting] = {}

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # a bad round must not end the watch
                log.warning("deadline watch round failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> list[UUID]:
        """Catch up with the log, then flag every order past its deadline; returns those flagged."""
        for event in await self.follower.read():
            self._apply(event)
        now = self.clock()
        flagged = []
        for order_id, waiting in list(self.waiting.items()):
            deadline_s = self.deadlines_s.get(waiting.stage)
            if waiting.flagged or deadline_s is None:
                continue
            deadline_at = waiting.entered_at + timedelta(seconds=deadline_s)
            if now < deadline_at:
                continue
            try:
                done = await asyncio.to_thread(
                    self.app.flag_overdue, order_id, waiting.stage, deadline_at
                )
            except OrderNotFound:
                done = False
            if done:
                waiting.flagged = True
                flagged.append(order_id)
                ORDERS_FLAGGED.labels(waiting.stage).inc()
                log.warning("order overdue", order_id=str(order_id), stage=waiting.stage)
        self._update_overdue_gauge()
        return flagged

    def _apply(self, event: Any) -> None:
        order_id = event.originator_id
        if isinstance(event, Order.Flagged):
            if (waiting := self.waiting.get(order_id)) and waiting.stage == event.stage:
                waiting.flagged = True
            return
        stage = _ENTERS.get(type(event))
        if stage is None:
            return
        previous = self.waiting.pop(order_id, None)
        if previous is not None:
            spent = (event.timestamp - previous.entered_at).total_seconds()
            STAGE_SECONDS.labels(previous.stage).observe(max(spent, 0.0))
        if stage in DEFAULT_DEADLINES_S:
            self.waiting[order_id] = _Waiting(str(stage), event.timestamp)

    def _update_overdue_gauge(self) -> None:
        counts = dict.fromkeys(self.deadlines_s, 0)
        for waiting in self.waiting.values():
            if waiting.flagged:
                counts[waiting.stage] = counts.get(waiting.stage, 0) + 1
        for stage, n in counts.items():
            ORDERS_OVERDUE.labels(stage).set(n)
