"""How inventory, payments and orders react to a received return (in-memory stores)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from itertools import count

import pytest
from eventsourcing.persistence import Tracking

from fulfilment_kit.contracts import (
    InspectedLine,
    PaymentRefunded,
    ReturnReceived,
    ShipmentDelivered,
    StockReceived,
)
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.tracing import Trace
from inventory.application import InventoryApplication, ReceiveStock
from inventory.contracts import to_public as inventory_public
from orders.application import OrdersApplication
from orders.contracts import to_public as orders_public
from orders.domain import InvalidOrder, OrderStatus, ReturnedLine
from payments.contracts import to_public as payments_public
from payments.domain import refund_id_for
from tests.support.messages import inbound
from tests.unit.test_orders_lifecycle import captured, locked, place, shipped
from tests.unit.test_payments_policy import Feed, RecordingGateway, make_app, placed
from tests.unit.test_payments_policy import locked as stock_locked

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
offsets = count()


def apply(app: object, *events: IntegrationEvent) -> None:
    for event in events:
        offset = next(offsets)
        app.process_messages(  # type: ignore[attr-defined]
            [inbound(event, offset=offset)], Tracking("t:cs:0", offset + 1)
        )


def received(
    order_id: uuid.UUID,
    lines: list[tuple[str, int, str]],
    refund_minor: int,
    return_id: uuid.UUID | None = None,
) -> ReturnReceived:
    return ReturnReceived(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        return_id=return_id or uuid.uuid4(),
        rma_number="RMA-ABCD1234",
        lines=[InspectedLine(sku=s, quantity=q, result=r) for s, q, r in lines],  # type: ignore[arg-type]
        refund_minor=refund_minor,
        currency="EUR",
        received_at=NOW,
    )


# --- inventory ---------------------------------------------------------------------------------


def test_inventory_restocks_restockable_units_once_per_return() -> None:
    app = InventoryApplication(env=POPO)
    trace = Trace("c", "c")
    app.receive_stock(ReceiveStock("MUG", 5, None, trace))
    app.receive_stock(ReceiveStock("TEE", 5, None, trace))
    order_id = uuid.uuid4()
    event = received(order_id, [("MUG", 2, "restockable"), ("TEE", 1, "damaged")], 100)
    apply(app, event, event)  # the copy at another offset changes nothing
    apply(app, received(order_id, [("NEW-SKU", 1, "restockable")], 100))
    assert app.get_stock("MUG").on_hand == 7
    assert app.get_stock("TEE").on_hand == 5
    assert app.get_stock("NEW-SKU").on_hand == 1
    assert "NEW-SKU" in [item.sku for item in app.list_stock()]

    restocks = [
        outbound.event
        for n in app.recorder.select_notifications(1, 1000)
        for outbound in inventory_public(app.mapper.to_domain_event(n))
        if isinstance(outbound.event, StockReceived) and outbound.event.source == "return"
    ]
    assert [(e.sku, e.quantity, e.on_hand, e.order_id) for e in restocks] == [
        ("MUG", 2, 7, order_id),
        ("NEW-SKU", 1, 1, order_id),
    ]
    assert restocks[0].key() == str(order_id)


# --- payments ----------------------------------------------------------------------------------

TOTAL = 2 * 1299 + 2499


def paid(feed: Feed) -> uuid.UUID:
    order_id = uuid.uuid4()
    feed.send(placed(order_id), stock_locked(order_id))
    return order_id


def refunds(feed: Feed) -> list[PaymentRefunded]:
    app = feed.app
    return [
        o.event
        for n in app.recorder.select_notifications(1, 1000)
        for o in payments_public(app.mapper.to_domain_event(n))
        if isinstance(o.event, PaymentRefunded)
    ]


def test_payments_refunds_a_return_once_with_a_deterministic_id() -> None:
    gateway = RecordingGateway()
    feed = Feed(make_app(gateway))
    order_id = paid(feed)
    return_id = uuid.uuid4()
    event = received(order_id, [("MUG-BLUE", 1, "restockable")], 1299, return_id)
    feed.send(event, event)
    [refund] = refunds(feed)
    assert (refund.refund_minor, refund.reason, refund.full_refund) == (
        1299,
        "return_received",
        False,
    )
    assert refund.refund_id == refund_id_for(f"return:{return_id}")
    assert len(gateway.refunds) == 1
    assert feed.app.get_payment(order_id).refundable_minor == TOTAL - 1299


def test_payments_caps_a_return_refund_at_what_is_left(caplog: pytest.LogCaptureFixture) -> None:
    feed = Feed(make_app(RecordingGateway()))
    order_id = paid(feed)
    feed.send(received(order_id, [("MUG-BLUE", 2, "restockable")], TOTAL - 100))
    feed.send(received(order_id, [("TEE-M-BLACK", 1, "restockable")], 2499))  # only 100 left
    feed.send(received(order_id, [("TEE-M-BLACK", 1, "restockable")], 50))  # nothing left
    assert [r.refund_minor for r in refunds(feed)] == [TOTAL - 100, 100]
    assert refunds(feed)[-1].full_refund
    assert feed.app.get_payment(order_id).refundable_minor == 0


def test_payments_ignores_zero_refunds_and_unknown_payments() -> None:
    gateway = RecordingGateway()
    feed = Feed(make_app(gateway))
    order_id = paid(feed)
    before = feed.app.recorder.max_notification_id()
    feed.send(received(order_id, [("MUG-BLUE", 1, "damaged")], 0))
    feed.send(received(uuid.uuid4(), [("MUG-BLUE", 1, "restockable")], 500))
    assert feed.app.recorder.max_notification_id() == before
    assert gateway.refunds == []


# --- orders ------------------------------------------------------------------------------------


def delivered_order(app: OrdersApplication) -> uuid.UUID:
    order_id = place(app)  # 2 x MUG at 500
    delivered = ShipmentDelivered(order_id=order_id, shipment_id=uuid.uuid4(), delivered_at=NOW)
    apply(app, locked(order_id), captured(order_id), shipped(order_id), delivered)
    return order_id


def public(app: OrdersApplication, order_id: uuid.UUID) -> list[IntegrationEvent]:
    return [o.event for e in app.events.get(order_id) for o in orders_public(e)]


def test_orders_partially_returned_then_returned_over_all_returns() -> None:
    app = OrdersApplication(env=POPO)
    order_id = delivered_order(app)
    first = received(order_id, [("MUG", 1, "damaged")], 500)
    apply(app, first, first)
    order = app.get_order(order_id)
    assert (order.status, order.returned) == (OrderStatus.PARTIALLY_RETURNED, {"MUG": 1})
    apply(app, received(order_id, [("MUG", 1, "restockable")], 500))
    order = app.get_order(order_id)
    assert (order.status, order.returned, order.returned_refund_minor) == (
        OrderStatus.RETURNED,
        {"MUG": 2},
        1000,
    )
    tail = public(app, order_id)[-2:]
    assert [e.ce_type for e in tail] == [
        "fulfilment.order.partially_returned.v1",
        "fulfilment.order.returned.v1",
    ]
    assert [(x.sku, x.quantity) for x in tail[1].lines] == [("MUG", 1)]  # type: ignore[attr-defined]


def test_orders_ignore_returns_of_undelivered_orders_and_reject_impossible_ones() -> None:
    app = OrdersApplication(env=POPO)
    order_id = place(app)
    apply(app, received(order_id, [("MUG", 1, "restockable")], 500))
    assert app.get_order(order_id).status is OrderStatus.PLACED
    delivered = delivered_order(app)
    order = app.get_order(delivered)
    with pytest.raises(InvalidOrder, match="does not fit"):
        order.return_received(uuid.uuid4(), [], 0)
    with pytest.raises(InvalidOrder, match="does not fit"):
        order.return_received(uuid.uuid4(), [ReturnedLine("MUG", 3)], 0)
