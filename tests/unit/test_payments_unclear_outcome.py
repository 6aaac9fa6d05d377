"""Issue 7, defects 2 and 6 (payments): an unclear provider answer is `unknown`, never
`failed`, and is reconciled by a lookup; the consumer's batch never calls the provider; every
refund is recorded before the provider is called and retried until done."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from fulfilment_kit.contracts import (
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    PaymentUnresolved,
    ShipmentCancelled,
)
from fulfilment_kit.tracing import Trace
from payments.application import PaymentsApplication, RequestRefund
from payments.domain import PaymentStatus, cancellation_refund_id, payment_id_for
from payments.gateway import HttpPaymentGateway, RefundResult, TransientGatewayError
from tests.unit.test_payments_policy import (
    NOW,
    TOTAL,
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


@pytest.fixture
def feed(app: PaymentsApplication) -> Feed:
    return Feed(app)


def test_the_consumer_batch_records_the_intent_and_never_calls_the_provider(
    app: PaymentsApplication, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    feed = Feed(app, worker=False)
    feed.send(placed(order_id), locked(order_id))
    assert gateway.charges == []
    payment = app.get_payment(order_id)
    assert payment.status is PaymentStatus.AUTHORISING
    assert payment.capture_key == str(payment_id_for(order_id))
    assert published(app) == []  # the intent is private
    feed.worker.drain()
    assert len(gateway.charges) == 1
    assert [type(e) for e in published(app)] == [PaymentCaptured]


def test_a_lost_response_is_unknown_then_captured_after_a_lookup(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    feed.send(placed(order_id, "tok_lost_response"), locked(order_id))
    payment = app.get_payment(order_id)
    assert payment.status is PaymentStatus.UNKNOWN  # today's main: failed, order cancelled
    assert payment.failure_reason is None
    assert published(app) == []
    assert gateway.sandbox.money_moves == 1  # the provider did charge the card
    feed.clock.advance(1)
    feed.worker.drain()
    assert len(gateway.lookups) == 1
    assert [type(e) for e in published(app)] == [PaymentCaptured]
    payment = app.get_payment(order_id)
    assert payment.status is PaymentStatus.CAPTURED
    assert gateway.sandbox.money_moves == 1


def test_an_outcome_unknown_past_the_bound_opens_a_case_once_and_never_fails(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    feed.send(placed(order_id, "tok_gateway_down"), locked(order_id))
    for _ in range(10):  # lookups with backoff (1, 2, 4, 8, 8 ... s): bounded retries
        feed.clock.advance(8)
        feed.worker.drain()
    events = published(app)
    assert [type(e) for e in events] == [PaymentUnresolved]
    unresolved = events[0]
    assert isinstance(unresolved, PaymentUnresolved)
    assert (unresolved.order_id, unresolved.amount_minor, unresolved.currency) == (
        order_id,
        TOTAL,
        "EUR",
    )
    assert unresolved.lookups >= 4
    assert not any(isinstance(e, PaymentFailed) for e in events)
    assert app.get_payment(order_id).status is PaymentStatus.UNKNOWN
    assert 4 <= len(gateway.lookups) <= 10


def test_a_lookup_that_finds_nothing_charges_again_with_the_same_key(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    feed.send(placed(order_id, "tok_flaky"), locked(order_id))  # 1st attempt down, 2nd ok
    assert [type(e) for e in published(app)] == [PaymentCaptured]
    assert {c["idempotency_key"] for c in gateway.charges} == {str(payment_id_for(order_id))}


def test_a_definite_decline_still_fails(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    feed.send(placed(order_id, "tok_insufficient_funds"), locked(order_id))
    [failed] = published(app)
    assert isinstance(failed, PaymentFailed)
    assert failed.reason_code == "insufficient_funds"


def test_cancel_while_the_capture_is_in_flight_asks_the_provider_and_never_charges(
    app: PaymentsApplication, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    feed = Feed(app, worker=False)
    feed.send(placed(order_id), locked(order_id), cancelled(order_id))
    feed.worker.drain()
    assert len(gateway.lookups) == 1
    # Abandoned only once lookups found nothing for capture_settle_s (a charge sent just
    # before the cancellation could still land: see the test below).
    for _ in range(8):
        feed.clock.advance(2)
        feed.worker.drain()
    assert gateway.charges == []
    assert 2 <= len(gateway.lookups) <= 8
    assert app.get_payment(order_id).status is PaymentStatus.CANCELLED
    assert published(app) == []


def test_cancel_after_a_lost_response_refunds_what_the_provider_took(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    feed.send(placed(order_id, "tok_lost_response"), locked(order_id))
    assert app.get_payment(order_id).status is PaymentStatus.UNKNOWN
    feed.send(cancelled(order_id))
    feed.clock.advance(1)
    feed.worker.drain()
    events = published(app)
    assert [type(e) for e in events] == [PaymentCaptured, PaymentRefunded]
    refund = events[1]
    assert isinstance(refund, PaymentRefunded)
    assert (refund.reason, refund.full_refund) == ("order_cancelled", True)
    assert refund.refund_id == cancellation_refund_id(order_id)
    assert app.get_payment(order_id).status is PaymentStatus.REFUNDED


class RefundsDownFor(RecordingGateway):
    """Refunds fail transiently the first `times` calls."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.down = times

    def refund(self, **kwargs: Any) -> RefundResult:
        if self.down > 0:
            self.down -= 1
            self.refunds.append(kwargs)
            raise TransientGatewayError("down")
        return super().refund(**kwargs)


