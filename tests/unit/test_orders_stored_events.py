"""Events stored before the trace left the Order's signatures still load, and events
recorded now keep the stored names and fields (the fixture was recorded from that code)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from fulfilment_kit.tracing import Trace
from orders.application import OrdersApplication
from orders.contracts import to_public
from orders.domain import (
    Address,
    CustomerErasure,
    Order,
    OrderLine,
    OrderStatus,
    ReturnedLine,
    Shortage,
    erasure_id_for,
)
from tests.support.stored_events import load, published, shapes, with_stored

CUSTOMER_ID = uuid.UUID("22222222-2222-4222-8222-222222222222")
RETURNED, REJECTED, CANCELLED = (
    uuid.UUID(f"1111111{i}-1111-4111-8111-111111111111") for i in (1, 2, 3)
)
RETURNS = [uuid.UUID(f"33333333-3333-4333-8333-33333333333{i}") for i in (1, 2)]
POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}

STORED = load(Path(__file__).parent / "orders_stored_events.json")
"""(originator id, version, topic, state) of each event as the code before the change stored it."""


def _app_with_old_events() -> OrdersApplication:
    return with_stored(OrdersApplication(env=POPO), STORED)


def test_orders_stored_by_the_old_code_load_in_their_state() -> None:
    app = _app_with_old_events()
    returned = app.get_order(RETURNED)
    assert returned.status is OrderStatus.RETURNED
    assert (returned.paid_minor, returned.carrier, returned.tracking_number) == (
        3999,
        "sandbox",
        "SBX1",
    )
    assert returned.refused_cancellation
    assert not returned.cancellation_pending
    assert returned.return_ids == RETURNS
    assert returned.returned == {"SKU-1": 2, "SKU-2": 1}
    assert returned.shipping_address.city == "Berlin"
    rejected = app.get_order(REJECTED)
    assert rejected.status is OrderStatus.REJECTED
    assert rejected.shortages == [Shortage("SKU-1", 2, 1)]
    cancelled = app.get_order(CANCELLED)
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.flagged_stages == ["placed"]
    assert (cancelled.cancelled_by, cancelled.tracking_number) == ("system", "SBX3")
    erasure = app.find(erasure_id_for(CUSTOMER_ID), CustomerErasure)
    assert erasure is not None
    assert (erasure.requested_by, erasure.requested_role) == ("ops-1", "ops")


def test_each_stored_event_maps_to_its_public_event_with_its_stored_trace() -> None:
    assert published(_app_with_old_events(), to_public) == [
        ("OrderPlaced", "corr", "cause-1"),
        ("OrderStockLocked", "corr", "cause-2"),
        ("OrderPaid", "corr", "cause-3"),
        ("OrderCancellationRequested", "corr", "cause-4"),
        ("OrderShipped", "corr", "cause-6"),
        ("OrderDelivered", "corr", "cause-7"),
        ("OrderPartiallyReturned", "corr", "cause-8"),
        ("OrderReturned", "corr", "cause-9"),
        ("OrderPlaced", "corr", "cause-10"),
        ("OrderRejected", "corr", "cause-11"),
        ("OrderPlaced", "corr", "cause-12"),
        ("OrderFlagged", "corr", "cause-13"),
        ("OrderCancelled", "corr", "cause-14"),
        ("CustomerErased", "corr", "cause-16"),
    ]


def _place(order_id: uuid.UUID, token: str | None) -> Order:
    return Order.place(
        order_id=order_id,
        customer_id=CUSTOMER_ID,
        lines=[OrderLine("SKU-1", 2, 1500), OrderLine("SKU-2", 1, 999)],
        currency="EUR",
        shipping_address=Address("Ada Example", "1 Sample Street", None, "Berlin", "10115", "DE"),
        payment_token=token,
        request_fingerprint="fp-1",
    )


def test_events_recorded_now_have_the_stored_names_and_fields() -> None:
    """The same stories recorded by today's code: each event's name and fields (and `trace`)
    as stored before."""
    app = OrdersApplication(env=POPO)
    trace = Trace("corr", "cause")
    order = _place(RETURNED, "tok_visa")
    order.stock_locked()
    order.payment_captured(3999)
    order.cancel("changed my mind")
    order.cancellation_refused()
    order.shipment_shipped("sandbox", "SBX1")
    order.shipment_delivered()
    order.return_received(RETURNS[0], [ReturnedLine("SKU-1", 1)], 1500)
    order.return_received(RETURNS[1], [ReturnedLine("SKU-1", 1), ReturnedLine("SKU-2", 1)], 2499)
    app.save(order, trace=trace)
    order = _place(REJECTED, None)
    order.stock_rejected([Shortage("SKU-1", 2, 1)])
    app.save(order, trace=trace)
    order = _place(CANCELLED, None)
    order.flag_overdue("placed", datetime(2025, 5, 1, 9, tzinfo=UTC))
    order.payment_failed("card_declined")
    order.shipment_shipped("sandbox", "SBX3")
    app.save(order, trace=trace)
    app.save(CustomerErasure(CUSTOMER_ID, "ops-1", "ops"), trace=trace)

    assert shapes(app) == shapes(_app_with_old_events())
