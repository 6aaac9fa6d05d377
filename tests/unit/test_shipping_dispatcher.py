"""Auto-dispatch: which shipments it ships and when, with an injected clock (no sleeping)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from fulfilment_kit.tracing import Trace
from shipping.application import ShippingApplication
from shipping.dispatcher import AutoDispatcher
from shipping.domain import Shipment, ShipmentStatus, shipment_id_for
from shipping.gateway import RetryingCarrier, SandboxCarrier
from tests.unit.test_shipping_policy import Feed, cancelled, paid, placed

DELAY_S = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def sandbox() -> SandboxCarrier:
    return SandboxCarrier()


@pytest.fixture
def app(sandbox: SandboxCarrier) -> ShippingApplication:
    return ShippingApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"},
        carrier=RetryingCarrier(sandbox, attempts=3, sleep=lambda _: None),
    )


@pytest.fixture
def feed(app: ShippingApplication) -> Feed:
    return Feed(app)


def packing_order(feed: Feed) -> uuid.UUID:
    order_id = uuid.uuid4()
    feed.send(feed.message(placed(order_id)), feed.message(paid(order_id)))
    return order_id


def dispatcher(app: ShippingApplication, clock: Clock) -> AutoDispatcher:
    return AutoDispatcher(app, after_s=DELAY_S, clock=clock)


def status(app: ShippingApplication, order_id: uuid.UUID) -> ShipmentStatus:
    return app.get_shipment(order_id).status


def test_ships_a_packing_shipment_once_it_waited_long_enough(
    app: ShippingApplication, feed: Feed
) -> None:
    order_id = packing_order(feed)
    clock = Clock()
    auto = dispatcher(app, clock)
    assert auto.step() == 0
    assert list(auto.packing) == [shipment_id_for(order_id)]
    clock.advance(DELAY_S - 1)
    assert auto.step() == 0
    assert status(app, order_id) is ShipmentStatus.PACKING
    clock.advance(2)
    assert auto.step() == 1
    shipment = app.get_shipment(order_id)
    assert shipment.status is ShipmentStatus.SHIPPED
    assert shipment.tracking_number is not None
    assert auto.packing == {}
    assert auto.step() == 0  # its own Shipped event in the log changes nothing


def test_auto_dispatch_continues_the_order_conversation(
    app: ShippingApplication, feed: Feed
) -> None:
    order_id = packing_order(feed)
    clock = Clock()
    auto = dispatcher(app, clock)
    clock.advance(DELAY_S)
    auto.step()
    events = list(app.repository.event_store.get(shipment_id_for(order_id)))
    shipped_trace = events[-1].trace  # type: ignore[attr-defined]
    assert shipped_trace.correlation_id == "corr-1"
    assert shipped_trace.causation_id == f"auto-dispatch:{shipment_id_for(order_id)}"


def test_awaiting_payment_and_cancelled_shipments_are_never_shipped(
    app: ShippingApplication, feed: Feed
) -> None:
    unpaid = uuid.uuid4()
    feed.send(feed.message(placed(unpaid)))
    cancelled_order = packing_order(feed)
    clock = Clock()
    auto = dispatcher(app, clock)
    auto.step()
    feed.send(feed.message(cancelled(cancelled_order)))
    clock.advance(DELAY_S * 10)
    assert auto.step() == 0
    assert status(app, unpaid) is ShipmentStatus.AWAITING_PAYMENT
    assert status(app, cancelled_order) is ShipmentStatus.CANCELLED
    assert auto.packing == {}


def test_shipped_by_hand_meanwhile_is_dropped_without_booking(
    app: ShippingApplication, feed: Feed, sandbox: SandboxCarrier
) -> None:
    order_id = packing_order(feed)
    clock = Clock()
    auto = dispatcher(app, clock)
    auto.step()
    app.dispatch(order_id, Trace("c", "http:1"))
    calls = sandbox.calls
    clock.advance(DELAY_S)
    assert auto.step() == 0
    assert sandbox.calls == calls
    assert auto.packing == {}


def test_a_dispatch_refused_in_between_is_forgotten(
    app: ShippingApplication, feed: Feed, sandbox: SandboxCarrier
) -> None:
    order_id = packing_order(feed)
    clock = Clock()
    auto = dispatcher(app, clock)
    auto.catch_up()
    app.dispatch(order_id, Trace("c", "http:1"))  # not yet read from the log
    clock.advance(DELAY_S)
    assert auto.dispatch_due() == 0
    assert auto.packing == {}


def test_carrier_outage_keeps_it_packing_and_the_next_round_ships_it(
    app: ShippingApplication, feed: Feed, sandbox: SandboxCarrier
) -> None:
    order_id = packing_order(feed)
    clock = Clock()
    auto = dispatcher(app, clock)
    clock.advance(DELAY_S)
    sandbox.fail_next = 3  # all three attempts of this round fail
    assert auto.step() == 0
    assert status(app, order_id) is ShipmentStatus.PACKING
    assert shipment_id_for(order_id) in auto.packing
    assert auto.step() == 1
    assert status(app, order_id) is ShipmentStatus.SHIPPED


def test_a_new_process_rebuilds_its_set_from_the_start_of_the_log(
    app: ShippingApplication, feed: Feed
) -> None:
    waiting = [packing_order(feed) for _ in range(3)]
    clock = Clock()
    first = dispatcher(app, clock)
    clock.advance(DELAY_S)
    first.step()
    assert {status(app, o) for o in waiting} == {ShipmentStatus.SHIPPED}
    later = packing_order(feed)
    restarted = AutoDispatcher(app, after_s=DELAY_S, clock=clock, batch_size=2)
    restarted.catch_up()
    assert list(restarted.packing) == [shipment_id_for(later)]
    assert restarted.log.position == app.recorder.max_notification_id()


def test_longest_waiting_first_and_only_those_due(app: ShippingApplication, feed: Feed) -> None:
    clock = Clock()
    auto = dispatcher(app, clock)
    first = packing_order(feed)
    second = packing_order(feed)
    auto.catch_up()
    since = {sid: p.since for sid, p in auto.packing.items()}
    cutoff = since[shipment_id_for(second)] + timedelta(seconds=DELAY_S)
    assert auto.due(cutoff) == [shipment_id_for(first), shipment_id_for(second)]
    assert auto.due(since[shipment_id_for(first)]) == []


def test_zero_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="greater than zero"):
        AutoDispatcher(
            ShippingApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}), after_s=0
        )


def test_many_due_shipments_ship_in_one_transaction(app: ShippingApplication, feed: Feed) -> None:
    clock = Clock()
    orders = [packing_order(feed) for _ in range(5)]
    auto = dispatcher(app, clock)
    auto.catch_up()
    before = app.recorder.max_notification_id() or 0
    clock.advance(DELAY_S + 1)
    assert auto.dispatch_due() == 5
    assert all(status(app, o) is ShipmentStatus.SHIPPED for o in orders)
    # 5 shipments + 5 tracking indices, all written by one save
    written = app.recorder.select_notifications(before + 1, 100)
    assert len(written) == 10


def test_a_batch_with_a_cancelled_shipment_falls_back_to_one_by_one(
    app: ShippingApplication, feed: Feed
) -> None:
    clock = Clock()
    orders = [packing_order(feed) for _ in range(3)]
    auto = dispatcher(app, clock)
    auto.catch_up()
    feed.send(feed.message(cancelled(orders[1])))  # cancelled after the dispatcher saw it packing
    clock.advance(DELAY_S + 1)
    assert auto.dispatch_due() == 2
    assert [status(app, o) for o in orders] == [
        ShipmentStatus.SHIPPED,
        ShipmentStatus.CANCELLED,
        ShipmentStatus.SHIPPED,
    ]


def test_the_events_that_end_packing_are_followed_without_decoding_their_state(
    app: ShippingApplication, feed: Feed
) -> None:
    order_id = packing_order(feed)
    shipment = shipment_id_for(order_id)
    auto = dispatcher(app, Clock())
    auto.catch_up()
    assert list(auto.packing) == [shipment]
    version = app.get_shipment(order_id).version
    # A Shipped event whose state nobody could decode: the dispatcher needs only its id.
    app.recorder.insert_events(
        [StoredEvent(shipment, version + 1, get_topic(Shipment.Shipped), b"not decoded")]
    )
    auto.catch_up()
    assert auto.packing == {}
