"""The Payment aggregate's invariants: one capture at most, refunds never beyond the capture."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from fulfilment_kit.tracing import Trace, stamp
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
    payment = Payment.open(order_id=uuid.uuid4())
    payment.note_order(amount_minor=amount, currency="EUR", payment_token="tok_visa")
    payment.note_stock_locked()
    return payment


def captured(amount: int = 1000) -> Payment:
    payment = ready(amount)
    payment.request_capture(idempotency_key=str(payment.id))
    payment.capture(provider_reference="ch_1")
    return payment


def refund(payment: Payment, amount: int, refund_id: uuid.UUID | None = None) -> None:
    """Requested (recorded first), then confirmed by the provider."""
    refund_id = refund_id or uuid.uuid4()
    payment.request_refund(refund_id=refund_id, amount_minor=amount, reason="goodwill")
    payment.refund(refund_id=refund_id, provider_reference="re_1", refunded_at=NOW)


def test_payment_id_is_deterministic_per_order() -> None:
    order_id = uuid.uuid4()
    assert payment_id_for(order_id) == payment_id_for(order_id)
    assert Payment.open(order_id=order_id).id == payment_id_for(order_id)
    assert payment_id_for(uuid.uuid4()) != payment_id_for(order_id)


def test_status_follows_arrivals_in_either_order() -> None:
    first_order = Payment.open(order_id=uuid.uuid4())
    opened = first_order.status
    first_order.note_order(amount_minor=5, currency="EUR", payment_token=None)
    assert (opened, first_order.status) == ("awaiting_order", "awaiting_stock")
    first_stock = Payment.open(order_id=uuid.uuid4())
    first_stock.note_stock_locked()
    assert first_stock.status is PaymentStatus.AWAITING_ORDER
    assert not first_stock.ready_to_capture


def test_capture_needs_order_and_stock_and_happens_once() -> None:
    payment = Payment.open(order_id=uuid.uuid4())
    with pytest.raises(NotCapturable, match="both needed"):
        payment.capture(provider_reference="ch_1")
    payment = captured()
    assert payment.status is PaymentStatus.CAPTURED
    assert payment.captured_minor == 1000
    with pytest.raises(NotCapturable, match="already captured"):
        payment.capture(provider_reference="ch_2")
    with pytest.raises(NotCapturable):
        payment.fail(reason_code="card_declined")
    events = payment.collect_events()
    stamp(TRACE, events)  # as the application layer does when it saves them
    assert [type(e).__name__ for e in events].count("Captured") == 1
    assert all(e.trace == TRACE for e in events)  # type: ignore[attr-defined]


@pytest.mark.parametrize("settle", ["cancel", "void", "fail"])
def test_a_settled_payment_is_never_captured(settle: str) -> None:
    payment = ready()
    if settle == "fail":
        payment.fail(reason_code="card_declined")
    else:
        getattr(payment, settle)()
    assert not payment.ready_to_capture
    with pytest.raises(NotCapturable):
        payment.capture(provider_reference="ch_1")


def test_cancel_and_void_refuse_a_captured_payment() -> None:
    payment = captured()
    with pytest.raises(PaymentError):
        payment.cancel()
    with pytest.raises(PaymentError):
        payment.void()


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
    payment = Payment.open(order_id=uuid.uuid4())
    with pytest.raises(PaymentError, match="positive"):
        payment.note_order(amount_minor=0, currency="EUR", payment_token=None)
    payment.note_order(amount_minor=1, currency="EUR", payment_token=None)
    with pytest.raises(PaymentError, match="already known"):
        payment.note_order(amount_minor=1, currency="EUR", payment_token=None)
    payment.note_stock_locked()
    with pytest.raises(PaymentError, match="already known"):
        payment.note_stock_locked()
