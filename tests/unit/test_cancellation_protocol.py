"""Issue 7, defect 3: a cancellation of a paid order is a request that shipping answers.

The four policies (orders, inventory, payments with its provider worker, shipping) on the
in-memory store, their public events carried between them by a small bus the way the topics
do. A cancellation racing with dispatch ends either held (cancelled, refunded, released,
never shipped) or refused (shipped, committed, never refunded), never both; stock committed
equals units shipped."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from fulfilment_kit.contracts import IntegrationEvent, topics
from fulfilment_kit.messaging.inbox import ProcessApplication
from fulfilment_kit.tracing import Trace
from inventory.application import InventoryApplication, ReceiveStock
from inventory.contracts import to_public as inventory_public
from orders.application import OrdersApplication, PlaceOrder
from orders.contracts import to_public as orders_public
from orders.domain import Address, OrderLine, OrderStatus
from payments.application import PaymentsApplication
from payments.contracts import to_public as payments_public
from payments.domain import PaymentStatus
from payments.gateway import RetryPolicy, SandboxGateway
from payments.worker import ProviderWorker
from shipping.application import ShippingApplication
from shipping.contracts import to_public as shipping_public
from shipping.domain import InvalidTransition, ShipmentStatus
from tests.support.messages import inbound

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
SKU = "MUG-BLUE"


class Bus:
    """Carries every public event each service publishes to every service that reacts."""

    def __init__(self) -> None:
        self.gateway = SandboxGateway()
        self.orders = OrdersApplication(env=POPO)
        self.inventory = InventoryApplication(env=POPO)
        self.payments = PaymentsApplication(
            env=POPO, gateway=self.gateway, retry=RetryPolicy(attempts=1, backoff_s=0)
        )
        self.shipping = ShippingApplication(env=POPO)
        self.worker = ProviderWorker(self.payments)
        self.apps: list[tuple[ProcessApplication, Any]] = [
            (self.orders, orders_public),
            (self.inventory, inventory_public),
            (self.payments, payments_public),
            (self.shipping, shipping_public),
        ]
        self.read: dict[int, int] = defaultdict(int)
        self.offsets: dict[tuple[int, str], int] = defaultdict(int)
        self.published: list[IntegrationEvent] = []

    def _new_events(self, index: int) -> list[IntegrationEvent]:
        app, mapper = self.apps[index]
        notifications = app.recorder.select_notifications(self.read[index] + 1, 10_000)
        if notifications:
            self.read[index] = notifications[-1].id
        return [o.event for n in notifications for o in mapper(app.mapper.to_domain_event(n))]

    def pump(self) -> None:
        """Deliver until nothing new is published (the provider worker runs in between)."""
        while True:
            moved = False
            self.worker.drain()
            for index in range(len(self.apps)):
                for event in self._new_events(index):
                    moved = True
                    self.published.append(event)
                    for target, (app, _) in enumerate(self.apps):
                        if target != index and app.accepts(type(event)):
                            self.deliver(target, event)
            if not moved:
                return

    def deliver(self, target: int, event: IntegrationEvent) -> None:
        app = self.apps[target][0]
        topic = topics.physical(event.topic)
        offset = self.offsets[(target, topic)]
        self.offsets[(target, topic)] += 1
        app.process_messages(
            [inbound(event, offset=offset)], Tracking(f"{app.name}:{topic}:0", offset + 1)
        )

    def types(self, order_id: uuid.UUID) -> list[str]:
        return [e.ce_type for e in self.published if getattr(e, "order_id", None) == order_id]


@pytest.fixture
def bus() -> Bus:
    bus = Bus()
    bus.inventory.receive_stock(ReceiveStock(SKU, 10, None, Trace("c", "receipt")))
    return bus


def paid_order(bus: Bus, quantity: int = 2) -> uuid.UUID:
    placed = bus.orders.place_order(
        PlaceOrder(
            customer_id=uuid.uuid4(),
            lines=[OrderLine(SKU, quantity, 500)],
            currency="EUR",
            shipping_address=Address("Ada", "1 St", None, "Berlin", "10115", "DE"),
            payment_token="tok_visa",
            idempotency_key=None,
            fingerprint="f",
            trace=Trace("c", "c"),
        )
    )
    bus.pump()
    order_id = placed.order.id
    assert bus.orders.get_order(order_id).status is OrderStatus.PAID
    assert bus.shipping.get_shipment(order_id).status is ShipmentStatus.PACKING
    return order_id


def cancel(bus: Bus, order_id: uuid.UUID) -> OrderStatus:
    order, _ = bus.orders.cancel_order(order_id, "changed my mind", Trace("c", "cancel"))
    return order.status


def stock(bus: Bus) -> tuple[int, int]:
    item = bus.inventory.get_stock(SKU)
    return item.on_hand, item.reserved


def test_cancel_before_dispatch_is_held_then_refunded_and_released(bus: Bus) -> None:
    order_id = paid_order(bus)
    assert cancel(bus, order_id) is OrderStatus.CANCELLATION_REQUESTED
    assert stock(bus) == (10, 2)  # nothing moves before shipping's answer
    assert bus.payments.get_payment(order_id).refunded_minor == 0
    bus.pump()
    assert bus.shipping.get_shipment(order_id).status is ShipmentStatus.CANCELLED
    assert bus.orders.get_order(order_id).status is OrderStatus.CANCELLED
    assert bus.payments.get_payment(order_id).status is PaymentStatus.REFUNDED
    assert stock(bus) == (10, 0)
    with pytest.raises(InvalidTransition, match="cancelled"):  # dispatch never ships it
        bus.shipping.dispatch(order_id, Trace("c", "warehouse"))
    kinds = bus.types(order_id)
    assert "fulfilment.order.cancellation_requested.v1" in kinds
    assert kinds.index("fulfilment.shipment.cancelled.v1") < kinds.index(
        "fulfilment.payment.refunded.v1"
    )
    assert "fulfilment.shipment.shipped.v1" not in kinds


def test_cancel_after_dispatch_is_refused_and_nothing_is_refunded_or_released(
    bus: Bus,
) -> None:
    order_id = paid_order(bus)
    cancel(bus, order_id)  # the request is on its way ...
    bus.shipping.dispatch(order_id, Trace("c", "warehouse"))  # ... the parcel leaves first
    bus.pump()
    assert bus.shipping.get_shipment(order_id).status is ShipmentStatus.SHIPPED
    assert bus.orders.get_order(order_id).status is OrderStatus.SHIPPED
    payment = bus.payments.get_payment(order_id)
    assert (payment.status, payment.refunded_minor) == (PaymentStatus.CAPTURED, 0)
    assert stock(bus) == (8, 0)  # committed: 2 units shipped
    kinds = bus.types(order_id)
    assert "fulfilment.shipment.cancellation_refused.v1" in kinds
    assert "fulfilment.order.cancelled.v1" not in kinds
    assert "fulfilment.stock.released.v1" not in kinds


class CancelsWhileBooking:
    """A carrier that lets the cancellation request reach shipping while it books."""

    def __init__(self, bus: Bus, order_id: uuid.UUID) -> None:
        self.bus, self.order_id, self.inner = bus, order_id, bus.shipping.carrier
        self.fired = False

    def book(self, **kwargs: Any) -> Any:
        if not self.fired:
            self.fired = True
            self.bus.pump()  # the request arrives and is answered mid-dispatch
        return self.inner.book(**kwargs)


def test_a_cancel_racing_with_dispatch_never_ends_both_shipped_and_refunded(bus: Bus) -> None:
    order_id = paid_order(bus)
    cancel(bus, order_id)
    bus.shipping.carrier = CancelsWhileBooking(bus, order_id)  # type: ignore[assignment]
    with pytest.raises(InvalidTransition):  # the dispatch lost the race on the version
        bus.shipping.dispatch(order_id, Trace("c", "warehouse"))
    bus.pump()
    shipment = bus.shipping.get_shipment(order_id).status
    payment = bus.payments.get_payment(order_id)
    assert shipment is ShipmentStatus.CANCELLED
    assert payment.status is PaymentStatus.REFUNDED
    assert stock(bus) == (10, 0)
    assert "fulfilment.shipment.shipped.v1" not in bus.types(order_id)


def test_stock_committed_equals_units_shipped_over_many_races(bus: Bus) -> None:
    bus.inventory.receive_stock(ReceiveStock(SKU, 90, None, Trace("c", "receipt-2")))
    shipped_units = 0
    for round_ in range(12):
        order_id = paid_order(bus, quantity=1 + round_ % 3)
        cancel(bus, order_id)
        if round_ % 2:  # the warehouse is quicker than the request every other time
            bus.shipping.dispatch(order_id, Trace("c", f"warehouse-{round_}"))
        bus.pump()
        shipment = bus.shipping.get_shipment(order_id)
        payment = bus.payments.get_payment(order_id)
        both = shipment.status is ShipmentStatus.SHIPPED and payment.refunded_minor > 0
        assert not both
        if shipment.status is ShipmentStatus.SHIPPED:
            shipped_units += sum(line.quantity for line in shipment.lines)
    on_hand, reserved = stock(bus)
    assert reserved == 0
    assert 100 - on_hand == shipped_units
