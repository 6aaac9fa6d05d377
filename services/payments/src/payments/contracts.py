"""Maps the Payment's private domain events to public integration events."""

from __future__ import annotations

from collections.abc import Sequence
from functools import singledispatch
from typing import Any

from fulfilment_kit.contracts import (
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    PaymentUnresolved,
)
from fulfilment_kit.messaging.relay import EventToPublish
from payments.domain import Payment


@singledispatch
def to_public(domain_event: Any) -> Sequence[EventToPublish]:
    """Domain events not listed below stay private (opened, noted, requested, cancelled, ...)."""
    return ()


def _outbound(public: Any, e: Any) -> Sequence[EventToPublish]:
    return (EventToPublish(public, e.trace.correlation_id, e.trace.causation_id),)


@to_public.register(Payment.Captured)
def _captured(e: Any) -> Sequence[EventToPublish]:
    captured = PaymentCaptured(
        order_id=e.order_id,
        payment_id=e.originator_id,
        amount_minor=e.amount_minor,
        currency=e.currency,
        captured_at=e.timestamp,
    )
    return _outbound(captured, e)


@to_public.register(Payment.Failed)
def _failed(e: Any) -> Sequence[EventToPublish]:
    failed = PaymentFailed(
        order_id=e.order_id,
        payment_id=e.originator_id,
        reason_code=e.reason_code,
        amount_minor=e.amount_minor,
        currency=e.currency,
        failed_at=e.timestamp,
    )
    return _outbound(failed, e)


@to_public.register(Payment.Refunded)
def _refunded(e: Any) -> Sequence[EventToPublish]:
    refunded = PaymentRefunded(
        order_id=e.order_id,
        payment_id=e.originator_id,
        refund_id=e.refund_id,
        refund_minor=e.amount_minor,
        total_refunded_minor=e.total_refunded_minor,
        currency=e.currency,
        full_refund=e.full_refund,
        reason=e.reason,
        refunded_at=e.refunded_at,
    )
    return _outbound(refunded, e)


@to_public.register(Payment.Unresolved)
def _unresolved(e: Any) -> Sequence[EventToPublish]:
    unresolved = PaymentUnresolved(
        order_id=e.order_id,
        payment_id=e.originator_id,
        amount_minor=e.amount_minor,
        currency=e.currency,
        unknown_since=e.unknown_since,
        lookups=e.lookups,
        flagged_at=e.flagged_at,
    )
    return _outbound(unresolved, e)
