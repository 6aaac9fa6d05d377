"""Public events of the shipping service (topic `fulfilment.shipping.v1`, keyed by order id)."""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import AwareDatetime

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.contracts.types import CarrierName, ReasonText, TrackingNumber

__all__ = [
    "ShipmentCancellationRefused",
    "ShipmentCancelled",
    "ShipmentDelivered",
    "ShipmentException",
    "ShipmentExceptionCode",
    "ShipmentShipped",
]

ShipmentExceptionCode = Literal[
    "address_not_found",
    "recipient_absent",
    "refused",
    "damaged_in_transit",
    "lost",
    "carrier_delay",
]


class ShipmentShipped(IntegrationEvent):
    """The parcel was handed to the carrier; reserved stock is committed."""

    ce_type: ClassVar[str] = "fulfilment.shipment.shipped.v1"
    topic: ClassVar[str] = topics.SHIPPING
    schema_version: ClassVar[int] = 1

    order_id: UUID
    shipment_id: UUID
    carrier: CarrierName
    tracking_number: TrackingNumber
    shipped_at: AwareDatetime


class ShipmentDelivered(IntegrationEvent):
    """The carrier delivered the parcel."""

    ce_type: ClassVar[str] = "fulfilment.shipment.delivered.v1"
    topic: ClassVar[str] = topics.SHIPPING
    schema_version: ClassVar[int] = 1

    order_id: UUID
    shipment_id: UUID
    delivered_at: AwareDatetime


class ShipmentException(IntegrationEvent):
    """The carrier reported a delivery problem; customer service opens a case."""

    ce_type: ClassVar[str] = "fulfilment.shipment.exception.v1"
    topic: ClassVar[str] = topics.SHIPPING
    schema_version: ClassVar[int] = 1

    order_id: UUID
    shipment_id: UUID
    reason_code: ShipmentExceptionCode
    reason: ReasonText
    occurred_at: AwareDatetime


class ShipmentCancelled(IntegrationEvent):
    """Shipping held the parcel: it never left and never will (the order's cancellation is
    confirmed). Payments refunds what was captured, inventory releases the reservation."""

    ce_type: ClassVar[str] = "fulfilment.shipment.cancelled.v1"
    topic: ClassVar[str] = topics.SHIPPING
    schema_version: ClassVar[int] = 1

    order_id: UUID
    shipment_id: UUID
    cancelled_at: AwareDatetime


class ShipmentCancellationRefused(IntegrationEvent):
    """The parcel had already left when the cancellation request arrived: the order stays on
    its shipping path (the customer may return it). Nothing is refunded or released."""

    ce_type: ClassVar[str] = "fulfilment.shipment.cancellation_refused.v1"
    topic: ClassVar[str] = topics.SHIPPING
    schema_version: ClassVar[int] = 1

    order_id: UUID
    shipment_id: UUID
    status: Literal["shipped", "in_transit", "delivered", "exception"]
    refused_at: AwareDatetime
