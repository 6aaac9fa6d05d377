"""The inventory policy: records in, changes and tracking recorded together (in-memory store)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from fulfilment_kit.contracts import (
    IntegrationEvent,
    OrderCancelled,
    OrderLine,
    OrderPlaced,
    PaymentFailed,
    ShipmentShipped,
    ShippingAddress,
    StockLocked,
    StockLow,
    StockReceived,
    StockRejected,
    StockReleased,
    topics,
)
from fulfilment_kit.tracing import Trace
from inventory.application import InventoryApplication, ReceiveStock
from inventory.contracts import to_public
from inventory.domain import ReservationStatus, reservation_id, stock_item_id
from tests.support.messages import inbound

TOPIC = topics.ORDERS
TRACKING = f"inventory:{TOPIC}:0"
CORRELATION = "corr-order"


class Feed:
    """Delivers records to the application as the inbox would, one offset after another."""

    def __init__(self, app: InventoryApplication) -> None:
        self.app = app
        self.offset = 0

    def deliver(self, *events: IntegrationEvent, ce_id: str | None = None) -> list[str]:
        """Apply the events as one batch; returns their ce_ids."""
        messages = []
        for event in events:
            message = inbound(event, offset=self.offset, ce_id=ce_id, correlation_id=CORRELATION)
            messages.append(message)
            self.offset += 1
        self.app.process_messages(messages, Tracking(TRACKING, self.offset))
        return [m.envelope.id for m in messages]


@pytest.fixture
def app() -> Iterator[InventoryApplication]:
    application = InventoryApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield application
    application.close()


@pytest.fixture
def feed(app: InventoryApplication) -> Feed:
    return Feed(app)


def stock(app: InventoryApplication, sku: str, quantity: int) -> None:
    app.receive_stock(ReceiveStock(sku, quantity, None, Trace("corr-http", "http:1")))


def placed(*lines: tuple[str, int], order_id: uuid.UUID | None = None) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id or uuid.uuid4(),
        customer_id=uuid.uuid4(),
        lines=[OrderLine(sku=s, quantity=q, unit_price_minor=100) for s, q in lines],
        currency="EUR",
        total_minor=sum(q * 100 for _, q in lines),
        shipping_address=ShippingAddress(
            recipient_name="A", line1="1 St", city="Berlin", postal_code="10115", country_code="DE"
        ),
        placed_at=datetime.now(UTC),
    )


def cancelled(order_id: uuid.UUID) -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        customer_id=uuid.uuid4(),
        cancelled_by="customer",
        reason="changed my mind",
        cancelled_at=datetime.now(UTC),
    )


def payment_failed(order_id: uuid.UUID) -> PaymentFailed:
    return PaymentFailed(
        order_id=order_id,
        payment_id=uuid.uuid4(),
        reason_code="card_declined",
        amount_minor=100,
        currency="EUR",
        failed_at=datetime.now(UTC),
    )


def shipped(order_id: uuid.UUID) -> ShipmentShipped:
    return ShipmentShipped(
        order_id=order_id,
        shipment_id=uuid.uuid4(),
        carrier="dhl",
        tracking_number="TRK-1",
        shipped_at=datetime.now(UTC),
    )


def published(app: InventoryApplication) -> list[tuple[IntegrationEvent, str, str]]:
    """Every public event the relay would publish from the store, with its trace."""
    out = []
    for notification in app.recorder.select_notifications(1, 10_000):
        domain_event: Any = app.mapper.to_domain_event(notification)
        for o in to_public(domain_event):
            out.append((o.event, o.correlation_id, o.causation_id))
    return out


def public(app: InventoryApplication, cls: type[IntegrationEvent]) -> list[Any]:
    return [e for e, _, _ in published(app) if isinstance(e, cls)]


def levels(app: InventoryApplication, sku: str) -> tuple[int, int, int]:
    item = app.get_stock(sku)
    return item.on_hand, item.reserved, item.available


def test_order_with_every_line_available_is_locked(app: InventoryApplication, feed: Feed) -> None:
    stock(app, "MUG", 5)
    stock(app, "TEE", 2)
    order = placed(("MUG", 2), ("TEE", 2))
    [ce_id] = feed.deliver(order)

    assert levels(app, "MUG") == (5, 2, 3)
    assert levels(app, "TEE") == (2, 2, 0)
    assert app.get_reservation(order.order_id).status is ReservationStatus.LOCKED
    [(locked, correlation_id, causation_id)] = [
        p for p in published(app) if isinstance(p[0], StockLocked)
    ]
    assert isinstance(locked, StockLocked)
    assert locked.order_id == order.order_id
    assert [(x.sku, x.quantity) for x in locked.lines] == [("MUG", 2), ("TEE", 2)]
    assert (correlation_id, causation_id) == (CORRELATION, ce_id)
    assert app.recorder.max_tracking_id(TRACKING) == 1


def test_one_short_line_rejects_the_order_and_reserves_nothing(
    app: InventoryApplication, feed: Feed
) -> None:
    stock(app, "MUG", 5)
    stock(app, "TEE", 1)
    order = placed(("MUG", 2), ("TEE", 3), ("GHOST", 1))
    feed.deliver(order)

    assert levels(app, "MUG") == (5, 0, 5)
    assert levels(app, "TEE") == (1, 0, 1)
    reservation = app.get_reservation(order.order_id)
    assert reservation.status is ReservationStatus.REJECTED
    [rejected] = public(app, StockRejected)
    assert [(s.sku, s.requested, s.available) for s in rejected.shortages] == [
        ("TEE", 3, 1),
        ("GHOST", 1, 0),
    ]
    assert public(app, StockLocked) == []


def test_the_same_order_placed_twice_at_different_offsets_reserves_once(
    app: InventoryApplication, feed: Feed
) -> None:
    stock(app, "MUG", 5)
    order = placed(("MUG", 2))
    ce_id = str(uuid.uuid4())
    feed.deliver(order, ce_id=ce_id)
    feed.deliver(order, ce_id=ce_id)  # a relay retry: same event, a new offset
    assert levels(app, "MUG") == (5, 2, 3)
    assert len(public(app, StockLocked)) == 1
    assert app.recorder.max_tracking_id(TRACKING) == 2


def test_the_same_offset_twice_is_a_duplicate(app: InventoryApplication) -> None:
    stock(app, "MUG", 5)
    message = inbound(placed(("MUG", 1)), offset=0, correlation_id=CORRELATION)
    app.process_messages([message], Tracking(TRACKING, 1))
    with pytest.raises(IntegrityError):
        app.process_messages([message], Tracking(TRACKING, 1))
    assert levels(app, "MUG") == (5, 1, 4)


def test_orders_in_one_batch_see_each_others_reservations(
    app: InventoryApplication, feed: Feed
) -> None:
    stock(app, "MUG", 3)
    first, second, third = placed(("MUG", 2)), placed(("MUG", 2)), placed(("MUG", 1))
    feed.deliver(first, second, third, second)
    assert levels(app, "MUG") == (3, 3, 0)
    statuses = [app.get_reservation(o.order_id).status for o in (first, second, third)]
    assert statuses == [
        ReservationStatus.LOCKED,
        ReservationStatus.REJECTED,
        ReservationStatus.LOCKED,
    ]


@pytest.mark.parametrize(
    ("compensation", "reason"),
    [(cancelled, "order_cancelled"), (payment_failed, "payment_failed")],
)
def test_cancellation_or_failed_payment_releases_a_locked_reservation_once(
    app: InventoryApplication, feed: Feed, compensation: Any, reason: str
) -> None:
    stock(app, "MUG", 5)
    order = placed(("MUG", 2))
    feed.deliver(order)
    feed.deliver(compensation(order.order_id))
    feed.deliver(compensation(order.order_id))
    feed.deliver(shipped(order.order_id))  # too late: nothing is reserved any more
    assert levels(app, "MUG") == (5, 0, 5)
    assert app.get_reservation(order.order_id).status is ReservationStatus.RELEASED
    [released] = public(app, StockReleased)
    assert released.reason == reason
    assert [(x.sku, x.quantity) for x in released.lines] == [("MUG", 2)]


def test_shipment_commits_the_reserved_units(app: InventoryApplication, feed: Feed) -> None:
    stock(app, "MUG", 5)
    order = placed(("MUG", 2))
    feed.deliver(order)
    feed.deliver(shipped(order.order_id), shipped(order.order_id))
    feed.deliver(cancelled(order.order_id))  # after shipment: nothing to release
    assert levels(app, "MUG") == (3, 0, 3)
    assert app.get_reservation(order.order_id).status is ReservationStatus.COMMITTED


def test_a_locked_orders_stock_items_are_prefetched_from_its_reservation(
    app: InventoryApplication, feed: Feed
) -> None:
    """Shipped, cancelled or failed: the batch loads the reservations, then all their stock
    items in one more query (not one query per record)."""
    stock(app, "MUG", 5)
    stock(app, "CUP", 5)
    order = placed(("MUG", 1), ("CUP", 2))
    feed.deliver(order)
    rid = reservation_id(order.order_id)
    loaded = app.read_aggregates([rid])
    items = [stock_item_id("MUG"), stock_item_id("CUP")]
    for event in (shipped(order.order_id), cancelled(order.order_id)):
        assert list(app.aggregate_ids(inbound(event))) == [rid]
        assert list(app.aggregate_ids_then(inbound(event), loaded)) == items
    assert list(app.aggregate_ids_then(inbound(shipped(order.order_id)), {})) == []
    feed.deliver(shipped(order.order_id))
    committed = app.read_aggregates([rid])
    assert list(app.aggregate_ids_then(inbound(cancelled(order.order_id)), committed)) == []


def test_compensations_for_rejected_or_unknown_orders_do_nothing(
    app: InventoryApplication, feed: Feed
) -> None:
    order = placed(("GHOST", 1))
    feed.deliver(order)
    feed.deliver(cancelled(order.order_id), payment_failed(uuid.uuid4()), shipped(uuid.uuid4()))
    assert app.get_reservation(order.order_id).status is ReservationStatus.REJECTED
    assert public(app, StockReleased) == []
    assert app.recorder.max_tracking_id(TRACKING) == 4


def test_other_events_are_ignored_but_tracked(app: InventoryApplication, feed: Feed) -> None:
    before = app.recorder.max_notification_id()
    feed.deliver(
        StockReceived(
            sku="MUG", quantity=1, on_hand=1, source="purchase", received_at=datetime.now(UTC)
        )
    )
    assert app.recorder.max_notification_id() == before
    assert app.recorder.max_tracking_id(TRACKING) == 1


def test_low_stock_is_published_once_when_reservations_cross_the_threshold(
    app: InventoryApplication, feed: Feed
) -> None:
    stock(app, "MUG", 7)  # default threshold 5
    feed.deliver(placed(("MUG", 2)))  # available 5: not below
    assert public(app, StockLow) == []
    feed.deliver(placed(("MUG", 1)), placed(("MUG", 1)))  # 4, then 3
    [low] = public(app, StockLow)
    assert (low.sku, low.available, low.threshold) == ("MUG", 4, 5)


def test_default_threshold_comes_from_the_environment() -> None:
    app = InventoryApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo", "FULFIL_INVENTORY_DEFAULT_THRESHOLD": "2"}
    )
    stock(app, "MUG", 1)
    assert app.get_stock("MUG").low_stock_threshold == 2
    with pytest.raises(ValueError, match="FULFIL_INVENTORY_DEFAULT_THRESHOLD"):
        InventoryApplication(
            env={
                "PERSISTENCE_MODULE": "eventsourcing.popo",
                "FULFIL_INVENTORY_DEFAULT_THRESHOLD": "-3",
            }
        )


def test_an_http_command_that_conflicts_with_a_concurrent_write_is_retried(
    app: InventoryApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    stock(app, "MUG", 5)
    save = app.save
    raced: list[bool] = []
    calls: list[int] = []

    def save_after_a_concurrent_order(*objs: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if not raced:  # another writer commits between our load and our save
            raced.append(True)
            Feed(app).deliver(placed(("MUG", 2)))
        return save(*objs, **kwargs)

    monkeypatch.setattr(app, "save", save_after_a_concurrent_order)
    app.receive_stock(ReceiveStock("MUG", 3, None, Trace("c", "http:2")))
    assert levels(app, "MUG") == (8, 2, 6)
    assert len(calls) == 2  # the first save conflicted, the retry reloaded and won
