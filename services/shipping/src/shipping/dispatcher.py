"""Auto-dispatch: ships packing shipments once they have been packing for a while.

The loop finds them by following this service's own notification log with the kit's
`LogFollower`: packing started adds a row (due `after_s` later) to the follower's table,
shipped or cancelled removes it. The follower's position is persisted with the rows, so a
restart reads only the new events. Several replicas are safe: each claims due rows with
`SKIP LOCKED`, so a shipment is dispatched by one of them (and should two ever race, the
second is a version conflict, then a refusal; the carrier booking is idempotent per
shipment).

The loop sleeps until the next shipment falls due, or until the shipping log changes (a
commit's notification from any replica: a shipment started packing), at most every
`poll_interval_s` and at least every `fallback_s`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from eventsourcing.utils import get_topic

from fulfilment_kit.commands import ConcurrentUpdate
from fulfilment_kit.observability.health import Heartbeat
from fulfilment_kit.persistence.follower import Claim, Item, LogFollower, Writes, seconds_until
from fulfilment_kit.persistence.notifications import Wakeup, on_commit
from fulfilment_kit.tracing import Trace, event_trace
from shipping.application import (
    CarrierRefused,
    CarrierUnavailable,
    ShipmentNotFound,
    ShippingApplication,
)
from shipping.domain import InvalidTransition, Shipment

log = structlog.get_logger(__name__)

WATCHED_TOPICS = tuple(
    get_topic(cls) for cls in (Shipment.PackingStarted, Shipment.Shipped, Shipment.Cancelled)
)
ENDED_TOPICS = frozenset(get_topic(cls) for cls in (Shipment.Shipped, Shipment.Cancelled))
"""Events that end a shipment's packing: the dispatcher needs only their shipment's id
(handed over undecoded)."""


BATCH = 200  # shipments dispatched in one transaction


@dataclass(frozen=True)
class Packing:
    since: datetime
    correlation_id: str


FOLLOWER = "shipping-auto-dispatch"


class AutoDispatcher:
    """Dispatches every shipment that has been packing for at least `after_s` seconds."""

    def __init__(
        self,
        app: ShippingApplication,
        *,
        after_s: float,
        clock: Callable[[], datetime] | None = None,
        batch_size: int = 500,
        poll_interval_s: float | None = None,
        on_dispatched: Callable[[], None] | None = None,
        heartbeat: Heartbeat | None = None,
        fallback_s: float = 10.0,
    ) -> None:
        if after_s <= 0:
            raise ValueError("after_s must be greater than zero")
        self.app = app
        self.after = timedelta(seconds=after_s)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s or min(max(after_s / 4, 0.05), 1.0)
        """Least time between two rounds (a burst of commits makes one round)."""
        self.fallback_s = fallback_s
        """Longest sleep: the poll behind the notifications and the due times."""
        self.next_due: datetime | None = None
        """After a round: when the next packing shipment falls due (None: none packing)."""
        self.wakeup = Wakeup()
        self.on_dispatched = on_dispatched
        self.heartbeat = heartbeat
        self.log = LogFollower(
            app,
            FOLLOWER,
            self._project,
            topics=WATCHED_TOPICS,
            undecoded=ENDED_TOPICS,
            batch=batch_size,
        )

    # -- the log --------------------------------------------------------------------------

    def catch_up(self) -> None:
        """Follow the notification log from the stored position to its current end."""
        self.log.catch_up()

    def _project(self, events: Sequence[Any], writes: Writes) -> None:
        for domain_event in events:
            key = str(domain_event.originator_id)
            if isinstance(domain_event, Shipment.PackingStarted):
                writes.put(
                    "packing",
                    key,
                    due_at=domain_event.timestamp + self.after,
                    since=domain_event.timestamp.isoformat(),
                    correlation_id=event_trace(domain_event).correlation_id,
                )
            else:  # shipped or cancelled
                writes.drop("packing", key)

    @property
    def packing(self) -> dict[uuid.UUID, Packing]:
        """The shipments packing, as last read from the log."""
        return {uuid.UUID(item.key): _packing(item) for item in self.log.items("packing")}

    # -- dispatching ----------------------------------------------------------------------

    def due(self, now: datetime) -> list[uuid.UUID]:
        """Shipments packing for at least the delay, longest-waiting first."""
        return [uuid.UUID(item.key) for item in self.log.due("packing", now)]

    def dispatch_due(self) -> int:
        """Dispatch what is due; returns how many shipped. Failures wait for the next round."""
        shipped = 0
        while True:
            with self.log.claim_due("packing", self.clock(), limit=BATCH) as claim:
                if claim.items:
                    done, go_on = self._dispatch(claim)
            self.next_due = claim.next_due
            if not claim.items:
                return shipped
            shipped += done
            if not go_on or len(claim.items) < BATCH:
                return shipped

    def _dispatch(self, claim: Claim) -> tuple[int, bool]:
        """Dispatch the claimed shipments: (how many shipped, whether to claim more)."""
        if len(claim.items) > 1:
            traces = {uuid.UUID(item.key): _trace(item) for item in claim.items}
            try:
                shipped_ids = set(self.app.dispatch_batch(traces))
            except Exception as exc:  # one of them is not dispatchable: go one by one
                log.info("auto-dispatch: batch fell back to one by one", reason=str(exc))
            else:
                for item in claim.items:
                    if uuid.UUID(item.key) in shipped_ids:
                        claim.done(item)
                return len(shipped_ids), True
        return self._dispatch_one_by_one(claim)

    def _dispatch_one_by_one(self, claim: Claim) -> tuple[int, bool]:
        shipped = 0
        for item in claim.items:
            shipment_id = uuid.UUID(item.key)
            try:
                self.app.dispatch_shipment(shipment_id, _trace(item))
            except CarrierUnavailable as exc:
                log.warning("auto-dispatch: carrier unavailable, next round", error=str(exc))
                return shipped, False  # do not hammer a carrier that is down
            except ConcurrentUpdate:
                continue
            except (InvalidTransition, ShipmentNotFound) as exc:
                log.info("auto-dispatch: not dispatchable", reason=str(exc))
                claim.done(item)
            except CarrierRefused as exc:
                log.error(
                    "auto-dispatch: carrier refused, dispatch it by hand",
                    shipment_id=str(shipment_id),
                    error=str(exc),
                )
                claim.done(item)
            else:
                claim.done(item)
                shipped += 1
        return shipped, True

    def step(self) -> int:
        """One round: read the log, then dispatch what is due (blocking; run in a thread)."""
        self.catch_up()
        return self.dispatch_due()

    async def run(self) -> None:
        """Rounds until cancelled; an error (e.g. the database down) waits for the next one."""
        log.info("auto-dispatch started", after_s=self.after.total_seconds())
        async with on_commit(self.app, self.wakeup.set):
            while True:
                wait = self.poll_interval_s
                try:
                    shipped = await asyncio.to_thread(self.step)
                except Exception as exc:
                    log.warning("auto-dispatch round failed", error=f"{type(exc).__name__}: {exc}")
                else:
                    wait = seconds_until(self.next_due, self.clock(), self.fallback_s)
                    if shipped and self.on_dispatched is not None:
                        self.on_dispatched()
                if self.heartbeat is not None:
                    self.heartbeat.beat()
                await self.wakeup.wait(wait, spacing_s=self.poll_interval_s)


def _packing(item: Item) -> Packing:
    return Packing(datetime.fromisoformat(item.data["since"]), item.data["correlation_id"])


def _trace(item: Item) -> Trace:
    return Trace(
        correlation_id=item.data["correlation_id"], causation_id=f"auto-dispatch:{item.key}"
    )
