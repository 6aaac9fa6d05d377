"""Public events of the customer-service service (topic `fulfilment.customer-service.v1`).

Return events are keyed by order id. Case events are keyed by order id when the case is
about an order, else by case id; their subject is the case id. Every event of one case
repeats its `order_id` so that they share one key and stay ordered.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.contracts.types import (
    CurrencyCode,
    MinorAmount,
    Quantity,
    ReasonText,
    RmaNumber,
    Sku,
)

__all__ = [
    "CaseKind",
    "CaseOpened",
    "CasePriority",
    "CaseResolved",
    "CaseSlaBreached",
    "InspectedLine",
    "ReturnAuthorised",
    "ReturnLine",
    "ReturnReasonCode",
    "ReturnReceived",
    "ReturnRejected",
    "ReturnRequested",
]

CaseKind = Literal[
    "inquiry", "complaint", "after_sales", "delivery_exception", "payment_problem", "stuck_order"
]
CasePriority = Literal["low", "normal", "high", "urgent"]
ReturnReasonCode = Literal["damaged", "wrong_item", "not_as_described", "changed_mind", "other"]
"""Why the customer sends units back; the first three are the shop's fault."""


class ReturnLine(BaseModel):
    """Units of one SKU the customer wants to send back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    quantity: Quantity


class InspectedLine(BaseModel):
    """Units of one SKU received back, and whether they can be sold again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    quantity: Quantity
    result: Literal["restockable", "damaged"]


class ReturnRequested(IntegrationEvent):
    """The customer asked to return some units of a delivered order."""

    ce_type: ClassVar[str] = "fulfilment.return.requested.v1"
    topic: ClassVar[str] = topics.CUSTOMER_SERVICE
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    return_id: UUID
    lines: list[ReturnLine] = Field(min_length=1, max_length=100)
    reason: ReasonText
    requested_at: AwareDatetime
    reason_code: ReturnReasonCode | None = None
    """The classified reason (absent in events recorded before it existed)."""


class ReturnAuthorised(IntegrationEvent):
    """The return was accepted under an RMA number; the customer may send the parcel."""

    ce_type: ClassVar[str] = "fulfilment.return.authorised.v1"
    topic: ClassVar[str] = topics.CUSTOMER_SERVICE
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    return_id: UUID
    rma_number: RmaNumber
    authorised_at: AwareDatetime


class ReturnRejected(IntegrationEvent):
    """The return request was refused, with the reason (terminal for the request)."""

    ce_type: ClassVar[str] = "fulfilment.return.rejected.v1"
    topic: ClassVar[str] = topics.CUSTOMER_SERVICE
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    return_id: UUID
    reason: ReasonText
    rejected_at: AwareDatetime


class ReturnReceived(IntegrationEvent):
    """The returned parcel arrived and was inspected; restockable units go back to stock.

    `refund_minor` is what payments refunds for this return (zero if nothing is refundable).
    """

    ce_type: ClassVar[str] = "fulfilment.return.received.v1"
    topic: ClassVar[str] = topics.CUSTOMER_SERVICE
    schema_version: ClassVar[int] = 1

    order_id: UUID
    customer_id: UUID
    return_id: UUID
    rma_number: RmaNumber
    lines: list[InspectedLine] = Field(min_length=1, max_length=100)
    refund_minor: MinorAmount
    currency: CurrencyCode
    received_at: AwareDatetime


class CaseOpened(IntegrationEvent):
    """A support case was opened, with its response and resolution deadlines."""

    ce_type: ClassVar[str] = "fulfilment.case.opened.v1"
    topic: ClassVar[str] = topics.CUSTOMER_SERVICE
    schema_version: ClassVar[int] = 1
    subject_fields: ClassVar[tuple[str, ...]] = ("case_id",)

    case_id: UUID
    order_id: UUID | None = None
    customer_id: UUID | None = None
    kind: CaseKind
    priority: CasePriority
    summary: ReasonText
    opened_at: AwareDatetime
    first_response_due_at: AwareDatetime
    resolution_due_at: AwareDatetime


class CaseResolved(IntegrationEvent):
    """The case was closed with an outcome."""

    ce_type: ClassVar[str] = "fulfilment.case.resolved.v1"
    topic: ClassVar[str] = topics.CUSTOMER_SERVICE
    schema_version: ClassVar[int] = 1
    subject_fields: ClassVar[tuple[str, ...]] = ("case_id",)

    case_id: UUID
    order_id: UUID | None = None
    customer_id: UUID | None = None
    outcome: Literal["answered", "refunded", "replaced", "no_action", "duplicate"]
    note: ReasonText | None = None
    resolved_at: AwareDatetime


class CaseSlaBreached(IntegrationEvent):
    """A case missed its first-response or resolution deadline."""

    ce_type: ClassVar[str] = "fulfilment.case.sla_breached.v1"
    topic: ClassVar[str] = topics.CUSTOMER_SERVICE
    schema_version: ClassVar[int] = 1
    subject_fields: ClassVar[tuple[str, ...]] = ("case_id",)

    case_id: UUID
    order_id: UUID | None = None
    customer_id: UUID | None = None
    kind: CaseKind
    priority: CasePriority
    sla: Literal["first_response", "resolution"]
    due_at: AwareDatetime
    breached_at: AwareDatetime
