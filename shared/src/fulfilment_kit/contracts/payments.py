"""Public events of the payments service (topic `fulfilment.payments.v1`, keyed by order id)."""

from __future__ import annotations

from typing import ClassVar, Literal, Self
from uuid import UUID

from pydantic import AwareDatetime, Field, model_validator

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.contracts.types import CurrencyCode, PositiveMinorAmount

__all__ = [
    "PaymentCaptured",
    "PaymentFailed",
    "PaymentFailureCode",
    "PaymentRefunded",
    "PaymentUnresolved",
]

PaymentFailureCode = Literal[
    "card_declined",
    "insufficient_funds",
    "expired_card",
    "fraud_suspected",
    "provider_unavailable",
    "timeout",
]


class PaymentCaptured(IntegrationEvent):
    """The order total was captured: the order is paid."""

    ce_type: ClassVar[str] = "fulfilment.payment.captured.v1"
    topic: ClassVar[str] = topics.PAYMENTS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    payment_id: UUID
    amount_minor: PositiveMinorAmount
    currency: CurrencyCode
    captured_at: AwareDatetime


class PaymentFailed(IntegrationEvent):
    """The payment could not be captured; stock is released and the order cancelled."""

    ce_type: ClassVar[str] = "fulfilment.payment.failed.v1"
    topic: ClassVar[str] = topics.PAYMENTS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    payment_id: UUID
    reason_code: PaymentFailureCode
    amount_minor: PositiveMinorAmount
    currency: CurrencyCode
    failed_at: AwareDatetime


class PaymentRefunded(IntegrationEvent):
    """Money went back to the customer: part of the captured amount, or all of it."""

    ce_type: ClassVar[str] = "fulfilment.payment.refunded.v1"
    topic: ClassVar[str] = topics.PAYMENTS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    payment_id: UUID
    refund_id: UUID
    refund_minor: PositiveMinorAmount
    total_refunded_minor: PositiveMinorAmount
    currency: CurrencyCode
    full_refund: bool
    reason: Literal["order_cancelled", "return_received", "goodwill"]
    refunded_at: AwareDatetime

    @model_validator(mode="after")
    def _refund_within_total(self) -> Self:
        if self.refund_minor > self.total_refunded_minor:
            raise ValueError("refund_minor cannot exceed total_refunded_minor")
        return self


class PaymentUnresolved(IntegrationEvent):
    """The provider's answer to a capture stayed unclear past the deadline (a timeout, a lost
    response, 5xx): the card may or may not have been charged. Nothing is cancelled;
    reconciliation goes on and customer service opens a payment-problem case."""

    ce_type: ClassVar[str] = "fulfilment.payment.unresolved.v1"
    topic: ClassVar[str] = topics.PAYMENTS
    schema_version: ClassVar[int] = 1

    order_id: UUID
    payment_id: UUID
    amount_minor: PositiveMinorAmount
    currency: CurrencyCode
    unknown_since: AwareDatetime
    lookups: int = Field(ge=0)
    """How many times the provider was asked so far."""
    flagged_at: AwareDatetime
