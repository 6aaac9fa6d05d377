"""Maps the inventory's private domain events to public integration events."""

from __future__ import annotations

from collections.abc import Sequence
from functools import singledispatch
from typing import Any

from fulfilment_kit.contracts import (
    IntegrationEvent,
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
from fulfilment_kit.messaging.relay import EventToPublish
from inventory.domain import Reservation, StockItem


@singledispatch
def to_public(domain_event: Any) -> Sequence[EventToPublish]:
    """Domain events not listed below stay private."""
    return ()


def _out(event: IntegrationEvent, domain_event: Any) -> Sequence[EventToPublish]:
    trace = domain_event.trace
    return (EventToPublish(event, trace.correlation_id, trace.causation_id),)


def _lines(e: Any) -> list[StockLine]:
    return [StockLine(sku=x.sku, quantity=x.quantity) for x in e.lines]


@to_public.register(Reservation.Locked)
def _locked(e: Any) -> Sequence[EventToPublish]:
    return _out(StockLocked(order_id=e.order_id, lines=_lines(e), locked_at=e.timestamp), e)


@to_public.register(Reservation.Rejected)
def _rejected(e: Any) -> Sequence[EventToPublish]:
    shortages = [
        StockShortage(sku=x.sku, requested=x.requested, available=x.available) for x in e.shortages
    ]
    event = StockRejected(order_id=e.order_id, shortages=shortages, rejected_at=e.timestamp)
    return _out(event, e)


@to_public.register(Reservation.Released)
def _released(e: Any) -> Sequence[EventToPublish]:
    event = StockReleased(
        order_id=e.order_id, lines=_lines(e), reason=e.reason, released_at=e.timestamp
    )
    return _out(event, e)


@to_public.register(Reservation.Committed)
def _committed(e: Any) -> Sequence[EventToPublish]:
    return _out(StockCommitted(order_id=e.order_id, lines=_lines(e), committed_at=e.timestamp), e)


@to_public.register(StockItem.Received)
def _received(e: Any) -> Sequence[EventToPublish]:
    event = StockReceived(
        sku=e.sku,
        quantity=e.quantity,
        on_hand=e.on_hand,
        source="purchase",
        received_at=e.timestamp,
    )
    return _out(event, e)


@to_public.register(StockItem.Restocked)
def _restocked(e: Any) -> Sequence[EventToPublish]:
    event = StockReceived(
        sku=e.sku,
        quantity=e.quantity,
        on_hand=e.on_hand,
        source="return",
        order_id=e.order_id,
        received_at=e.timestamp,
    )
    return _out(event, e)


@to_public.register(StockItem.Counted)
def _counted(e: Any) -> Sequence[EventToPublish]:
    event = StockAdjusted(
        sku=e.sku,
        delta=e.delta,
        on_hand=e.counted_on_hand,
        reason=e.reason,
        adjusted_at=e.timestamp,
    )
    return _out(event, e)


@to_public.register(StockItem.LowStockDetected)
def _low(e: Any) -> Sequence[EventToPublish]:
    event = StockLow(
        sku=e.sku, available=e.available, threshold=e.threshold, detected_at=e.timestamp
    )
    return _out(event, e)
