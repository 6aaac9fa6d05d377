"""SLA watch: no case waits silently past its deadline. Follows the case log, reports breaches.

Like `orders.deadlines.DeadlineWatch`: the case directory's table of pending deadlines is
caught up with the log each round (from its persisted position); every first-response or
resolution deadline that passed on the service clock without being met is recorded once as
`Case.SlaBreached` (published as CaseSlaBreached). Several replicas are safe: each claims
due deadlines with `SKIP LOCKED`, and a second report of the same breach would be a
version conflict or a no-op.

A round runs when the case log changed (a commit's notification, any replica), the next
deadline falls due, or the service clock moved (tests), at most every `interval_s` and at
least every `fallback_s`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import structlog
from prometheus_client import Counter

from customer_service.cases.application import CaseCommands, CaseNotFound
from fulfilment_kit.observability.health import Heartbeat
from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.persistence.follower import seconds_until
from fulfilment_kit.persistence.notifications import Wakeup, on_commit

log = structlog.get_logger(__name__)

CASE_SLA_BREACHES = Counter(
    "fulfil_case_sla_breaches_total",
    "Case deadlines (first response, resolution) that passed unmet",
    ["sla", "priority"],
    registry=REGISTRY,
)


@dataclass
class SlaWatch:
    app: CaseCommands
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    interval_s: float = 1.0
    on_breached: Callable[[], None] | None = None
    heartbeat: Heartbeat | None = None
    fallback_s: float = 10.0

    def __post_init__(self) -> None:
        self.next_due: datetime | None = None
        """After a round: the earliest pending deadline (the loop sleeps until it)."""
        self.wakeup = Wakeup()

    async def run(self) -> None:
        watch_clock = getattr(self.clock, "on_advance", None)
        if callable(watch_clock):
            watch_clock(self.wakeup.set)  # a moved clock may make deadlines due now
        async with on_commit(self.app.cases.app, self.wakeup.set):
            while True:
                wait = self.interval_s
                try:
                    breached = await self.tick()
                except Exception as exc:  # a bad round (database down) must not end the watch
                    log.warning("sla watch round failed", error=f"{type(exc).__name__}: {exc}")
                else:
                    wait = seconds_until(self.next_due, self.clock(), self.fallback_s)
                    if breached and self.on_breached is not None:
                        self.on_breached()
                if self.heartbeat is not None:
                    self.heartbeat.beat()
                await self.wakeup.wait(wait, spacing_s=self.interval_s)

    async def tick(self) -> list[tuple[UUID, str]]:
        """Catch up with the log and report every deadline passed; returns those reported."""
        return await asyncio.to_thread(self.step)

    def step(self) -> list[tuple[UUID, str]]:
        now = self.clock()
        reported: list[tuple[UUID, str]] = []
        self.app.cases.refresh()
        with self.app.cases.follower.claim_due("sla", now) as claim:
            for item in claim.items:
                case_id, sla = UUID(item.data["case_id"]), item.data["sla"]
                try:
                    done = self.app.breach_sla(case_id, sla, now)
                except CaseNotFound:
                    claim.done(item)
                    continue
                if not done:
                    continue  # met or changed meanwhile: the log tells, next round
                claim.done(item)
                priority = str(item.data.get("priority", "unknown"))
                CASE_SLA_BREACHES.labels(sla, priority).inc()
                log.warning("case sla breached", case_id=str(case_id), sla=sla, priority=priority)
                reported.append((case_id, sla))
        self.next_due = claim.next_due
        return reported
