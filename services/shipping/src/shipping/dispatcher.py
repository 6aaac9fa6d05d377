"""Auto-dispatch: ships packing shipments once they have been packing for a while.

The loop finds them by tailing this service's own notification log, the way the outbox
relay does: packing started adds a shipment to an in-memory set, shipped or cancelled
removes it. The set is rebuilt from the beginning of the log at process start, so no
state besides the event store is needed, and several replicas are safe (a second dispatch
of the same shipment is a version conflict, then a refusal, and the carrier booking is
idempotent per shipment).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from eventsourcing.utils import get_topic

from fulfilment_kit.observability.health import Heartbeat
from fulfilment_kit.persistence.follower import LogFollower
from fulfilment_kit.tracing import Trace
from shipping.application import (
    CarrierRefused,
    CarrierUnavailable,
    ConcurrentChange,
    ShipmentNotFound,
    ShippingApplication,
)
from shipping.domain import InvalidTransition, Shipment

log = structlog.get_logger(__name__)

WATCHED_TOPICS = tuple(
    get_topic(cls) for cls in (Shipment.PackingStarted, Shipment.Shipped, Shipment.Cancelled)
)


BATCH = 200  # shipments dispatched in one transaction


@dataclass(frozen=True)
class Packing:
    since: datetime
    correlation_id: str


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
    ) -> None:
        if after_s <= 0:
            raise ValueError("after_s must be greater than zero")
        self.app = app
        self.after = timedelta(seconds=after_s)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s or min(max(after_s / 4, 0.05), 1.0)
        self.on_dispatched = on_dispatched
        self.heartbeat = heartbeat
        self.log = LogFollower(app, topics=WATCHED_TOPICS, batch=batch_size)
        self.packing: dict[uuid.UUID, Packing] = {}

    # -- the log --------------------------------------------------------------------------

    def catch_up(self) -> None:
        """Read the notification log from where we left off to its current end."""
        for domain_event in self.log.read_sync():
            self.observe(domain_event)

    def observe(self, domain_event: Any) -> None:
        if isinstance(domain_event, Shipment.PackingStarted):
            self.packing[domain_event.originator_id] = Packing(
                domain_event.timestamp, domain_event.trace.correlation_id
            )
        elif isinstance(domain_event, Shipment.Shipped | Shipment.Cancelled):
            self.packing.pop(domain_event.originator_id, None)

    # -- dispatching ----------------------------------------------------------------------

    def due(self, now: datetime) -> list[uuid.UUID]:
        """Shipments packing for at least the delay, longest-waiting first."""
        ready = [(p.since, sid) for sid, p in self.packing.items() if now - p.since >= self.after]
        return [sid for _, sid in sorted(ready)]

    def dispatch_due(self) -> int:
        """Dispatch what is due; returns how many shipped. Failures wait for the next round."""
        due = self.due(self.clock())
        if len(due) > 1:
            batch = due[:BATCH]
            try:
                shipped_ids = self.app.dispatch_batch({sid: self._trace(sid) for sid in batch})
            except Exception as exc:  # one of them is not dispatchable: go one by one
                log.info("auto-dispatch: batch fell back to one by one", reason=str(exc))
            else:
                for shipment_id in shipped_ids:
                    self.packing.pop(shipment_id, None)
                return len(shipped_ids)
        return self._dispatch_one_by_one(due)

    def _trace(self, shipment_id: uuid.UUID) -> Trace:
        return Trace(
            correlation_id=self.packing[shipment_id].correlation_id,
            causation_id=f"auto-dispatch:{shipment_id}",
        )

    def _dispatch_one_by_one(self, due: list[uuid.UUID]) -> int:
        shipped = 0
        for shipment_id in due:
            try:
                self.app.dispatch_shipment(shipment_id, self._trace(shipment_id))
            except CarrierUnavailable as exc:
                log.warning("auto-dispatch: carrier unavailable, next round", error=str(exc))
                break  # do not hammer a carrier that is down
            except ConcurrentChange:
                continue
            except (InvalidTransition, ShipmentNotFound) as exc:
                log.info("auto-dispatch: not dispatchable", reason=str(exc))
                self.packing.pop(shipment_id, None)
            except CarrierRefused as exc:
                log.error(
                    "auto-dispatch: carrier refused, dispatch it by hand",
                    shipment_id=str(shipment_id),
                    error=str(exc),
                )
                self.packing.pop(shipment_id, None)
            else:
                self.packing.pop(shipment_id, None)
                shipped += 1
        return shipped

    def step(self) -> int:
        """One round: read the log, then dispatch what is due (blocking; run in a thread)."""
        self.catch_up()
        return self.dispatch_due()

    async def run(self) -> None:
        """Rounds until cancelled; an error (e.g. the database down) waits for the next one."""
        log.info("auto-dispatch started", after_s=self.after.total_seconds())
        while True:
            try:
                shipped = await asyncio.to_thread(self.step)
            except Exception as exc:
                log.warning("auto-dispatch round failed", error=f"{type(exc).__name__}: {exc}")
            else:
                if shipped and self.on_dispatched is not None:
                    self.on_dispatched()
            if self.heartbeat is not None:
                self.heartbeat.beat()
            await asyncio.sleep(self.poll_interval_s)
