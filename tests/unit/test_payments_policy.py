"""The payments policy on the in-memory store: messages in (as the inbox applies them), public
events out (as the relay maps them), and how often the gateway was asked to move money."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from fulfilment_kit.contracts import (
    InspectedLine,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    ReturnReceived,
    ShippingAddress,
    StockLine,
    StockLocked,
    StockRejected,
    StockShortage,
    topics,
)
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.messaging import cloudevents
from fulfilment_kit.messaging.inbox import InboundMessage
from fulfilment_kit.tracing import Trace
from payments.application import PaymentsApplication, RequestRefund
from payments.contracts import to_public
from payments.domain import PaymentStatus, payment_id_for
from payments.gateway import (
    ChargeResult,
    RefundResult,
    RetryPolicy,
    SandboxGateway,
)
from payments.metrics import PAYMENTS_TOTAL
from payments.settings import PaymentsSettings
from payments.worker import ProviderWorker
from tests.support.messages import envelope

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
TOTAL = 2 * 1299 + 2499


class RecordingGateway:
    """The sandbox, counting every call made to it."""

    def __init__(self) -> None:
        self.sandbox = SandboxGateway()
        self.charges: list[dict[str, Any]] = []
        self.refunds: list[dict[str, Any]] = []
        self.lookups: list[dict[str, Any]] = []

    def charge(self, **kwargs: Any) -> ChargeResult:
        self.charges.append(kwargs)
        return self.sandbox.charge(**kwargs)

    def refund(self, **kwargs: Any) -> RefundResult:
        self.refunds.append(kwargs)
        return self.sandbox.refund(**kwargs)

    def lookup(self, **kwargs: Any) -> ChargeResult | None:
        self.lookups.append(kwargs)
        return self.sandbox.lookup(**kwargs)


def placed(order_id: uuid.UUID, token: str | None = "tok_visa") -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        lines=[
            OrderLine(sku="MUG-BLUE", quantity=2, unit_price_minor=1299),
            OrderLine(sku="TEE-M-BLACK", quantity=1, unit_price_minor=2499),
        ],
        currency="EUR",
        total_minor=TOTAL,
        shipping_address=ShippingAddress(
            recipient_name="Ada",
            line1="1 St",
            city="Berlin",
            postal_code="10115",
            country_code="DE",
        ),
        placed_at=NOW,
        payment_token=token,
    )


def locked(order_id: uuid.UUID) -> StockLocked:
    return StockLocked(
        order_id=order_id, lines=[StockLine(sku="MUG-BLUE", quantity=2)], locked_at=NOW
    )


def rejected(order_id: uuid.UUID) -> StockRejected:
    shortage = StockShortage(sku="MUG-BLUE", requested=2, available=0)
    return StockRejected(order_id=order_id, shortages=[shortage], rejected_at=NOW)


def cancelled(order_id: uuid.UUID) -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        cancelled_by="customer",
        reason="changed my mind",
        cancelled_at=NOW,
    )


class Clock:
    """The provider worker's clock, moved by the tests."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Feed:
    """Applies messages like the inbox: one partition per topic, tracking = offset + 1; after
    each batch the provider worker makes the calls the batch recorded as intents (as it does
    right after the commit in the service)."""

    def __init__(self, app: PaymentsApplication, *, worker: bool = True) -> None:
        self.app = app
        self.offsets: dict[str, int] = defaultdict(int)
        self.clock = Clock()
        self.worker = ProviderWorker(app, settings=WORKER_SETTINGS, clock=self.clock)
        self.run_worker = worker

    def message(self, env: cloudevents.Envelope) -> InboundMessage:
        topic = topics.physical(type(env.event).topic)
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        return InboundMessage(env, topic, 0, offset)

    def send(self, *events: IntegrationEvent | cloudevents.Envelope) -> list[cloudevents.Envelope]:
        """Apply each (event or envelope) as its own batch; returns the envelopes sent."""
        sent = []
        for item in events:
            env = item if isinstance(item, cloudevents.Envelope) else envelope(item)
            self.batch([env])
            sent.append(env)
        return sent

    def batch(self, envs: Sequence[cloudevents.Envelope]) -> None:
        messages = [self.message(env) for env in envs]
        topic = messages[-1].topic
        tracking = Tracking(f"payments:{topic}:0", messages[-1].offset + 1)
        self.app.process_messages(messages, tracking)
        if self.run_worker:
            self.worker.drain()


WORKER_SETTINGS = PaymentsSettings(
    reconcile_first_s=1, reconcile_max_s=8, reconcile_attempts=4, unknown_deadline_s=60
)


