"""The Payment aggregate: one per order. Pure domain: no I/O, no frameworks, no clocks.

A payment is opened by whichever of "order placed" and "stock locked" arrives first. Once
both have arrived the capture is *requested* (the intent, with its idempotency key, is
recorded before anyone calls the provider); its outcome is then recorded as captured, failed
(a definite decline only) or unknown (an unclear answer, resolved later by looking the charge
up at the provider). Captured money can be refunded, in parts, but never more than was
captured; every refund is requested (recorded with its id, the provider's idempotency key)
before the provider is called. A payment cancelled (order cancelled) or voided (stock
rejected) before its capture was requested is never captured; one cancelled while the
capture was in flight is resolved at the provider and, if the money was taken, refunded.

The payment token is stored (the capture may happen long after the order was placed) but it
is never part of a public event, a view, or a log line.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, TypedDict
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from fulfilment_kit.commands import StateConflict

# Namespace of the deterministic ids of payments (one per order) and refunds.
PAYMENTS_NAMESPACE = uuid.UUID("3a5e2c1d-7b4f-4e9a-8c6d-1f2e3d4c5b6a")


@functools.lru_cache(maxsize=8192)  # asked for by every record of an order; uuid5 hashes
def payment_id_for(order_id: UUID) -> UUID:
    """The one payment of an order: a second "create" for the same order is a version clash."""
    return uuid.uuid5(PAYMENTS_NAMESPACE, f"payment:{order_id}")


def refund_id_for(cause: str) -> UUID:
    """A refund's id from what caused it (a message ce_id, an HTTP Idempotency-Key, a return
    id as `return:<id>`, ...)."""
    return uuid.uuid5(PAYMENTS_NAMESPACE, f"refund:{cause}")


def cancellation_refund_id(order_id: UUID) -> UUID:
    """The one refund a cancellation of the order gives back (whichever message caused it)."""
    return refund_id_for(f"cancellation:{order_id}")


class PaymentStatus(StrEnum):
    AWAITING_ORDER = "awaiting_order"
    AWAITING_STOCK = "awaiting_stock"
    AUTHORISING = "authorising"
    """The capture is requested (intent recorded with its idempotency key); the provider
    worker calls the provider outside any consumer transaction."""
    UNKNOWN = "unknown"
    """The provider's answer was unclear (timeout, lost response, 5xx): reconciliation looks
    the charge up at the provider. Never treated as a failure."""
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


class NotRefundable(PaymentError, StateConflict):
    """Nothing (or not this much) may be refunded now: 409."""


class RefundExceedsCapture(NotRefundable):
    def __init__(self, requested_minor: int, refundable_minor: int, currency: str) -> None:
        super().__init__(
            f"a refund of {requested_minor} {currency} minor units exceeds what is refundable: "
            f"{refundable_minor} {currency} minor units"
        )
        self.requested_minor = requested_minor
        self.refundable_minor = refundable_minor

    @property
    def extra(self) -> dict[str, int]:
        return {"refundable_minor": self.refundable_minor}


@dataclass(frozen=True)
class PendingRefund:
    """A refund recorded as requested; the provider has not confirmed it yet."""

    refund_id: UUID
    amount_minor: int
    reason: str


@dataclass(frozen=True)
class Refund:
    refund_id: UUID
    amount_minor: int
    reason: str
    provider_reference: str
    refunded_at: datetime


class OrderTotal(TypedDict):
    """The fields of the order's total that the capture's events carry."""

    order_id: UUID
    amount_minor: int
    currency: str


class Payment(Aggregate):
    """The money side of one order."""

    # The events, declared by the `@event` methods below (their arguments are the fields).
    Opened: ClassVar[type[Aggregate.Created]]
    OrderNoted: ClassVar[type[Aggregate.Event]]
    StockNoted: ClassVar[type[Aggregate.Event]]
    CaptureRequested: ClassVar[type[Aggregate.Event]]
    OutcomeUnknown: ClassVar[type[Aggregate.Event]]
    Unresolved: ClassVar[type[Aggregate.Event]]
    CaptureAbandoned: ClassVar[type[Aggregate.Event]]
    """Cancelled while the capture was in flight, and the provider has no such charge."""
    RefundRequested: ClassVar[type[Aggregate.Event]]
    RefundRejected: ClassVar[type[Aggregate.Event]]
    Captured: ClassVar[type[Aggregate.Event]]
    Failed: ClassVar[type[Aggregate.Event]]
    Cancelled: ClassVar[type[Aggregate.Event]]
    Voided: ClassVar[type[Aggregate.Event]]
    Refunded: ClassVar[type[Aggregate.Event]]

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def open(cls, *, order_id: UUID) -> Payment:
        return cls(id=payment_id_for(order_id), order_id=order_id)

    @event("Opened")
    def __init__(self, id: UUID, order_id: UUID) -> None:
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
        self.capture_key: str | None = None
        self.unknown_since: datetime | None = None
        self.unresolved_flagged = False
        self.abandoned = False
        self.pending_refunds: list[PendingRefund] = []
        self.rejected_refunds: list[UUID] = []

    # -- queries ----------------------------------------------------------------------------

    @property
    def is_captured(self) -> bool:
        return self.provider_reference is not None

    @property
    def capture_pending(self) -> bool:
        """The capture was requested and its outcome is not known (authorising or unknown)."""
        return (
            self.capture_key is not None
            and not self.is_captured
            and self.failure_reason is None
            and not self.abandoned
        )

    @property
    def outcome_unknown(self) -> bool:
        return self.capture_pending and self.unknown_since is not None

    @property
    def stopped(self) -> bool:
        """Cancelled or voided: no capture may begin, captured money goes back."""
        return self.cancelled or self.voided

    @property
    def is_settled(self) -> bool:
        """Captured, failed, cancelled or voided, or a capture in flight: none may begin."""
        return (
            self.is_captured
            or self.failure_reason is not None
            or self.stopped
            or self.capture_key is not None
        )

    @property
    def ready_to_capture(self) -> bool:
        return self.order_known and self.stock_locked and not self.is_settled

    @property
    def ready_to_capture_once_stock_locked(self) -> bool:
        """Locking the stock is all that is missing to charge the card (a token is there)."""
        return (
            self.order_known
            and not self.stock_locked
            and not self.is_settled
            and self.payment_token is not None
        )

    @property
    def refunded_minor(self) -> int:
        return sum(r.amount_minor for r in self.refunds)

    @property
    def pending_refund_minor(self) -> int:
        return sum(r.amount_minor for r in self.pending_refunds)

    @property
    def refundable_minor(self) -> int:
        """What may still be requested: captured minus refunded minus refunds in flight."""
        return self.captured_minor - self.refunded_minor - self.pending_refund_minor

    def refund_by_id(self, refund_id: UUID) -> Refund | None:
        return next((r for r in self.refunds if r.refund_id == refund_id), None)

    def pending_refund(self, refund_id: UUID) -> PendingRefund | None:
        return next((r for r in self.pending_refunds if r.refund_id == refund_id), None)

    def knows_refund(self, refund_id: UUID) -> bool:
        """Requested before (done, in flight or refused by the provider)."""
        return (
            self.refund_by_id(refund_id) is not None
            or self.pending_refund(refund_id) is not None
            or refund_id in self.rejected_refunds
        )

    @property
    def status(self) -> PaymentStatus:
        if self.is_captured:
            if not self.refunds:
                return PaymentStatus.CAPTURED
            if self.captured_minor - self.refunded_minor == 0:
                return PaymentStatus.REFUNDED
            return PaymentStatus.PARTIALLY_REFUNDED
        if self.failure_reason is not None:
            return PaymentStatus.FAILED
        if self.capture_pending:
            return PaymentStatus.UNKNOWN if self.outcome_unknown else PaymentStatus.AUTHORISING
        if self.voided:
            return PaymentStatus.VOIDED
        if self.cancelled:
            return PaymentStatus.CANCELLED
        if not self.order_known:
            return PaymentStatus.AWAITING_ORDER
        if not self.stock_locked:
            return PaymentStatus.AWAITING_STOCK
        return PaymentStatus.AUTHORISING

    def _total(self) -> OrderTotal:
        """The order and its total (known once the order is noted), as events carry them."""
        assert self.amount_minor is not None
        assert self.currency is not None
        return OrderTotal(
            order_id=self.order_id, amount_minor=self.amount_minor, currency=self.currency
        )

    # -- commands ---------------------------------------------------------------------------

    def note_order(self, *, amount_minor: int, currency: str, payment_token: str | None) -> None:
        if self.order_known:
            raise PaymentError("the order of this payment is already known")
        if amount_minor <= 0:
            raise PaymentError("the amount to pay must be positive")
        self._order_noted(amount_minor=amount_minor, currency=currency, payment_token=payment_token)

    @event("OrderNoted")
    def _order_noted(self, amount_minor: int, currency: str, payment_token: str | None) -> None:
        self.order_known = True
        self.amount_minor = amount_minor
        self.currency = currency
        self.payment_token = payment_token

    def note_stock_locked(self) -> None:
        if self.stock_locked:
            raise PaymentError("stock of this order is already known to be locked")
        self._stock_noted()

    @event("StockNoted")
    def _stock_noted(self) -> None:
        self.stock_locked = True

    def request_capture(self, *, idempotency_key: str) -> None:
        """Record the intent to capture the order total, before the provider is called."""
        if not self.ready_to_capture:
            raise NotCapturable(f"the payment is {self.status}: no capture may begin")
        if not idempotency_key:
            raise PaymentError("a capture needs an idempotency key")
        self._capture_requested(idempotency_key=idempotency_key, **self._total())

    def note_stock_locked_and_request_capture(self, *, idempotency_key: str) -> None:
        """The stock is locked and the order known: the capture's request says both, in one
        event (a stream stored before says StockNoted, then CaptureRequested)."""
        if self.stock_locked:
            raise PaymentError("stock of this order is already known to be locked")
        if not self.order_known or self.is_settled:
            raise NotCapturable(f"the payment is {self.status}: no capture may begin")
        if not idempotency_key:
            raise PaymentError("a capture needs an idempotency key")
        self._capture_requested(idempotency_key=idempotency_key, **self._total())

    @event("CaptureRequested")
    def _capture_requested(
        self, order_id: UUID, idempotency_key: str, amount_minor: int, currency: str
    ) -> None:
        self.capture_key = idempotency_key
        self.stock_locked = True  # a capture is only ever requested on locked stock

    def capture(self, *, provider_reference: str) -> None:
        """Record the capture of the order total (the provider took the money). Allowed even
        after a cancellation that arrived while the capture was in flight: it happened."""
        self._check_in_flight()
        if not provider_reference:
            raise PaymentError("a capture needs the provider's reference")
        self._captured(provider_reference=provider_reference, **self._total())

    @event("Captured")
    def _captured(
        self,
        order_id: UUID,
        amount_minor: int,
        currency: str,
        provider_reference: str,
    ) -> None:
        self.captured_minor = amount_minor
        self.provider_reference = provider_reference

    def fail(self, *, reason_code: str) -> None:
        """Record a definite decline (or a capture that cannot begin: no payment token)."""
        if not (self.capture_pending or self.ready_to_capture):
            raise NotCapturable(f"the payment is {self.status} and cannot fail")
        self._failed(reason_code=reason_code, **self._total())

    @event("Failed")
    def _failed(self, order_id: UUID, amount_minor: int, currency: str, reason_code: str) -> None:
        self.failure_reason = reason_code

    def _check_in_flight(self) -> None:
        if self.capture_pending:
            return
        if self.is_captured:
            raise NotCapturable("the payment is already captured")
        if not (self.order_known and self.stock_locked):
            raise NotCapturable(f"the payment is {self.status}: order and stock are both needed")
        raise NotCapturable(f"the payment is {self.status}: no capture is in flight")

    def note_outcome_unknown(self, *, reason: str, at: datetime) -> bool:
        """The provider's answer was unclear; False if that is known already."""
        if not self.capture_pending:
            raise NotCapturable(f"the payment is {self.status}: no capture is in flight")
        if self.unknown_since is not None:
            return False
        self._outcome_unknown(reason=reason[:200], since=at)
        return True

    @event("OutcomeUnknown")
    def _outcome_unknown(self, reason: str, since: datetime) -> None:
        self.unknown_since = since

    def flag_unresolved(self, *, lookups: int, at: datetime) -> bool:
        """The outcome stayed unknown past the deadline (once): a case for a human."""
        if not self.outcome_unknown or self.unresolved_flagged:
            return False
        assert self.unknown_since is not None
        self._unresolved(
            unknown_since=self.unknown_since, lookups=lookups, flagged_at=at, **self._total()
        )
        return True

    @event("Unresolved")
    def _unresolved(
        self,
        order_id: UUID,
        amount_minor: int,
        currency: str,
        unknown_since: datetime,
        lookups: int,
        flagged_at: datetime,
    ) -> None:
        self.unresolved_flagged = True

    def abandon_capture(self) -> None:
        """Stopped while in flight and the provider has no such charge: never captured."""
        if not (self.capture_pending and self.stopped):
            raise NotCapturable(f"the payment is {self.status}: nothing to abandon")
        self._capture_abandoned()

    @event("CaptureAbandoned")
    def _capture_abandoned(self) -> None:
        self.abandoned = True

    def cancel(self) -> None:
        """The order was cancelled before capture: never begin one afterwards (a capture in
        flight is resolved at the provider, and refunded if the money was taken)."""
        if self.is_captured or self.failure_reason is not None or self.stopped:
            raise PaymentError(f"a {self.status} payment cannot be cancelled")
        self._cancelled()

    @event("Cancelled")
    def _cancelled(self) -> None:
        self.cancelled = True

    def void(self) -> None:
        """Stock was rejected before capture: never capture it."""
        if self.is_captured or self.failure_reason is not None or self.stopped:
            raise PaymentError(f"a {self.status} payment cannot be voided")
        self._voided()

    @event("Voided")
    def _voided(self) -> None:
        self.voided = True

    def check_refund(self, refund_id: UUID, amount_minor: int) -> None:
        """Raise unless a refund `refund_id` of `amount_minor` may be requested now."""
        if not self.is_captured:
            raise NotRefundable(f"the payment is {self.status}: only captured money is refundable")
        if self.knows_refund(refund_id):
            raise NotRefundable(f"refund {refund_id} was already issued (or requested)")
        if amount_minor <= 0:
            raise NotRefundable("a refund must be positive")
        if amount_minor > self.refundable_minor:
            raise RefundExceedsCapture(amount_minor, self.refundable_minor, self.currency or "")

    def request_refund(self, *, refund_id: UUID, amount_minor: int, reason: str) -> None:
        """Record a refund before the provider is called (its id is the idempotency key)."""
        self.check_refund(refund_id, amount_minor)
        assert self.currency is not None
        self._refund_requested(
            order_id=self.order_id,
            refund_id=refund_id,
            amount_minor=amount_minor,
            currency=self.currency,
            reason=reason,
        )

    @event("RefundRequested")
    def _refund_requested(
        self,
        order_id: UUID,
        refund_id: UUID,
        amount_minor: int,
        currency: str,
        reason: str,
    ) -> None:
        self.pending_refunds = [
            *self.pending_refunds,
            PendingRefund(refund_id, amount_minor, reason),
        ]

    def refund(
        self,
        *,
        refund_id: UUID,
        provider_reference: str,
        refunded_at: datetime,
    ) -> None:
        """Record that the provider made a requested refund."""
        pending = self.pending_refund(refund_id)
        if pending is None:
            raise NotRefundable(f"refund {refund_id} is not in flight")
        assert self.currency is not None
        total = self.refunded_minor + pending.amount_minor
        self._refunded(
            order_id=self.order_id,
            refund_id=refund_id,
            amount_minor=pending.amount_minor,
            currency=self.currency,
            reason=pending.reason,
            provider_reference=provider_reference,
            refunded_at=refunded_at,
            total_refunded_minor=total,
            full_refund=total == self.captured_minor,
        )

    @event("Refunded")
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
    ) -> None:
        self.pending_refunds = [r for r in self.pending_refunds if r.refund_id != refund_id]
        self.refunds.append(
            Refund(refund_id, amount_minor, reason, provider_reference, refunded_at)
        )

    def reject_refund(self, *, refund_id: UUID, reason: str) -> None:
        """The provider refused a requested refund for good (it needs a human)."""
        if self.pending_refund(refund_id) is None:
            raise NotRefundable(f"refund {refund_id} is not in flight")
        self._refund_rejected(refund_id=refund_id, reason=reason[:200])

    @event("RefundRejected")
    def _refund_rejected(self, refund_id: UUID, reason: str) -> None:
        self.pending_refunds = [r for r in self.pending_refunds if r.refund_id != refund_id]
        self.rejected_refunds = [*self.rejected_refunds, refund_id]
