"""Public events of made-up orders, encoded with the kit exactly as the relays encode them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fulfilment_kit.contracts import (
    CaseOpened,
    CaseSlaBreached,
    OrderDelivered,
    OrderLine,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
    OrderStockLocked,
    PaymentCaptured,
    PaymentRefunded,
    ReturnReceived,
    ShipmentDelivered,
    ShipmentShipped,
    ShippingAddress,
    StockLine,
    StockLocked,
    StockLow,
    StockReceived,
    topics,
)
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.contracts.customer_service import InspectedLine
from fulfilment_kit.messaging import cloudevents, kafka
from fulfilment_kit.settings import KafkaSettings

SOURCES = {
    topics.ORDERS: "/fulfilment/orders",
    topics.INVENTORY: "/fulfilment/inventory",
    topics.PAYMENTS: "/fulfilment/payments",
    topics.SHIPPING: "/fulfilment/shipping",
    topics.CUSTOMER_SERVICE: "/fulfilment/customer-service",
}


@dataclass(frozen=True)
class Published:
    event: IntegrationEvent
    ce_id: str
    time: datetime
    causation_id: str
    sequence: int

    def encoded(self) -> tuple[bytes, bytes, cloudevents.Headers]:
        return cloudevents.encode(
            self.event,
            ce_id=self.ce_id,
            source=SOURCES[self.event.topic],
            time=self.time,
            correlation_id=str(getattr(self.event, "order_id", None) or self.ce_id),
            causation_id=self.causation_id,
            sequence=self.sequence,
        )

    def envelope(self) -> cloudevents.Envelope:
        _, value, headers = self.encoded()
        return cloudevents.decode(value, headers)


@dataclass
class EventFactory:
    """Events with increasing times and a log position per producing service."""

    clock: datetime = field(default_factory=lambda: datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    sequences: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    published: list[Published] = field(default_factory=list)

    def emit(
        self, event: IntegrationEvent, cause: Published | None = None, after_s: float = 1.0
    ) -> Published:
        self.clock += timedelta(seconds=after_s)
        self.sequences[event.topic] += 1
        item = Published(
            event,
            str(uuid.uuid4()),
            self.clock,
            cause.ce_id if cause else f"http:{uuid.uuid4()}",
            self.sequences[event.topic],
        )
        self.published.append(item)
        return item

    def order(
        self,
        customer_id: uuid.UUID,
        *,
        sku: str = "MUG",
        quantity: int = 1,
        price: int = 1000,
        currency: str = "EUR",
        until: str = "delivered",
        ship_after_s: float = 3600.0,
    ) -> tuple[uuid.UUID, list[Published]]:
        """One order's events across the services, up to `until` (placed/paid/delivered)."""
        order_id = uuid.uuid4()
        total = quantity * price
        at = self.clock
        placed = self.emit(
            OrderPlaced(
                order_id=order_id,
                customer_id=customer_id,
                lines=[OrderLine(sku=sku, quantity=quantity, unit_price_minor=price)],
                currency=currency,
                total_minor=total,
                shipping_address=ShippingAddress(
                    recipient_name="Ada",
                    line1="1 Street",
                    city="Berlin",
                    postal_code="10115",
                    country_code="DE",
                ),
                placed_at=at + timedelta(seconds=1),
                payment_token="tok_visa",
            )
        )
        events = [placed]
        if until == "placed":
            return order_id, events
        t = self.clock
        locked = self.emit(
            StockLocked(
                order_id=order_id, lines=[StockLine(sku=sku, quantity=quantity)], locked_at=t
            ),
            placed,
        )
        order_locked = self.emit(
            OrderStockLocked(order_id=order_id, customer_id=customer_id, locked_at=t), locked
        )
        captured = self.emit(
            PaymentCaptured(
                order_id=order_id,
                payment_id=uuid.uuid4(),
                amount_minor=total,
                currency=currency,
                captured_at=self.clock,
            ),
            locked,
        )
        paid = self.emit(
            OrderPaid(
                order_id=order_id,
                customer_id=customer_id,
                amount_minor=total,
                currency=currency,
                paid_at=self.clock,
            ),
            captured,
        )
        events += [locked, order_locked, captured, paid]
        if until == "paid":
            return order_id, events
        shipment_id = uuid.uuid4()
        shipped = self.emit(
            ShipmentShipped(
                order_id=order_id,
                shipment_id=shipment_id,
                carrier="sandbox",
                tracking_number="SBX1",
                shipped_at=self.clock,
            ),
            paid,
            after_s=ship_after_s,
        )
        order_shipped = self.emit(
            OrderShipped(
                order_id=order_id,
                customer_id=customer_id,
                carrier="sandbox",
                tracking_number="SBX1",
                shipped_at=self.clock,
            ),
            shipped,
        )
        delivered = self.emit(
            ShipmentDelivered(order_id=order_id, shipment_id=shipment_id, delivered_at=self.clock),
            order_shipped,
            after_s=ship_after_s,
        )
        order_delivered = self.emit(
            OrderDelivered(order_id=order_id, customer_id=customer_id, delivered_at=self.clock),
            delivered,
        )
        events += [shipped, order_shipped, delivered, order_delivered]
        return order_id, events

    def return_and_refund(
        self, order_id: uuid.UUID, customer_id: uuid.UUID, refund: int, currency: str = "EUR"
    ) -> list[Published]:
        received = self.emit(
            ReturnReceived(
                order_id=order_id,
                customer_id=customer_id,
                return_id=uuid.uuid4(),
                rma_number="RMA-ABCD1234",
                lines=[InspectedLine(sku="MUG", quantity=1, result="restockable")],
                refund_minor=refund,
                currency=currency,
                received_at=self.clock,
            )
        )
        refunded = self.emit(
            PaymentRefunded(
                order_id=order_id,
                payment_id=uuid.uuid4(),
                refund_id=uuid.uuid4(),
                refund_minor=refund,
                total_refunded_minor=refund,
                currency=currency,
                full_refund=False,
                reason="return_received",
                refunded_at=self.clock,
            ),
            received,
        )
        return [received, refunded]

    def stock_low(self, sku: str, available: int, threshold: int = 5) -> Published:
        return self.emit(
            StockLow(sku=sku, available=available, threshold=threshold, detected_at=self.clock)
        )

    def stock_received(self, sku: str, quantity: int, on_hand: int) -> Published:
        return self.emit(
            StockReceived(
                sku=sku,
                quantity=quantity,
                on_hand=on_hand,
                source="purchase",
                received_at=self.clock,
            )
        )

    def case(
        self, customer_id: uuid.UUID, order_id: uuid.UUID | None, breach: bool = False
    ) -> list[Published]:
        case_id = uuid.uuid4()
        opened = self.emit(
            CaseOpened(
                case_id=case_id,
                order_id=order_id,
                customer_id=customer_id,
                kind="complaint",
                priority="normal",
                summary="parcel late",
                opened_at=self.clock,
                first_response_due_at=self.clock + timedelta(hours=4),
                resolution_due_at=self.clock + timedelta(days=2),
            )
        )
        if not breach:
            return [opened]
        breached = self.emit(
            CaseSlaBreached(
                case_id=case_id,
                order_id=order_id,
                customer_id=customer_id,
                kind="complaint",
                priority="normal",
                sla="first_response",
                due_at=self.clock,
                breached_at=self.clock,
            ),
            opened,
        )
        return [opened, breached]


async def produce(items: Sequence[Published], settings: KafkaSettings | None = None) -> list[Any]:
    """Put the events on their (prefixed) topics, keyed as the relays key them."""
    producer = kafka.producer(settings or KafkaSettings())
    await producer.start()
    try:
        futures = []
        for item in items:
            key, value, headers = item.encoded()
            futures.append(
                await producer.send(
                    topics.physical(item.event.topic), value=value, key=key, headers=headers
                )
            )
        return [await f for f in futures]
    finally:
        await producer.stop()