def make_app(gateway: Any) -> PaymentsApplication:
    return PaymentsApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"},
        gateway=gateway,
        retry=RetryPolicy(attempts=3, backoff_s=0, sleep=lambda _: None),
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


def published(app: PaymentsApplication) -> list[IntegrationEvent]:
    """The public events the relay would publish, in order."""
    notifications = app.recorder.select_notifications(1, 10_000)
    return [
        outbound.event
        for n in notifications
        for outbound in to_public(app.mapper.to_domain_event(n))
    ]


@pytest.mark.parametrize("stock_first", [False, True], ids=["placed-first", "locked-first"])
def test_both_arrival_orders_capture_exactly_once(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway, stock_first: bool
) -> None:
    order_id = uuid.uuid4()
    events: list[IntegrationEvent] = [placed(order_id), locked(order_id)]
    first, second = reversed(events) if stock_first else events
    feed.send(first)
    assert gateway.charges == []
    waiting = "awaiting_order" if stock_first else "awaiting_stock"
    assert app.get_payment(order_id).status == waiting
    feed.send(second)

    assert len(gateway.charges) == 1
    charge = gateway.charges[0]
    assert charge["idempotency_key"] == str(payment_id_for(order_id))
    assert (charge["amount_minor"], charge["currency"]) == (TOTAL, "EUR")
    events = published(app)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, PaymentCaptured)
    assert (event.order_id, event.payment_id) == (order_id, payment_id_for(order_id))
    assert (event.amount_minor, event.currency) == (TOTAL, "EUR")
    assert "tok_" not in event.model_dump_json()
    payment = app.get_payment(order_id)
    assert payment.status is PaymentStatus.CAPTURED
    assert payment.captured_minor == TOTAL


