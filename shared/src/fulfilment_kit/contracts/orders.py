"""Public events of the orders service (topic `fulfilment.orders.v1`, keyed by order id)."""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.contracts.types import (
    CarrierName,
    CountryCode,
    CurrencyCode,
    MinorAmount,
    PaymentToken,
    PositiveMinorAmount,
    Quantity,
    ReasonText,
    Sku,
    TrackingNumber,
)

__all__ = [
    "CustomerErased",
    "OrderCancellationRequested",
    "OrderCancelled",
    "OrderDelivered",
    "OrderFlagged",
    "OrderLine",
    "OrderPaid",
    "OrderPartiallyReturned",
    "OrderPlaced",
    "OrderRejected",
    "OrderReturned",
    "OrderShipped",
    "OrderStage",
    "OrderStockLocked",
    "ReturnedLine",
    "ShippingAddress",
]

SEALED_MAX = 1000
"""Room for a sealed value of a 200-character field (base64 of nonce, text and tag, plus ids)."""

OrderStage = Literal["placed", "stock_locked", "paid", "shipped", "return_requested"]
"""A non-terminal order status that has a deadline."""


class OrderLine(BaseModel):
    """One line of an order: a SKU, how many, and the unit price in the order currency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    quantity: Quantity
    unit_price_minor: PositiveMinorAmount


class ShippingAddress(BaseModel):
    """Where the order is delivered.

    Every field but the country is personal data, sealed with the customer's data key
    (`pii1:contact:...`, see `fulfilment_kit.privacy`): only services holding the key store
    read it, and after the customer's erasure nobody does. Records from before sealing carry
    plaintext (at most the old lengths)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipient_name: str = Field(min_length=1, max_length=SEALED_MAX)
    line1: str = Field(min_length=1, max_length=SEALED_MAX)
    line2: str | None = Field(default=None, max_length=SEALED_MAX)
    city: str = Field(min_length=1, max_length=SEALED_MAX)
    postal_code: str = Field(min_length=1, max_length=SEALED_MAX)
    country_code: CountryCode
    phone: str | None = Field(default=None, max_length=SEALED_MAX)
    """For the carrier's delivery notice (sealed)."""
    email: str | None = Field(default=None, max_length=SEALED_MAX)
    """For the carrier's delivery notice (sealed)."""


class ReturnedLine(BaseModel):
    """Units of one SKU that came back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    quantity: Quantity


class OrderPlaced(IntegrationEvent):
    """A customer placed an order; inventory tries to lock stock for all its lines."""

    ce_type: ClassVar[str] = "fulfilment.order.placed.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    lines: list[OrderLine] = Field(min_length=1, max_length=100)
    currency: CurrencyCode
    total_minor: MinorAmount
    shipping_address: ShippingAddress
    placed_at: AwareDatetime
    payment_token: PaymentToken | None = None
    """Records from before sealing only: the provider token in clear. Now always absent."""
    payment_method: str | None = Field(default=None, max_length=64)
    """A reference to the payment method of this order (not the token; nothing personal)."""
    sealed_payment_token: str | None = Field(default=None, max_length=SEALED_MAX)
    """The provider token sealed for payments only (`pii1:payment:...`); payments opens it
    through the kit to capture."""


class OrderCancellationRequested(IntegrationEvent):
    """The customer asked to cancel a paid order; shipping answers (held or refused).

    Nothing moves yet: shipping publishes `ShipmentCancelled` when it held the parcel (then
    payments refunds, inventory releases, the order is cancelled) or
    `ShipmentCancellationRefused` when the parcel had already left (the order goes on)."""

    ce_type: ClassVar[str] = "fulfilment.order.cancellation_requested.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    requested_by: Literal["customer", "operator"]
    reason: ReasonText
    requested_at: AwareDatetime


class OrderCancelled(IntegrationEvent):
    """The order was cancelled before shipment; stock is released and any payment refunded.

    A paid order is cancelled only after shipping held its parcel (`ShipmentCancelled`)."""

    ce_type: ClassVar[str] = "fulfilment.order.cancelled.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    cancelled_by: Literal["customer", "system", "operator"]
    reason: ReasonText
    cancelled_at: AwareDatetime


class OrderRejected(IntegrationEvent):
    """The order could not be accepted (terminal), e.g. some lines were out of stock."""

    ce_type: ClassVar[str] = "fulfilment.order.rejected.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    reason_code: Literal["out_of_stock", "invalid_order"]
    reason: ReasonText
    rejected_at: AwareDatetime


class OrderStockLocked(IntegrationEvent):
    """Stock for every line is reserved; the order awaits payment."""

    ce_type: ClassVar[str] = "fulfilment.order.stock_locked.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    locked_at: AwareDatetime


class OrderPaid(IntegrationEvent):
    """Payment for the order was captured; the order awaits shipment."""

    ce_type: ClassVar[str] = "fulfilment.order.paid.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    amount_minor: PositiveMinorAmount
    currency: CurrencyCode
    paid_at: AwareDatetime


class OrderShipped(IntegrationEvent):
    """The order left the warehouse with a carrier."""

    ce_type: ClassVar[str] = "fulfilment.order.shipped.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    carrier: CarrierName
    tracking_number: TrackingNumber
    shipped_at: AwareDatetime


class OrderDelivered(IntegrationEvent):
    """The order reached the customer."""

    ce_type: ClassVar[str] = "fulfilment.order.delivered.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    delivered_at: AwareDatetime


class OrderPartiallyReturned(IntegrationEvent):
    """Some, not all, units of a delivered order came back and were refunded."""

    ce_type: ClassVar[str] = "fulfilment.order.partially_returned.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    lines: list[ReturnedLine] = Field(min_length=1, max_length=100)
    refund_minor: MinorAmount
    currency: CurrencyCode
    returned_at: AwareDatetime


class OrderReturned(IntegrationEvent):
    """Every unit of the order came back and was refunded (terminal)."""

    ce_type: ClassVar[str] = "fulfilment.order.returned.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    lines: list[ReturnedLine] = Field(min_length=1, max_length=100)
    refund_minor: MinorAmount
    currency: CurrencyCode
    returned_at: AwareDatetime


class OrderFlagged(IntegrationEvent):
    """The order stayed in one stage past its deadline (stuck); customer service opens a case."""

    ce_type: ClassVar[str] = "fulfilment.order.flagged.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    stage: OrderStage
    stage_entered_at: AwareDatetime
    deadline_at: AwareDatetime
    flagged_at: AwareDatetime


class CustomerErased(IntegrationEvent):
    """A customer's personal data was erased (crypto-shredding): their data key is destroyed,
    so every sealed value of theirs, on any topic or in any store, reads as `[erased]` from now
    on. Read models drop what they show of the customer; orders, money and stock stay."""

    ce_type: ClassVar[str] = "fulfilment.customer.erased.v1"
    topic: ClassVar[str] = topics.ORDERS
    schema_version: ClassVar[int] = 1
    subject_fields: ClassVar[tuple[str, ...]] = ("customer_id",)

    customer_id: UUID
    erased_at: AwareDatetime
