"""The provider worker records a round's capture answers in one transaction, each with its
own trace, and a payment changed meanwhile is recorded again on its newest state; it reads a
round's payments in one load, again only for those still to call once that read is old."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fulfilment_kit.contracts import PaymentCaptured
from fulfilment_kit.tracing import Trace, event_trace
from payments import worker as worker_module
from payments.application import PaymentsApplication
from payments.domain import Payment, PaymentStatus, payment_id_for
from tests.support.messages import envelope
from tests.unit.test_payments_policy import (
    Feed,
    RecordingGateway,
    cancelled,
    locked,
    make_app,
    placed,
    published,
)


@pytest.fixture
def gateway() -> RecordingGateway:
    return RecordingGateway()


@pytest.fixture
def app(gateway: RecordingGateway) -> PaymentsApplication:
    return make_app(gateway)


class Transactions:
    """Counts the application's writes (instrumentation, not a stand-in)."""

    def __init__(self, app: PaymentsApplication, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        wrapped = app._record

        def counting(processing: Any) -> Any:
            self.calls += 1
            return wrapped(processing)

        monkeypatch.setattr(app, "_record", counting)


def test_a_rounds_capture_answers_are_one_transaction_each_with_its_own_trace(
    app: PaymentsApplication, gateway: RecordingGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = Feed(app, worker=False)
    orders = [uuid.uuid4() for _ in range(5)]
    sent = feed.send(*(e for o in orders for e in (placed(o), locked(o))))
    writes = Transactions(app, monkeypatch)

    assert feed.worker.step() == 5
    assert writes.calls == 1, "five answers, one transaction"
    assert len(gateway.charges) == 5
    assert [type(e) for e in published(app)] == [PaymentCaptured] * 5
    requests = {env.subject: env for env in sent if env.type.endswith("stock.locked.v1")}
    for order_id in orders:
        payment = app.get_payment(order_id)
        assert payment.status is PaymentStatus.CAPTURED
        stored = app.repository.event_store.get(payment.id)
        captured = next(e for e in stored if isinstance(e, Payment.Captured))
        assert (
            event_trace(captured)
            == Trace(
                requests[str(order_id)].correlation_id or "",
                f"provider-worker:{payment_id_for(order_id)}:capture",
            )
            == feed.worker.step_trace(app.get_payment(order_id), "capture")
        )
    assert feed.worker.step() == 0
    assert writes.calls == 1, "nothing left to record"


def test_a_payment_cancelled_during_the_round_is_recorded_on_its_newest_state(
    app: PaymentsApplication, gateway: RecordingGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = Feed(app, worker=False)
    first, second = uuid.uuid4(), uuid.uuid4()
    feed.send(placed(first), locked(first), placed(second), locked(second))

    charge = gateway.charge
    raced = False

    def cancelled_while_charging(**kwargs: Any) -> Any:
        nonlocal raced
        result = charge(**kwargs)
        if not raced:  # the customer cancels the first order while its charge is in flight
            raced = True
            feed.batch([envelope(cancelled(first))])
        return result

    monkeypatch.setattr(gateway, "charge", cancelled_while_charging)
    assert feed.worker.step() == 2  # the batch conflicted: both recorded one by one
    assert len(gateway.charges) == 2, "money moved once per order"
    cancelled_payment = app.get_payment(first)
    assert cancelled_payment.is_captured
    assert cancelled_payment.pending_refunds, "captured after the cancellation: refund it"
    assert app.get_payment(second).status is PaymentStatus.CAPTURED
    feed.worker.drain()
    assert app.get_payment(first).refundable_minor == 0


def test_stock_locked_after_the_order_is_one_event_with_the_capture_request(
    app: PaymentsApplication,
) -> None:
    feed = Feed(app)
    order_id = uuid.uuid4()
    feed.send(placed(order_id), locked(order_id))
    stored = list(app.repository.event_store.get(payment_id_for(order_id)))
    assert [type(e).__name__ for e in stored] == [
        "Opened",
        "OrderNoted",
        "CaptureRequested",
        "Captured",
    ]
    payment = app.get_payment(order_id)
    assert payment.stock_locked
    assert payment.status is PaymentStatus.CAPTURED


def test_stock_locked_first_or_without_a_token_keeps_its_own_event(
    app: PaymentsApplication,
) -> None:
    feed = Feed(app)
    first, tokenless = uuid.uuid4(), uuid.uuid4()
    feed.send(locked(first), placed(first), placed(tokenless, token=None), locked(tokenless))
    names = [type(e).__name__ for e in app.repository.event_store.get(payment_id_for(first))]
    assert names == ["Opened", "StockNoted", "OrderNoted", "CaptureRequested", "Captured"]
    names = [type(e).__name__ for e in app.repository.event_store.get(payment_id_for(tokenless))]
    assert names == ["Opened", "OrderNoted", "StockNoted", "Failed"]


def test_a_round_reads_its_payments_with_one_load_and_no_private_copies(
    app: PaymentsApplication, gateway: RecordingGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = Feed(app, worker=False)
    orders = [uuid.uuid4() for _ in range(5)]
    feed.send(*(e for o in orders for e in (placed(o), locked(o))))
    loads: list[list[uuid.UUID]] = []
    load = worker_module.load_aggregates

    def counting_load(application: Any, ids: Any, cache: Any = None) -> Any:
        loads.append(list(ids))
        return load(application, ids, cache)

    def no_find(*args: Any) -> Any:
        raise AssertionError("a round reads its payments in one load, not one by one")

    monkeypatch.setattr(worker_module, "load_aggregates", counting_load)
    monkeypatch.setattr(app, "find", no_find)

    assert feed.worker.step() == 5
    assert loads == [[payment_id_for(o) for o in orders]]
    assert len(gateway.charges) == 5
    assert feed.worker.step() == 0
    assert len(loads) == 1, "nothing open: nothing read"


def test_a_payment_cancelled_during_an_earlier_call_of_the_round_is_never_charged(
    app: PaymentsApplication, gateway: RecordingGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each call outlasts the round's read: the payments still to call are read again.
    monkeypatch.setattr(worker_module, "READ_FRESH_S", 0.0)
    feed = Feed(app, worker=False)
    first, second = uuid.uuid4(), uuid.uuid4()
    feed.send(placed(first), locked(first), placed(second), locked(second))

    charge = gateway.charge

    def second_cancelled_while_charging_the_first(**kwargs: Any) -> Any:
        result = charge(**kwargs)
        if len(gateway.charges) == 1:
            feed.batch([envelope(cancelled(second))])
        return result

    monkeypatch.setattr(gateway, "charge", second_cancelled_while_charging_the_first)
    feed.worker.step()
    assert [c["idempotency_key"] for c in gateway.charges] == [str(payment_id_for(first))]
    assert app.get_payment(first).status is PaymentStatus.CAPTURED
    assert not app.get_payment(second).is_captured
