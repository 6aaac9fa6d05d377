"""A tiny consumer for testing the inbox: counts, per order, the order-placed records it applied.

Its effect is deliberately not idempotent (a counter), so a record applied twice would show.
"""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate, event

from fulfilment_kit.contracts import OrderPlaced
from fulfilment_kit.messaging.inbox import InboundMessage, InboxApplication

POISON_SKU = "POISON"


class Tally(Aggregate):
    @event("Started")
    def __init__(self, id: UUID) -> None:
        self.count = 0

    @event("Counted")
    def count_one(self) -> None:
        self.count += 1


def tally_id(order_id: UUID) -> UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"tally:{order_id}")


class TallyApplication(InboxApplication):
    name = "tally"

    def handle(self, message: InboundMessage, processing: ProcessingEvent[UUID]) -> None:
        placed: Any = message.envelope.event
        if not isinstance(placed, OrderPlaced):
            return
        if any(line.sku == POISON_SKU for line in placed.lines):
            raise RuntimeError("this consumer cannot handle POISON lines")
        tid = tally_id(placed.order_id)
        tally = self.get_for_update(processing, tid, Tally) or Tally(id=tid)
        tally.count_one()
        processing.collect_events(tally)

    def count(self, order_id: UUID) -> int:
        try:
            tally = self.repository.get(tally_id(order_id))
        except Exception:
            return 0
        return int(tally.count)
