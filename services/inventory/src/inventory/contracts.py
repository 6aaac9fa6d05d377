"""Maps the inventory's private domain events to public integration events; the others stay
private."""

from __future__ import annotations

from typing import Any

from fulfilment_kit.contracts import (
    StockAdjusted,
    StockCommitted,
    StockLine,
    StockLocked,
    StockLow,
    StockReceived,
    StockRejected,
    StockReleased,
    StockShortage,
)
from fulfilment_kit.messaging.public import RECORDED_AT, PublicEvents
from inventory.domain import Reservation, StockItem

to_public = PublicEvents()


def _lines(e: Any) -> list[StockLine]:
    return [StockLine(sku=x.sku, quantity=x.quantity) for x in e.lines]


def _shortages(e: Any) -> list[StockShortage]:
    return [
        StockShortage(sku=x.sku, requested=x.requested, available=x.available) for x in e.shortages
    ]


to_public.copy(Reservation.Locked, StockLocked, "order_id", lines=_lines, locked_at=RECORDED_AT)
to_public.copy(
    Reservation.Rejected,
    StockRejected,
    "order_id",
    shortages=_shortages,
    rejected_at=RECORDED_AT,
)
to_public.copy(
    Reservation.Released,
    StockReleased,
    "order_id reason",
    lines=_lines,
    released_at=RECORDED_AT,
)
to_public.copy(
    Reservation.Committed, StockCommitted, "order_id", lines=_lines, committed_at=RECORDED_AT
)
to_public.copy(
    StockItem.Received,
    StockReceived,
    "sku quantity on_hand",
    source=lambda _: "purchase",
    received_at=RECORDED_AT,
)
to_public.copy(
    StockItem.Restocked,
    StockReceived,
    "sku quantity on_hand order_id",
    source=lambda _: "return",
    received_at=RECORDED_AT,
)
to_public.copy(
    StockItem.Counted,
    StockAdjusted,
    "sku delta reason",
    on_hand="counted_on_hand",
    adjusted_at=RECORDED_AT,
)
to_public.copy(
    StockItem.LowStockDetected,
    StockLow,
    "sku available threshold",
    detected_at=RECORDED_AT,
)
