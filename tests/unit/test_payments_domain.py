"""The Payment aggregate's invariants: one capture at most, refunds never beyond the capture."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from fulfilment_kit.tracing import Trace
from payments.domain import (
    NotCapturable,
    NotRefundable,
    Payment,
    PaymentError,
    PaymentStatus,
    RefundExceedsCapture,
    payment_id_for,
)

TRACE = Trace("corr-1", "cause-1")
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def ready(amount: int = 1000) -> Payment:
    payment = Payment.open(order_id=uuid.uuid4(), trace=TRACE)
    payment.note_order(amount_minor=amount, currency="EUR", payment_token="tok_visa", trace=TRACE)
    payment.note_stock_locked(trace=TRACE)
    return payment


def captured(amount: int = 1000) -> Payment:
    payment = ready(amount)
    payment.request_capture(idempotency_key=str(payment.id), trace=TRACE)
    payment.capture(provider_reference="ch_1", trace=TRACE)
    return payment


def refund(payment: Payment, amount: int, refund_id: uuid.UUID | None = None) -> None:
    """Requested (recorded first), then confirmed by the provider."""
    refund_id = refund_id or uuid.uuid4()
    payment.request_refund(refund_id=refund_id, amount_minor=amount, reason="goodwill", trace=TRACE)
    payment.refund(refund_id=refund_id, provider_reference="re_1", refunded_at=NOW, trace=TRACE)


def test_payment_id_is_deterministic_per_order() -> None:
    order_id = uuid.uuid4()
    assert payment_id_for(order_id) == payment_id_for(order_id)
    assert Payment.open(order_id=order_id, trace=TRACE).id == payment_id_for(order_id)
    assert payment_id_for(uuid.uuid4()) != payment_id_for(order_id)


def test_status_follows_arrivals_in_either_order() -> None:
    first_order = Payment.open(order_id=uuid.uuid4(), trace=TRACE)
    opened = first_order.status
    first_order.note_order(amount_minor=5, currency="EUR", payment_token=None, trace=TRACE)
    assert (opened, first_order.status) == ("awaiting_order", "awaiting_stock")
    first_stock = Payment.open(order_id=uuid.uuid4(), trace=TRACE)
    first_stock.note_stock_locked(trace=TRACE)
    assert first_stock.status is PaymentStatus.AWAITING_ORDER
    assert not first_stock.ready_to_capture


def test_capture_needs_order_and_stock_and_happens_once() -> None:
    payment = Payment.open(order_id=uuid.uuid4(), trace=TRACE)
    with pytest.raises(NotCapturable, match="both needed"):
        payment.capture(provider_reference="ch_1", trace=TRACE)
    payment = captured()
    assert payment.status is PaymentStatus.CAPTURED
    assert payment.captured_minor == 1000
    with pytest.raises(NotCapturable, match="already captured"):
        payment.capture(provider_reference="ch_2", trace=TRACE)
    with pytest.raises(NotCapturable):
        payment.fail(reason_code="card_declined", trace=TRACE)
    events = payment.collect_events()
    assert [type(e).__name__ for e in events].count("Captured") == 1
    assert all(e.trace == TRACE for e in events)  # type: ignore[attr-defined]


@pytest.mark.parametrize("settle", ["cancel", "void", "fail"])
def test_a_settled_payment_is_never_captured(settle: str) -> None:
    payment = ready()
    if settle == "fail":
        payment.fail(reason_code="card_declined", trace=TRACE)
    else:
        getattr(payment, settle)(trace=TRACE)
    assert not payment.ready_to_capture
    with pytest.raises(NotCapturable):
        payment.capture(provider_reference="ch_1", trace=TRACE)


def test_cancel_and_void_refuse_a_captured_payment() -> None:
    payment = captured()
    with pytest.raises(PaymentError):
        payment.cancel(trace=TRACE)
    with pytest.raises(PaymentError):
        payment.void(trace=TRACE)


def test_refunds_sum_to_at_most_the_capture() -> None:
    payment = captured(1000)
    refund(payment, 300)
    partly = payment.status
    with pytest.raises(RefundExceedsCapture, match="700") as raised:
        refund(payment, 701)
    assert raised.value.refundable_minor == 700
    refund(payment, 700)
    assert (partly, payment.status) == ("partially_refunded", "refunded")
    assert payment.refunded_minor == payment.captured_minor == 1000
    with pytest.raises(RefundExceedsCapture):
        refund(payment, 1)
    refunded = [e for e in payment.collect_events() if isinstance(e, Payment.Refunded)]
    assert [(e.amount_minor, e.total_refunded_minor, e.full_refund) for e in refunded] == [
        (300, 300, False),
        (700, 1000, True),
    ]


def test_refund_needs_a_capture_a_new_id_and_a_positive_amount() -> None:
    with pytest.raises(NotRefundable, match="only captured money"):
        refund(ready(), 1)
    payment = captured()
    refund_id = uuid.uuid4()
    refund(payment, 10, refund_id)
    with pytest.raises(NotRefundable, match="already issued"):
        refund(payment, 10, refund_id)
    with pytest.raises(NotRefundable, match="positive"):
        refund(payment, 0)


def test_order_must_be_positive_and_noted_once() -> None:
    payment = Payment.open(order_id=uuid.uuid4(), trace=TRACE)
    with pytest.raises(PaymentError, match="positive"):
        payment.note_order(amount_minor=0, currency="EUR", payment_token=None, trace=TRACE)
    payment.note_order(amount_minor=1, currency="EUR", payment_token=None, trace=TRACE)
    with pytest.raises(PaymentError, match="already known"):
        payment.note_order(amount_minor=1, currency="EUR", payment_token=None, trace=TRACE)
    payment.note_stock_locked(trace=TRACE)
    with pytest.raises(PaymentError, match="already known"):
        payment.note_stock_locked(trace=TRACE)
