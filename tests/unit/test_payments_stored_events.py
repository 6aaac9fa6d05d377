"""Payments stored before the trace left the domain (events declared once, ADR 20) still load,
map to their public events with their causal context, and the events recorded now have the
stored names and fields (the fixture was recorded by the code before the change)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from fulfilment_kit.contracts import PaymentCaptured, PaymentRefunded, PaymentUnresolved
from fulfilment_kit.tracing import Trace
from payments.application import PaymentsApplication
from payments.contracts import to_public
from payments.domain import Payment, PaymentStatus, Refund, payment_id_for
from payments.worker import ProviderWorker
from tests.support.stored_events import load, shapes, with_stored

A = uuid.UUID("11111111-1111-4111-8111-111111111111")
B = uuid.UUID("22222222-2222-4222-8222-222222222222")
C = uuid.UUID("33333333-3333-4333-8333-333333333333")
D = uuid.UUID("44444444-4444-4444-8444-444444444444")
R1 = uuid.UUID("55555555-5555-4555-8555-555555555555")
R2 = uuid.UUID("66666666-6666-4666-8666-666666666666")
AT = datetime(2025, 5, 1, 12, tzinfo=UTC)

STORED = load(Path(__file__).parent / "payments_stored_events.json")
"""(originator id, version, topic, state) of each event as the code before the change stored
it: payment A captured after an unclear answer, one refund made and one refused; B cancelled
while its capture was in flight and abandoned; C voided; D failed (no token)."""


def _app() -> PaymentsApplication:
    return PaymentsApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def _app_with_old_events() -> PaymentsApplication:
    return with_stored(_app(), STORED)


def test_payments_stored_before_load_with_their_state() -> None:
    app = _app_with_old_events()
    a = app.get_payment(A)
    assert a.status is PaymentStatus.PARTIALLY_REFUNDED
    assert (a.amount_minor, a.currency, a.captured_minor) == (2500, "EUR", 2500)
    assert a.provider_reference == "ch_1"
    assert a.unknown_since == AT
    assert a.unresolved_flagged
    assert a.refunds == [Refund(R1, 1000, "return_received", "re_1", AT)]
    assert a.rejected_refunds == [R2]
    assert a.pending_refunds == []
    assert a.refundable_minor == 1500
    b = app.get_payment(B)
    assert b.status is PaymentStatus.CANCELLED
    assert b.abandoned
    assert not b.capture_pending
    assert app.get_payment(C).status is PaymentStatus.VOIDED
    d = app.get_payment(D)
    assert d.status is PaymentStatus.FAILED
    assert d.failure_reason == "card_declined"


def test_stored_outcomes_map_to_their_public_events_with_their_trace() -> None:
    app = _app_with_old_events()
    events = [app.mapper.to_domain_event(e) for e in app.recorder.select_events(payment_id_for(A))]
    published = [outbound for e in events for outbound in to_public(e)]
    unresolved, captured, refunded = published
    assert isinstance(unresolved.event, PaymentUnresolved)
    assert (unresolved.event.lookups, unresolved.event.unknown_since) == (3, AT)
    assert (unresolved.correlation_id, unresolved.causation_id) == ("corr-a", "worker-2")
    assert isinstance(captured.event, PaymentCaptured)
    assert captured.event.amount_minor == 2500
    assert (captured.correlation_id, captured.causation_id) == ("corr-a", "worker-3")
    assert isinstance(refunded.event, PaymentRefunded)
    assert refunded.event.refund_id == R1
    assert (refunded.correlation_id, refunded.causation_id) == ("corr-r", "worker-4")


def test_the_worker_carries_on_the_conversation_of_the_last_intent() -> None:
    """Before, the aggregate kept the correlation id of its last intent (opened, capture or
    refund requested); now the worker reads it from that event's trace."""
    app = _app_with_old_events()
    worker = ProviderWorker(app)
    a = app.get_payment(A)
    assert worker.step_trace(a, "refund") == Trace("corr-g", f"provider-worker:{a.id}:refund")
    assert worker.step_trace(app.get_payment(B), "x").correlation_id == "corr-b"
    assert worker.step_trace(app.get_payment(C), "x").correlation_id == "corr-c"


def test_events_recorded_now_have_the_stored_names_and_fields() -> None:
    """The same story recorded by today's code: each event's name and fields (and `trace`)."""
    a = Payment.open(order_id=A)
    a.note_order(amount_minor=2500, currency="EUR", payment_token="sealed-token")
    a.note_stock_locked()
    a.request_capture(idempotency_key=str(a.id))
    a.note_outcome_unknown(reason="timeout", at=AT)
    a.flag_unresolved(lookups=3, at=AT)
    a.capture(provider_reference="ch_1")
    a.request_refund(refund_id=R1, amount_minor=1000, reason="return_received")
    a.refund(refund_id=R1, provider_reference="re_1", refunded_at=AT)
    a.request_refund(refund_id=R2, amount_minor=500, reason="goodwill")
    a.reject_refund(refund_id=R2, reason="refused")
    b = Payment.open(order_id=B)
    b.note_stock_locked()
    b.note_order(amount_minor=700, currency="EUR", payment_token="tok")
    b.request_capture(idempotency_key=str(b.id))
    b.cancel()
    b.abandon_capture()
    c = Payment.open(order_id=C)
    c.void()
    d = Payment.open(order_id=D)
    d.note_order(amount_minor=300, currency="USD", payment_token=None)
    d.note_stock_locked()
    d.fail(reason_code="card_declined")
    new = _app()
    new.save(a, b, c, d, trace=Trace("corr", "cause"))
    assert shapes(new) == shapes(_app_with_old_events())
