"""The Order aggregate and its value objects. Pure domain: no I/O, no frameworks."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from fulfilment_kit.tracing import Trace

MAX_LINES = 100


class OrderStatus(StrEnum):
    PLACED = "placed"
    STOCK_LOCKED = "stock_locked"
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    RETURNED = "returned"


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price_minor: int

    @property
    def total_minor(self) -> int:
        return self.quantity * self.unit_price_minor


@dataclass(frozen=True)
class Address:
    recipient_name: str
    line1: str
    line2: str | None
    city: str
    postal_code: str
    country_code: str


class InvalidOrder(ValueError):
    """An order that breaks a domain invariant."""


class Order(Aggregate):
    """One customer order and its status machine."""

    class Placed(Aggregate.Created):
        customer_id: UUID
        lines: list[OrderLine]
        currency: str
        shipping_address: Address
        request_fingerprint: str | None
        trace: Trace

    @classmethod
    def place(
        cls,
        *,
        order_id: UUID,
        customer_id: UUID,
        lines: list[OrderLine],
        currency: str,
        shipping_address: Address,
        request_fingerprint: str | None,
        trace: Trace,
    ) -> Order:
        """Check the invariants, then place the order."""
        if not lines:
            raise InvalidOrder("an order needs at least one line")
        if len(lines) > MAX_LINES:
            raise InvalidOrder(f"an order has at most {MAX_LINES} lines")
        skus = [line.sku for line in lines]
        if len(set(skus)) != len(skus):
            raise InvalidOrder("each SKU may appear in one line only")
        if any(line.quantity <= 0 or line.unit_price_minor <= 0 for line in lines):
            raise InvalidOrder("quantities and prices must be positive")
        return cls(
            id=order_id,
            customer_id=customer_id,
            lines=lines,
            currency=currency,
            shipping_address=shipping_address,
            request_fingerprint=request_fingerprint,
            trace=trace,
        )

    @event(Placed)
    def __init__(
        self,
        id: UUID,
        customer_id: UUID,
        lines: list[OrderLine],
        currency: str,
        shipping_address: Address,
        request_fingerprint: str | None,
        trace: Trace,
    ) -> None:
        self.customer_id = customer_id
        self.lines = list(lines)
        self.currency = currency
        self.shipping_address = shipping_address
        self.request_fingerprint = request_fingerprint
        self.status = OrderStatus.PLACED

    @property
    def total_minor(self) -> int:
        return sum(line.total_minor for line in self.lines)