def test_order_and_stock_in_one_batch_capture_once(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    feed.batch([envelope(placed(order_id)), envelope(locked(order_id))])
    assert len(gateway.charges) == 1
    assert [type(e) for e in published(app)] == [PaymentCaptured]


@pytest.mark.parametrize(
    ("token", "outcome", "charge_calls"),
    [
        ("tok_visa", "captured", 1),
        ("tok_mastercard", "captured", 1),
        ("tok_decline", "card_declined", 1),
        ("tok_insufficient_funds", "insufficient_funds", 1),
        ("tok_expired", "expired_card", 1),
        ("tok_fraud", "fraud_suspected", 1),
        ("tok_gateway_down", "unknown", 3),
        ("tok_flaky", "captured", 2),
        (None, "card_declined", 0),
    ],
)
def test_each_sandbox_token_outcome(
    app: PaymentsApplication,
    feed: Feed,
    gateway: RecordingGateway,
    token: str | None,
    outcome: str,
    charge_calls: int,
) -> None:
    order_id = uuid.uuid4()
    feed.send(placed(order_id, token), locked(order_id))
    assert len(gateway.charges) == charge_calls
    events = published(app)
    payment = app.get_payment(order_id)
    if outcome == "unknown":  # the provider never answered: not a failure (issue 7, defect 2)
        assert events == []
        assert payment.status is PaymentStatus.UNKNOWN
        assert payment.failure_reason is None
        return
    assert len(events) == 1
    if outcome == "captured":
        assert isinstance(events[0], PaymentCaptured)
        assert payment.status is PaymentStatus.CAPTURED
        assert payment.failure_reason is None
    else:
        assert isinstance(events[0], PaymentFailed)
        assert events[0].reason_code == outcome
        assert (events[0].amount_minor, events[0].currency) == (TOTAL, "EUR")
        assert payment.status is PaymentStatus.FAILED
        assert payment.failure_reason == outcome
        assert payment.captured_minor == 0


def test_redelivery_at_new_offsets_charges_no_second_time(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    sent = feed.send(placed(order_id), locked(order_id))
    feed.send(*sent)  # the same ce_ids again, at later offsets (e.g. a producer retry)
    feed.send(placed(order_id), locked(order_id))  # even with new ce_ids
    assert len(gateway.charges) == 1
    assert [type(e) for e in published(app)] == [PaymentCaptured]
    # opened, order, capture requested (which notes the stock locked too), captured
    assert app.get_payment(order_id).version == 4


def test_a_worker_crash_after_the_call_repeats_the_charge_but_moves_money_once(
    app: PaymentsApplication, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    feed = Feed(app, worker=False)
    feed.send(placed(order_id), locked(order_id))
    payment = app.get_payment(order_id)
    assert payment.capture_key == str(payment_id_for(order_id))
    # The worker called the provider, then died before recording the outcome.
    gateway.charge(
        idempotency_key=payment.capture_key, amount_minor=TOTAL, currency="EUR", token="tok_visa"
    )
    feed.worker.drain()  # a new worker finds the intent in the log and calls again
    assert len(gateway.charges) == 2
    assert {c["idempotency_key"] for c in gateway.charges} == {str(payment_id_for(order_id))}
    assert gateway.sandbox.money_moves == 1
    assert [type(e) for e in published(app)] == [PaymentCaptured]


def test_cancel_after_capture_refunds_everything_once(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    feed.send(placed(order_id), locked(order_id))
    [cancel] = feed.send(cancelled(order_id))
    feed.send(cancel)  # redelivered
    feed.send(cancelled(order_id))  # a second cancellation: nothing left to refund

    assert len(gateway.refunds) == 1
    events = published(app)
    assert [type(e) for e in events] == [PaymentCaptured, PaymentRefunded]
    refund = events[1]
    assert isinstance(refund, PaymentRefunded)
    assert refund.reason == "order_cancelled"
    assert refund.full_refund is True
    assert refund.refund_minor == refund.total_refunded_minor == TOTAL
    payment = app.get_payment(order_id)
    assert payment.status is PaymentStatus.REFUNDED
    assert payment.refunded_minor == TOTAL


def test_cancel_after_a_partial_refund_refunds_the_rest(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway
) -> None:
    order_id = uuid.uuid4()
    feed.send(placed(order_id), locked(order_id))
    app.refund(RequestRefund(order_id, 1000, "goodwill", "k-1", Trace("corr", "http:k-1")))
    feed.send(cancelled(order_id))
    refunds = [e for e in published(app) if isinstance(e, PaymentRefunded)]
    assert [(r.refund_minor, r.total_refunded_minor, r.full_refund) for r in refunds] == [
        (1000, 1000, False),
        (TOTAL - 1000, TOTAL, True),
    ]
    assert refunds[1].reason == "order_cancelled"
    assert sum(r["amount_minor"] for r in gateway.refunds) == TOTAL


@pytest.mark.parametrize("cancel_at", ["first", "after-order", "after-stock"])
def test_cancel_before_capture_means_never_capture(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway, cancel_at: str
) -> None:
    order_id = uuid.uuid4()
    sequence: list[IntegrationEvent] = [placed(order_id), locked(order_id)]
    index = {"first": 0, "after-order": 1, "after-stock": 1}[cancel_at]
    if cancel_at == "after-stock":
        sequence.reverse()
    sequence.insert(index, cancelled(order_id))
    feed.send(*sequence)
    assert gateway.charges == []
    assert published(app) == []
    assert app.get_payment(order_id).status is PaymentStatus.CANCELLED


@pytest.mark.parametrize("rejected_first", [True, False])
def test_stock_rejected_voids_the_payment(
    app: PaymentsApplication, feed: Feed, gateway: RecordingGateway, rejected_first: bool
) -> None:
    order_id = uuid.uuid4()
    events: list[IntegrationEvent] = [rejected(order_id), placed(order_id)]
    if not rejected_first:
        events.reverse()
    feed.send(*events, cancelled(order_id))
    assert gateway.charges == []
    assert published(app) == []
    assert app.get_payment(order_id).status is PaymentStatus.VOIDED


def test_return_events_and_foreign_events_are_ignored(app: PaymentsApplication, feed: Feed) -> None:
    order_id = uuid.uuid4()
    received = ReturnReceived(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        return_id=uuid.uuid4(),
        rma_number="RMA-ABCD",
        lines=[InspectedLine(sku="MUG-BLUE", quantity=1, result="restockable")],
        refund_minor=100,
        currency="EUR",
        received_at=NOW,
    )
    feed.send(received)
    assert app.recorder.max_notification_id() is None
    assert app.recorder.max_tracking_id(f"payments:{topics.physical(topics.CUSTOMER_SERVICE)}:0")


def test_outcomes_are_counted_without_ids(feed: Feed) -> None:
    def value(outcome: str) -> float:
        return PAYMENTS_TOTAL.labels(outcome)._value.get()  # type: ignore[no-any-return]

    before = {o: value(o) for o in ("captured", "failed", "refunded")}
    captured_id, failed_id = uuid.uuid4(), uuid.uuid4()
    feed.send(placed(captured_id), locked(captured_id), cancelled(captured_id))
    feed.send(placed(failed_id, "tok_decline"), locked(failed_id))
    assert {o: value(o) - before[o] for o in before} == {
        "captured": 1,
        "failed": 1,
        "refunded": 1,
    }
