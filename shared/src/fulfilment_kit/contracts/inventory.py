"""Public events of the inventory service (topic `fulfilment.inventory.v1`).

Keyed by order id; stock events not tied to an order (received, adjusted, low) by SKU.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.contracts.types import Quantity, ReasonText, Sku, StockCount

__all__ = [
    "StockAdjusted",
    "StockCommitted",
    "StockLine",
    "StockLocked",
    "StockLow",
    "StockReceived",
    "StockRejected",
    "StockReleased",
    "StockShortage",
]


class StockLine(BaseModel):
    """Units of one SKU reserved, released or committed for an order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    quantity: Quantity


class StockShortage(BaseModel):
    """A SKU that could not be reserved: how many were asked for and how many were available."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    requested: Quantity
    available: StockCount


_Lines = Annotated[list[StockLine], Field(min_length=1, max_length=100)]


class StockLocked(IntegrationEvent):
    """Every line of the order is reserved (all or nothing); payment may be captured."""

    ce_type: ClassVar[str] = "fulfilment.stock.locked.v1"
    topic: ClassVar[str] = topics.INVENTORY
    schema_version: ClassVar[int] = 1

    order_id: UUID
    lines: _Lines
    locked_at: AwareDatetime


class StockRejected(IntegrationEvent):
    """Some lines of the order could not be reserved; nothing was reserved."""

    ce_type: ClassVar[str] = "fulfilment.stock.rejected.v1"
    topic: ClassVar[str] = topics.INVENTORY
    schema_version: ClassVar[int] = 1

    order_id: UUID
    shortages: list[StockShortage] = Field(min_length=1, max_length=100)
    rejected_at: AwareDatetime


class StockReleased(IntegrationEvent):
    """The reservation of the order was given back to available stock."""

    ce_type: ClassVar[str] = "fulfilment.stock.released.v1"
    topic: ClassVar[str] = topics.INVENTORY
    schema_version: ClassVar[int] = 1

    order_id: UUID
    lines: _Lines
    reason: Literal["order_cancelled", "payment_failed", "expired"]
    released_at: AwareDatetime


class StockCommitted(IntegrationEvent):
    """The reserved units of the order left the warehouse (on shipment)."""

    ce_type: ClassVar[str] = "fulfilment.stock.committed.v1"
    topic: ClassVar[str] = topics.INVENTORY
    schema_version: ClassVar[int] = 1

    order_id: UUID
    lines: _Lines
    committed_at: AwareDatetime


class StockReceived(IntegrationEvent):
    """Units of a SKU came in: a purchase delivery, or a restock from a return of `order_id`."""

    ce_type: ClassVar[str] = "fulfilment.stock.received.v1"
    topic: ClassVar[str] = topics.INVENTORY
    schema_version: ClassVar[int] = 1
    subject_fields: ClassVar[tuple[str, ...]] = ("order_id", "sku")

    sku: Sku
    quantity: Quantity
    on_hand: StockCount
    source: Literal["purchase", "return"]
    order_id: UUID | None = None
    received_at: AwareDatetime


class StockAdjusted(IntegrationEvent):
    """On-hand stock of a SKU was corrected (count, damage, loss), with the reason."""

    ce_type: ClassVar[str] = "fulfilment.stock.adjusted.v1"
    topic: ClassVar[str] = topics.INVENTORY
    schema_version: ClassVar[int] = 1
    subject_fields: ClassVar[tuple[str, ...]] = ("sku",)

    sku: Sku
    delta: Annotated[int, Strict(), Field(ge=-(10**9), le=10**9)]
    on_hand: StockCount
    reason: ReasonText
    adjusted_at: AwareDatetime


class StockLow(IntegrationEvent):
    """Available stock of a SKU fell to or below its low-stock threshold."""

    ce_type: ClassVar[str] = "fulfilment.stock.low.v1"
    topic: ClassVar[str] = topics.INVENTORY
    schema_version: ClassVar[int] = 1
    subject_fields: ClassVar[tuple[str, ...]] = ("sku",)

    sku: Sku
    available: StockCount
    threshold: StockCount
    detected_at: AwareDatetime
