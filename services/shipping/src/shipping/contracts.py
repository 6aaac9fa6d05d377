"""Maps the Shipment's private domain events to public integration events; the others
(created, packing, in transit, ...) stay private."""

from __future__ import annotations

from fulfilment_kit.contracts import (
    ShipmentCancellationRefused,
    ShipmentCancelled,
    ShipmentDelivered,
    ShipmentException,
    ShipmentShipped,
)
from fulfilment_kit.messaging.public import AGGREGATE_ID, RECORDED_AT, PublicEvents
from shipping.domain import Shipment

to_public = PublicEvents()
to_public.copy(
    Shipment.Shipped,
    ShipmentShipped,
    "order_id carrier tracking_number shipped_at",
    shipment_id=AGGREGATE_ID,
)
to_public.copy(
    Shipment.Delivered, ShipmentDelivered, "order_id delivered_at", shipment_id=AGGREGATE_ID
)
to_public.copy(
    Shipment.ExceptionReported,
    ShipmentException,
    "order_id reason_code reason occurred_at",
    shipment_id=AGGREGATE_ID,
)
to_public.copy(
    Shipment.Cancelled,
    ShipmentCancelled,
    "order_id",
    # recorded before the cancellation protocol (no order id): it stays private
    when=lambda e: e.order_id is not None,
    shipment_id=AGGREGATE_ID,
    cancelled_at=RECORDED_AT,
)
to_public.copy(
    Shipment.CancellationRefused,
    ShipmentCancellationRefused,
    "order_id status",
    shipment_id=AGGREGATE_ID,
    refused_at=RECORDED_AT,
)
