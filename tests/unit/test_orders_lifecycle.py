"""The order status machine driven by other services' events, cancellation and deadlines."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from eventsourcing.persistence import Tracking

from fulfilment_kit.contracts import (
    PaymentCaptured,
    PaymentFailed,
    ShipmentCancellationRefused,
    ShipmentCancelled,
    ShipmentDelivered,
    ShipmentShipped,
    StockLine,
    StockLocked,
    StockRejected,
    StockShortage,
)
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.tracing import Trace
from orders.application import OrdersApplication, PlaceOrder
from orders.contracts import to_public
from orders.deadlines import DeadlineWatch
from orders.domain import Address, OrderConflict, OrderLine, OrderStatus
from tests.support.messages import inbound

NOW = datetime.now(UTC)
offsets = count()


@pytest.fixture
def app() -> OrdersApplication:
    return OrdersApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def place(app: OrdersApplication) -> uuid.UUID:
    placed = app.place_order(
        PlaceOrder(
            customer_id=uuid.uuid4(),
            lines=[OrderLine("MUG", 2, 500)],
            currency="EUR",
            shipping_address=Address("A", "1 St", None, "Berlin", "10115", "DE"),
            payment_token="tok_visa",
            idempotency_key=None,
            fingerprint="f",
            trace=Trace("c", "c"),
        )
    )
    return placed.order.id


def deliver(app: OrdersApplication, *events: IntegrationEvent) -> None:
    for event in events:
        offset = next(offsets)
        app.process_messages([inbound(event, offset=offset)], Tracking("t:orders:0", offset + 1))


def public_types(app: OrdersApplication, order_id: uuid.UUID) -> list[str]:
    events = app.events.get(order_id)
    return [o.event.ce_type.split(".")[2] for e in events for o in to_public(e)]


def locked(order_id: uuid.UUID) -> StockLocked:
    return StockLocked(order_id=order_id, lines=[StockLine(sku="MUG", quantity=2)], locked_at=NOW)


def captured(order_id: uuid.UUID) -> PaymentCaptured:
    return PaymentCaptured(
        order_id=order_id,
        payment_id=uuid.uuid4(),
        amount_minor=1000,
        currency="EUR",
        captured_at=NOW,
    )


def shipped(order_id: uuid.UUID) -> ShipmentShipped:
    return ShipmentShipped(
        order_id=order_id,
        shipment_id=uuid.uuid4(),
        carrier="sandbox-post",
        tracking_number="SBX123",
        shipped_at=NOW,
    )


def held(order_id: uuid.UUID) -> ShipmentCancelled:
    return ShipmentCancelled(order_id=order_id, shipment_id=uuid.uuid4(), cancelled_at=NOW)


def refused(order_id: uuid.UUID) -> ShipmentCancellationRefused:
    return ShipmentCancellationRefused(
        order_id=order_id, shipment_id=uuid.uuid4(), status="shipped", refused_at=NOW
    )


def test_happy_path_publishes_every_transition(app: OrdersApplication) -> None:
    order_id = place(app)
    delivered = ShipmentDelivered(order_id=order_id, shipment_id=uuid.uuid4(), delivered_at=NOW)
    deliver(app, locked(order_id), captured(order_id), shipped(order_id), delivered)
    assert app.get_order(order_id).status is OrderStatus.DELIVERED
    assert public_types(app, order_id) == ["placed", "stock_locked", "paid", "shipped", "delivered"]


def test_events_arriving_out_of_order_and_twice_give_the_same_history(
    app: OrdersApplication,
) -> None:
    order_id = place(app)
    deliver(app, captured(order_id), locked(order_id), captured(order_id), locked(order_id))
    assert app.get_order(order_id).status is OrderStatus.PAID
    assert public_types(app, order_id) == ["placed", "stock_locked", "paid"]


def test_out_of_stock_rejects_and_payment_failure_cancels(app: OrdersApplication) -> None:
    rejected_id, failed_id = place(app), place(app)
    shortage = StockShortage(sku="MUG", requested=2, available=1)
    deliver(app, StockRejected(order_id=rejected_id, shortages=[shortage], rejected_at=NOW))
    failure = PaymentFailed(
        order_id=failed_id,
        payment_id=uuid.uuid4(),
        reason_code="card_declined",
        amount_minor=1000,
        currency="EUR",
        failed_at=NOW,
    )
    deliver(app, locked(failed_id), failure)
    assert app.get_order(rejected_id).status is OrderStatus.REJECTED
    assert app.get_order(rejected_id).shortages[0].sku == "MUG"
    failed = app.get_order(failed_id)
    assert (failed.status, failed.cancelled_by) == (OrderStatus.CANCELLED, "system")


def test_cancel_until_shipment_then_409(app: OrdersApplication) -> None:
    """Issue 7, defect 3: a paid order's cancellation is a request shipping answers (was:
    cancelled at once, refunded and released while the parcel could still leave)."""
    placed_id, paid_id, shipped_id = place(app), place(app), place(app)
    deliver(app, locked(placed_id))
    deliver(app, locked(paid_id), captured(paid_id))
    deliver(app, locked(shipped_id), captured(shipped_id), shipped(shipped_id))
    before, changed = app.cancel_order(placed_id, "changed my mind", Trace("c", "c"))
    assert changed
    assert before.status is OrderStatus.CANCELLED  # before payment: at once, as before
    order, changed = app.cancel_order(paid_id, "changed my mind", Trace("c", "c"))
    assert changed
    assert order.status is OrderStatus.CANCELLATION_REQUESTED
    assert public_types(app, paid_id)[-1] == "cancellation_requested"
    assert app.cancel_order(paid_id, "again", Trace("c", "c"))[1] is False
    with pytest.raises(OrderConflict, match="can no longer be cancelled"):
        app.cancel_order(shipped_id, "too late", Trace("c", "c"))
    assert public_types(app, shipped_id)[-1] == "shipped"
    deliver(app, held(paid_id))
    order = app.get_order(paid_id)
    assert (order.status, order.cancelled_by) == (OrderStatus.CANCELLED, "customer")
    assert order.cancel_reason == "changed my mind"
    assert public_types(app, paid_id)[-2:] == ["cancellation_requested", "cancelled"]


def test_a_cancellation_refused_by_shipping_keeps_the_order_on_its_shipping_path(
    app: OrdersApplication,
) -> None:
    """The parcel left before shipping saw the request: shipped, then refused; never
    cancelled (was: `cancelled` while the parcel travelled, ShippedAfterCancellation)."""
    order_id = place(app)
    deliver(app, locked(order_id), captured(order_id))
    app.cancel_order(order_id, "late cancel", Trace("c", "c"))
    deliver(app, shipped(order_id), refused(order_id))
    order = app.get_order(order_id)
    assert order.status is OrderStatus.SHIPPED
    assert order.tracking_number == "SBX123"
    assert (order.cancelled_by, order.cancel_reason) == (None, None)
    assert "cancelled" not in public_types(app, order_id)
    deliver(app, ShipmentDelivered(order_id=order_id, shipment_id=uuid.uuid4(), delivered_at=NOW))
    assert app.get_order(order_id).status is OrderStatus.DELIVERED


def test_a_refusal_before_the_shipped_event_returns_the_order_to_paid(
    app: OrdersApplication,
) -> None:
    order_id = place(app)
    deliver(app, locked(order_id), captured(order_id))
    app.cancel_order(order_id, "late cancel", Trace("c", "c"))
    deliver(app, refused(order_id))
    assert app.get_order(order_id).status is OrderStatus.PAID
    with pytest.raises(OrderConflict):  # shipping said the parcel left: cancel no more
        app.cancel_order(order_id, "again", Trace("c", "c"))
    deliver(app, shipped(order_id))
    assert app.get_order(order_id).status is OrderStatus.SHIPPED


async def test_deadline_watch_flags_once_per_stage_with_an_injected_clock(
    app: OrdersApplication,
) -> None:
    order_id = place(app)
    clock = {"now": datetime.now(UTC)}
    watch = DeadlineWatch(
        app, deadlines_s={"placed": 60.0, "stock_locked": 60.0}, clock=lambda: clock["now"]
    )
    assert await watch.tick() == []
    clock["now"] += timedelta(seconds=61)
    assert await watch.tick() == [order_id]
    assert await watch.tick() == []
    assert app.get_order(order_id).flagged_stages == ["placed"]
    assert public_types(app, order_id) == ["placed", "flagged"]
    deliver(app, locked(order_id))
    clock["now"] = datetime.now(UTC)  # events carry real time; the clock follows them
    assert await watch.tick() == []  # the new stage has its own deadline
    clock["now"] += timedelta(seconds=61)
    assert await watch.tick() == [order_id]
    assert app.get_order(order_id).flagged_stages == ["placed", "stock_locked"]