def test_a_cancellation_refund_is_recorded_first_and_retried_until_done() -> None:
    down = RefundsDownFor(times=7)  # more than one round's retries, several rounds
    app = make_app(down)
    feed = Feed(app)
    order_id = uuid.uuid4()
    feed.send(placed(order_id), locked(order_id), cancelled(order_id))
    payment = app.get_payment(order_id)
    refund_id = cancellation_refund_id(order_id)
    pending = payment.pending_refund(refund_id)
    assert pending is not None  # recorded before the provider answered
    assert pending.amount_minor == TOTAL
    assert payment.refundable_minor == 0  # nothing else can be refunded meanwhile
    for _ in range(5):
        feed.clock.advance(8)
        feed.worker.drain()
    assert {r["idempotency_key"] for r in down.refunds} == {str(refund_id)}
    assert [type(e) for e in published(app)] == [PaymentCaptured, PaymentRefunded]
    assert app.get_payment(order_id).status is PaymentStatus.REFUNDED
    assert down.sandbox.money_moves == 2  # one charge, one refund


def test_an_http_refund_left_pending_by_the_provider_is_finished_by_the_worker() -> None:
    app = make_app(RefundsDownFor(times=3))  # the request's own retries all fail
    feed = Feed(app)
    order_id = uuid.uuid4()
    feed.send(placed(order_id), locked(order_id))
    command = RequestRefund(order_id, 700, "goodwill", "k-1", Trace("corr", "http:k-1"))
    try:
        app.refund(command)
    except TransientGatewayError:
        pass
    else:  # pragma: no cover - the test's premise
        raise AssertionError("the provider was meant to be down")
    assert app.get_payment(order_id).pending_refund_minor == 700
    feed.worker.drain()
    issued = app.refund(command)  # the same key: the one refund, now done
    assert not issued.created
    assert issued.refund.amount_minor == 700
    assert app.get_payment(order_id).refunded_minor == 700
    assert len([e for e in published(app) if isinstance(e, PaymentRefunded)]) == 1


def test_closing_the_application_closes_the_provider_client() -> None:
    http = HttpPaymentGateway(
        "http://127.0.0.1:9",
        "key",
        transport=httpx.MockTransport(lambda request: httpx.Response(500)),
    )
    make_app(http).close()
    assert http._client.is_closed


def test_shipment_cancelled_and_order_cancelled_give_one_cancellation_refund(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway
) -> None:
    """Issue 7, defect 3: payments refunds on shipping's answer; the order's cancelled event
    that follows it is the same cancellation (refund id from the order id)."""
    order_id = uuid.uuid4()
    feed.send(placed(order_id), locked(order_id))
    held = ShipmentCancelled(order_id=order_id, shipment_id=uuid.uuid4(), cancelled_at=NOW)
    feed.send(held, cancelled(order_id), held)
    refunds = [e for e in published(app) if isinstance(e, PaymentRefunded)]
    assert [(r.refund_id, r.refund_minor) for r in refunds] == [
        (cancellation_refund_id(order_id), TOTAL)
    ]
    assert len(gateway.refunds) == 1


def test_a_sealed_token_is_opened_to_charge_and_an_erased_one_is_never_sent(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway
) -> None:
    paid, erased = uuid.uuid4(), uuid.uuid4()
    for order_id in (paid, erased):
        event = placed(order_id, None)
        token = app.vault.seal(event.customer_id, "payment", "tok_visa")
        event = event.model_copy(update={"sealed_payment_token": token})
        if order_id == erased:
            app.vault.erase(event.customer_id)
        feed.send(event, locked(order_id))
    assert [c["token"] for c in gateway.charges] == ["tok_visa"]  # in clear only to charge
    outcomes = {type(e): e for e in published(app)}
    assert outcomes[PaymentCaptured].order_id == paid
    assert outcomes[PaymentFailed].order_id == erased


class LandsLate(RecordingGateway):
    """The first charge times out at the client while the provider is still working on it:
    lookups find nothing until `land()`, when the provider completes that charge."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: dict[str, Any] | None = None
        self.landed = False

    def charge(self, **kwargs: Any) -> Any:
        if not self.landed:
            self.charges.append(kwargs)
            self.in_flight = kwargs
            raise TransientGatewayError("timed out (the provider is still processing it)")
        return super().charge(**kwargs)

    def land(self) -> None:
        assert self.in_flight is not None
        self.sandbox.charge(**self.in_flight)
        self.landed = True


def test_a_charge_that_lands_after_a_lookup_found_nothing_is_refunded_not_lost() -> None:
    """Cancelled while a timed-out charge is still in flight: a lookup that finds nothing
    right away is not proof (the provider may complete it a moment later), so the capture is
    abandoned only once it has found nothing for `capture_settle_s`; a late charge is then
    recorded and refunded, never left at the provider unrecorded."""
    late = LandsLate()
    app = make_app(late)
    feed = Feed(app, worker=False)
    order_id = uuid.uuid4()
    feed.send(placed(order_id), locked(order_id))
    feed.worker.drain()
    assert app.get_payment(order_id).status is PaymentStatus.UNKNOWN
    feed.send(cancelled(order_id))
    feed.clock.advance(1)
    feed.worker.drain()  # the lookup finds nothing yet
    assert len(late.lookups) >= 1
    assert app.get_payment(order_id).status is PaymentStatus.UNKNOWN  # not abandoned yet
    late.land()
    for _ in range(6):
        feed.clock.advance(8)
        feed.worker.drain()
    assert [type(e) for e in published(app)] == [PaymentCaptured, PaymentRefunded]
    assert app.get_payment(order_id).status is PaymentStatus.REFUNDED
    assert late.sandbox.money_moves == 2  # the late charge and its refund
