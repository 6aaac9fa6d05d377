"""The shipping policy over order events, on the in-memory event store (no Kafka)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from fulfilment_kit.contracts import (
    IntegrationEvent,
    OrderCancelled,
    OrderLine,
    OrderPaid,
    OrderPlaced,
    ShipmentDelivered,
    ShipmentException,
    ShipmentShipped,
    ShippingAddress,
    topics,
)
from fulfilment_kit.messaging.inbox import InboundMessage
from fulfilment_kit.tracing import Trace
from shipping.application import (
    CarrierRefused,
    CarrierUpdate,
    ShipmentNotFound,
    ShippingApplication,
)
from shipping.contracts import to_public
from shipping.domain import InvalidTransition, ShipmentStatus, shipment_id_for
from shipping.gateway import Booking
from tests.support.messages import inbound

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class Feed:
    """Delivers public events to the application as the inbox would, offset by offset."""

    def __init__(self, app: ShippingApplication) -> None:
        self.app = app
        self.offsets: dict[str, int] = {}

    def message(
        self, event: IntegrationEvent, *, ce_id: str | None = None, offset: int | None = None
    ) -> InboundMessage:
        topic = topics.physical(event.topic)
        if offset is None:
            offset = self.offsets.get(topic, -1) + 1
        self.offsets[topic] = offset
        return inbound(event, offset=offset, ce_id=ce_id, correlation_id="corr-1")

    def send(self, *messages: InboundMessage) -> None:
        last = messages[-1]
        tracking = Tracking(f"shipping:{last.topic}:{last.partition}", last.offset + 1)
        self.app.process_messages(list(messages), tracking)


def placed(order_id: uuid.UUID) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        lines=[
            OrderLine(sku="MUG-BLUE", quantity=2, unit_price_minor=1299),
            OrderLine(sku="TEE-M", quantity=1, unit_price_minor=2499),
        ],
        currency="EUR",
        total_minor=5097,
        shipping_address=ShippingAddress(
            recipient_name="Ada Example",
            line1="1 Sample Street",
            city="Berlin",
            postal_code="10115",
            country_code="DE",
        ),
        placed_at=NOW,
    )


def paid(order_id: uuid.UUID) -> OrderPaid:
    return OrderPaid(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        amount_minor=5097,
        currency="EUR",
        paid_at=NOW,
    )


def cancelled(order_id: uuid.UUID) -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        cancelled_by="customer",
        reason="changed my mind",
        cancelled_at=NOW,
    )


@pytest.fixture
def app() -> ShippingApplication:
    # The service's clock is NOW: carrier event times are checked against it.
    return ShippingApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=lambda: NOW)


@pytest.fixture
def feed(app: ShippingApplication) -> Feed:
    return Feed(app)


def newest(app: ShippingApplication) -> int:
    return app.recorder.max_notification_id() or 0


def test_placed_then_paid_is_packing(app: ShippingApplication, feed: Feed) -> None:
    order_id = uuid.uuid4()
    placed_msg = feed.message(placed(order_id))
    feed.send(placed_msg)
    shipment = app.get_shipment(order_id)
    assert shipment.status is ShipmentStatus.AWAITING_PAYMENT
    assert [(x.sku, x.quantity) for x in shipment.lines] == [("MUG-BLUE", 2), ("TEE-M", 1)]
    assert shipment.address.city == "Berlin"
    paid_msg = feed.message(paid(order_id))
    feed.send(paid_msg)
    shipment = app.get_shipment(order_id)
    assert shipment.status is ShipmentStatus.PACKING
    assert shipment.id == shipment_id_for(order_id)
    # Each reaction is caused by the message it reacts to, in the message's conversation.
    events = list(app.repository.event_store.get(shipment.id))
    assert [e.trace for e in events] == [  # type: ignore[attr-defined]
        Trace.caused_by(placed_msg.envelope.id, "corr-1"),
        Trace.caused_by(paid_msg.envelope.id, "corr-1"),
    ]
    assert app.recorder.max_tracking_id(f"shipping:{paid_msg.topic}:0") == paid_msg.offset + 1


def test_placed_and_paid_in_one_batch(app: ShippingApplication, feed: Feed) -> None:
    order_id = uuid.uuid4()
    feed.send(feed.message(placed(order_id)), feed.message(paid(order_id)))
    assert app.get_shipment(order_id).status is ShipmentStatus.PACKING
    assert app.get_shipment(order_id).version == 2


def test_redelivery_at_a_new_offset_has_no_second_effect(
    app: ShippingApplication, feed: Feed
) -> None:
    order_id = uuid.uuid4()
    first_placed = feed.message(placed(order_id))
    first_paid = feed.message(paid(order_id))
    feed.send(first_placed)
    feed.send(first_paid)
    before = newest(app)
    # The relay retried: the same events (same ce_id) again at later offsets.
    feed.send(feed.message(first_placed.envelope.event, ce_id=first_placed.envelope.id))
    feed.send(feed.message(first_paid.envelope.event, ce_id=first_paid.envelope.id))
    assert newest(app) == before
    assert app.get_shipment(order_id).version == 2


def test_the_same_offset_twice_is_rejected_by_tracking(
    app: ShippingApplication, feed: Feed
) -> None:
    message = feed.message(placed(uuid.uuid4()))
    feed.send(message)
    with pytest.raises(IntegrityError):
        feed.send(message)


def test_cancelled_before_shipping_refuses_dispatch(app: ShippingApplication, feed: Feed) -> None:
    order_id = uuid.uuid4()
    feed.send(feed.message(placed(order_id)))
    feed.send(feed.message(paid(order_id)))
    feed.send(feed.message(cancelled(order_id)))
    assert app.get_shipment(order_id).status is ShipmentStatus.CANCELLED
    with pytest.raises(InvalidTransition, match="cancelled"):
        app.dispatch(order_id, Trace("c", "http:1"))


def test_cancelled_after_shipping_changes_nothing(app: ShippingApplication, feed: Feed) -> None:
    order_id = uuid.uuid4()
    feed.send(feed.message(placed(order_id)), feed.message(paid(order_id)))
    app.dispatch(order_id, Trace("c", "http:1"))
    before = newest(app)
    feed.send(feed.message(cancelled(order_id)))
    assert app.get_shipment(order_id).status is ShipmentStatus.SHIPPED
    assert newest(app) == before


def test_paid_without_placed_fails_loudly(app: ShippingApplication, feed: Feed) -> None:
    with pytest.raises(ShipmentNotFound):
        feed.send(feed.message(paid(uuid.uuid4())))


def test_dispatch_then_carrier_updates_map_to_public_events(
    app: ShippingApplication, feed: Feed
) -> None:
    order_id = uuid.uuid4()
    feed.send(feed.message(placed(order_id)), feed.message(paid(order_id)))
    shipment = app.dispatch(order_id, Trace("corr-http", "http:dispatch:1")).shipment
    tracking = shipment.tracking_number
    assert tracking is not None

    def update(status: str, **kw: object) -> None:
        app.carrier_update(
            CarrierUpdate(
                tracking_number=tracking,
                status=status,  # type: ignore[arg-type]
                reason_code=kw.get("reason_code"),  # type: ignore[arg-type]
                reason=None,
                occurred_at=NOW,
                trace=Trace("corr-carrier", f"carrier:{status}"),
            )
        )

    update("in_transit")
    update("exception", reason_code="carrier_delay")
    update("delivered")
    notifications = app.recorder.select_notifications(1, 100)
    public = [o for n in notifications for o in to_public(app.mapper.to_domain_event(n))]
    kinds = [type(o.event) for o in public]
    assert kinds == [ShipmentShipped, ShipmentException, ShipmentDelivered]
    shipped_out, exception_out, delivered_out = public
    assert isinstance(shipped_out.event, ShipmentShipped)
    assert shipped_out.event.order_id == order_id
    assert shipped_out.event.shipment_id == shipment.id
    assert shipped_out.event.tracking_number == tracking
    assert shipped_out.event.carrier == "sandbox-post"
    assert (shipped_out.correlation_id, shipped_out.causation_id) == (
        "corr-http",
        "http:dispatch:1",
    )
    assert isinstance(exception_out.event, ShipmentException)
    assert exception_out.event.reason_code == "carrier_delay"
    assert exception_out.event.reason == "carrier reported carrier_delay"
    assert isinstance(delivered_out.event, ShipmentDelivered)
    assert delivered_out.event.delivered_at == NOW
    assert app.get_shipment(order_id).status is ShipmentStatus.DELIVERED


def test_a_tracking_number_already_in_use_is_a_refusal() -> None:
    class Repeating:
        def book(self, **_: object) -> Booking:
            return Booking("dupe-post", "DUPE-1")

    app = ShippingApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, carrier=Repeating())
    feed = Feed(app)
    first, second = uuid.uuid4(), uuid.uuid4()
    for order_id in (first, second):
        feed.send(feed.message(placed(order_id)), feed.message(paid(order_id)))
    app.dispatch(first, Trace("c", "1"))
    with pytest.raises(CarrierRefused, match="already used"):
        app.dispatch(second, Trace("c", "2"))
    assert app.get_shipment(second).status is ShipmentStatus.PACKING
