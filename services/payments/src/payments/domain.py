"""The Payment aggregate: one per order. Pure domain: no I/O, no frameworks, no clocks.

A payment is opened by whichever of "order placed" and "stock locked" arrives first. Once
both have arrived it is captured or it fails, exactly once. Captured money can be refunded,
in parts, but never more than was captured. A payment cancelled (order cancelled) or voided
(stock rejected) before capture is never captured afterwards.

The payment token is stored (the capture may happen long after the order was placed) but it
is never part of a public event, a view, or a log line.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from fulfilment_kit.tracing import Trace

# Namespace of the deterministic ids of payments (one per order) and refunds.
PAYMENTS_NAMESPACE = uuid.UUID("3a5e2c1d-7b4f-4e9a-8c6d-1f2e3d4c5b6a")


def payment_id_for(order_id: UUID) -> UUID:
    """The one payment of an order: a second "create" for the same order is a version clash."""
    return uuid.uuid5(PAYMENTS_NAMESPACE, f"payment:{order_id}")


def refund_id_for(cause: str) -> UUID:
    """A refund's id from what caused it (a message ce_id, an HTTP Idempotency-Key, a return
    id as `return:<id>`, ...)."""
    return uuid.uuid5(PAYMENTS_NAMESPACE, f"refund:{cause}")


class PaymentStatus(StrEnum):
    AWAITING_ORDER = "awaiting_order"
    AWAITING_STOCK = "awaiting_stock"
    AUTHORISING = "authorising"
    """Order and stock are both known; never stored, because the same transaction settles it."""
    CAPTURED = "captured"
    FAILED = "failed"
    CANCELLED = "cancelled"
    VOIDED = "voided"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"


class PaymentError(ValueError):
    """A command that would break an invariant of the payment."""


class NotCapturable(PaymentError):
    pass


class NotRefundable(PaymentError):
    pass


class RefundExceedsCapture(NotRefundable):
    def __init__(self, requested_minor: int, refundable_minor: int, currency: str) -> None:
        super().__init__(
            f"a refund of {requested_minor} {currency} minor units exceeds what is refundable: "
            f"{refundable_minor} {currency} minor units"
        )
        self.requested_minor = requested_minor
        self.refundable_minor = refundable_minor


@dataclass(frozen=True)
class Refund:
    refund_id: UUID
    amount_minor: int
    reason: str
    provider_reference: str
    refunded_at: datetime


class Payment(Aggregate):
    """The money side of one order."""

    class Opened(Aggregate.Created):
        order_id: UUID
        trace: Trace

    class OrderNoted(Aggregate.Event):
        amount_minor: int
        currency: str
        payment_token: str | None
        trace: Trace

    class StockNoted(Aggregate.Event):
        trace: Trace

    class Captured(Aggregate.Event):
        order_id: UUID
        amount_minor: int
        currency: str
        provider_reference: str
        trace: Trace

    class Failed(Aggregate.Event):
        order_id: UUID
        amount_minor: int
        currency: str
        reason_code: str
        trace: Trace

    class Cancelled(Aggregate.Event):
        trace: Trace

    class Voided(Aggregate.Event):
        trace: Trace

    class Refunded(Aggregate.Event):
        order_id: UUID
        refund_id: UUID
        amount_minor: int
        currency: str
        reason: str
        provider_reference: str
        refunded_at: datetime
        total_refunded_minor: int
        full_refund: bool
        trace: Trace

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def open(cls, *, order_id: UUID, trace: Trace) -> Payment:
        return cls(id=payment_id_for(order_id), order_id=order_id, trace=trace)

    @event(Opened)
    def __init__(self, id: UUID, order_id: UUID, trace: Trace) -> None:
        self.order_id = order_id
        self.amount_minor: int | None = None
        self.currency: str | None = None
        self.payment_token: str | None = None
        self.order_known = False
        self.stock_locked = False
        self.captured_minor = 0
        self.provider_reference: str | None = None
        self.failure_reason: str | None = None
        self.cancelled = False
        self.voided = False
        self.refunds: list[Refund] = []

    # -- queries ----------------------------------------------------------------------------

    @property
    def is_captured(self) -> bool:
        return self.provider_reference is not None

    @property
    def is_settled(self) -> bool:
        """Captured, failed, cancelled or voided: no capture can happen any more."""
        return self.is_captured or self.failure_reason is not None or self.cancelled or self.voided

    @property
    def ready_to_capture(self) -> bool:
        return self.order_known and self.stock_locked and not self.is_settled

    @property
    def refunded_minor(self) -> int:
        return sum(r.amount_minor for r in self.refunds)

    @property
    def refundable_minor(self) -> int:
        return self.captured_minor - self.refunded_minor

    def refund_by_id(self, refund_id: UUID) -> Refund | None:
        return next((r for r in self.refunds if r.refund_id == refund_id), None)

    @property
    def status(self) -> PaymentStatus:
        if self.is_captured:
            if not self.refunds:
                return PaymentStatus.CAPTURED
            if self.refundable_minor == 0:
                return PaymentStatus.REFUNDED
            return PaymentStatus.PARTIALLY_REFUNDED
        if self.failure_reason is not None:
            return PaymentStatus.FAILED
        if self.voided:
            return PaymentStatus.VOIDED
        if self.cancelled:
            return PaymentStatus.CANCELLED
        if not self.order_known:
            return PaymentStatus.AWAITING_ORDER
        if not self.stock_locked:
            return PaymentStatus.AWAITING_STOCK
        return PaymentStatus.AUTHORISING

    # -- commands ---------------------------------------------------------------------------

    def note_order(
        self, *, amount_minor: int, currency: str, payment_token: str | None, trace: Trace
    ) -> None:
        if self.order_known:
            raise PaymentError("the order of this payment is already known")
        if amount_minor <= 0:
            raise PaymentError("the amount to pay must be positive")
        self._order_noted(
            amount_minor=amount_minor, currency=currency, payment_token=payment_token, trace=trace
        )

    @event(OrderNoted)
    def _order_noted(
        self, amount_minor: int, currency: str, payment_token: str | None, trace: Trace
    ) -> None:
        self.order_known = True
        self.amount_minor = amount_minor
        self.currency = currency
        self.payment_token = payment_token

    def note_stock_locked(self, *, trace: Trace) -> None:
        if self.stock_locked:
            raise PaymentError("stock of this order is already known to be locked")
        self._stock_noted(trace=trace)

    @event(StockNoted)
    def _stock_noted(self, trace: Trace) -> None:
        self.stock_locked = True

    def capture(self, *, provider_reference: str, trace: Trace) -> None:
        """Record the capture of the order total (the gateway took the money)."""
        self._check_capturable()
        assert self.amount_minor is not None
        assert self.currency is not None
        if not provider_reference:
            raise PaymentError("a capture needs the provider's reference")
        self._captured(
            order_id=self.order_id,
            amount_minor=self.amount_minor,
            currency=self.currency,
            provider_reference=provider_reference,
            trace=trace,
        )

    @event(Captured)
    def _captured(
        self,
        order_id: UUID,
        amount_minor: int,
        currency: str,
        provider_reference: str,
        trace: Trace,
    ) -> None:
        self.captured_minor = amount_minor
        self.provider_reference = provider_reference

    def fail(self, *, reason_code: str, trace: Trace) -> None:
        """Record that the payment could not be captured."""
        self._check_capturable()
        assert self.amount_minor is not None
        assert self.currency is not None
        self._failed(
            order_id=self.order_id,
            amount_minor=self.amount_minor,
            currency=self.currency,
            reason_code=reason_code,
            trace=trace,
        )

    @event(Failed)
    def _failed(
        self, order_id: UUID, amount_minor: int, currency: str, reason_code: str, trace: Trace
    ) -> None:
        self.failure_reason = reason_code

    def _check_capturable(self) -> None:
        if self.is_captured:
            raise NotCapturable("the payment is already captured")
        if self.is_settled:
            raise NotCapturable(f"the payment is {self.status} and cannot be captured")
        if not (self.order_known and self.stock_locked):
            raise NotCapturable(f"the payment is {self.status}: order and stock are both needed")

    def cancel(self, *, trace: Trace) -> None:
        """The order was cancelled before capture: never capture it afterwards."""
        if self.is_settled:
            raise PaymentError(f"a {self.status} payment cannot be cancelled")
        self._cancelled(trace=trace)

    @event(Cancelled)
    def _cancelled(self, trace: Trace) -> None:
        self.cancelled = True

    def void(self, *, trace: Trace) -> None:
        """Stock was rejected before capture: never capture it."""
        if self.is_settled:
            raise PaymentError(f"a {self.status} payment cannot be voided")
        self._voided(trace=trace)

    @event(Voided)
    def _voided(self, trace: Trace) -> None:
        self.voided = True

    def check_refund(self, refund_id: UUID, amount_minor: int) -> None:
        """Raise unless a refund `refund_id` of `amount_minor` may be issued now."""
        if not self.is_captured:
            raise NotRefundable(f"the payment is {self.status}: only captured money is refundable")
        if self.refund_by_id(refund_id) is not None:
            raise NotRefundable(f"refund {refund_id} was already issued")
        if amount_minor <= 0:
            raise NotRefundable("a refund must be positive")
        if amount_minor > self.refundable_minor:
            raise RefundExceedsCapture(amount_minor, self.refundable_minor, self.currency or "")

    def refund(
        self,
        *,
        refund_id: UUID,
        amount_minor: int,
        reason: str,
        provider_reference: str,
        refunded_at: datetime,
        trace: Trace,
    ) -> None:
        """Record a refund the gateway made: the sum of refunds never exceeds the capture."""
        self.check_refund(refund_id, amount_minor)
        assert self.currency is not None
        total = self.refunded_minor + amount_minor
        self._refunded(
            order_id=self.order_id,
            refund_id=refund_id,
            amount_minor=amount_minor,
            currency=self.currency,
            reason=reason,
            provider_reference=provider_reference,
            refunded_at=refunded_at,
            total_refunded_minor=total,
            full_refund=total == self.captured_minor,
            trace=trace,
        )

    @event(Refunded)
    def _refunded(
        self,
        order_id: UUID,
        refund_id: UUID,
        amount_minor: int,
        currency: str,
        reason: str,
        provider_reference: str,
        refunded_at: datetime,
        total_refunded_minor: int,
        full_refund: bool,
        trace: Trace,
    ) -> None:
        self.refunds.append(
            Refund(refund_id, amount_minor, reason, provider_reference, refunded_at)
        )
