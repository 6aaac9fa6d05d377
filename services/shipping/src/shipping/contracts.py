"""Maps the Shipment's private domain events to public integration events."""

from __future__ import annotations

from collections.abc import Sequence
from functools import singledispatch
from typing import Any

from fulfilment_kit.contracts import (
    ShipmentCancellationRefused,
    ShipmentCancelled,
    ShipmentDelivered,
    ShipmentException,
    ShipmentShipped,
)
from fulfilment_kit.messaging.relay import EventToPublish
from shipping.domain import Shipment


@singledispatch
def to_public(domain_event: Any) -> Sequence[EventToPublish]:
    """Domain events not listed below (created, packing, in transit, ...) stay private."""
    return ()


@to_public.register(Shipment.Shipped)
def _shipped(e: Any) -> Sequence[EventToPublish]:
    shipped = ShipmentShipped(
        order_id=e.order_id,
        shipment_id=e.originator_id,
        carrier=e.carrier,
        tracking_number=e.tracking_number,
        shipped_at=e.shipped_at,
    )
    return (EventToPublish(shipped, e.trace.correlation_id, e.trace.causation_id),)


@to_public.register(Shipment.Delivered)
def _delivered(e: Any) -> Sequence[EventToPublish]:
    delivered = ShipmentDelivered(
        order_id=e.order_id, shipment_id=e.originator_id, delivered_at=e.delivered_at
    )
    return (EventToPublish(delivered, e.trace.correlation_id, e.trace.causation_id),)


@to_public.register(Shipment.ExceptionReported)
def _exception(e: Any) -> Sequence[EventToPublish]:
    problem = ShipmentException(
        order_id=e.order_id,
        shipment_id=e.originator_id,
        reason_code=e.reason_code,
        reason=e.reason,
        occurred_at=e.occurred_at,
    )
    return (EventToPublish(problem, e.trace.correlation_id, e.trace.causation_id),)


@to_public.register(Shipment.Cancelled)
def _cancelled(e: Any) -> Sequence[EventToPublish]:
    if e.order_id is None:
        return ()  # recorded before the cancellation protocol: it stays private
    held = ShipmentCancelled(
        order_id=e.order_id, shipment_id=e.originator_id, cancelled_at=e.timestamp
    )
    return (EventToPublish(held, e.trace.correlation_id, e.trace.causation_id),)


@to_public.register(Shipment.CancellationRefused)
def _cancellation_refused(e: Any) -> Sequence[EventToPublish]:
    refused = ShipmentCancellationRefused(
        order_id=e.order_id, shipment_id=e.originator_id, status=e.status, refused_at=e.timestamp
    )
    return (EventToPublish(refused, e.trace.correlation_id, e.trace.causation_id),)
