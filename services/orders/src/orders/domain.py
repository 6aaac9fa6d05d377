"""The Order aggregate and its value objects. Pure domain: no I/O, no frameworks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from fulfilment_kit.commands import InvalidCommand, StateConflict

MAX_LINES = 100


class OrderStatus(StrEnum):
    PLACED = "placed"
    STOCK_LOCKED = "stock_locked"
    PAID = "paid"
    CANCELLATION_REQUESTED = "cancellation_requested"
    """The customer asked to cancel a paid order; shipping has not answered yet."""
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    PARTIALLY_RETURNED = "partially_returned"
    RETURNED = "returned"


# Stages an order waits in; each has a deadline (the others are terminal or after-sales).
WAITING_STAGES = (
    OrderStatus.PLACED,
    OrderStatus.STOCK_LOCKED,
    OrderStatus.PAID,
    OrderStatus.SHIPPED,
)
CANCELLABLE = (OrderStatus.PLACED, OrderStatus.STOCK_LOCKED, OrderStatus.PAID)
# Cancelled at once (nothing can ship: payment has not been taken); a paid order's
# cancellation is a request that shipping, the authority on whether goods left, answers.
CANCELLED_AT_ONCE = (OrderStatus.PLACED, OrderStatus.STOCK_LOCKED)
TERMINAL = (
    OrderStatus.DELIVERED,
    OrderStatus.REJECTED,
    OrderStatus.CANCELLED,
    OrderStatus.RETURNED,
)
# Statuses in which units of the order can come back (after-sales, no deadline).
RETURNABLE = (OrderStatus.DELIVERED, OrderStatus.PARTIALLY_RETURNED)


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price_minor: int

    @property
    def total_minor(self) -> int:
        return self.quantity * self.unit_price_minor


@dataclass(frozen=True)
class ReturnedLine:
    """Units of one SKU that came back in a return."""

    sku: str
    quantity: int


@dataclass(frozen=True)
class Address:
    """Where the order goes. Every field but the country holds a sealed value (personal data,
    `fulfilment_kit.privacy`); older events hold plaintext."""

    recipient_name: str
    line1: str
    line2: str | None
    city: str
    postal_code: str
    country_code: str
    phone: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Shortage:
    sku: str
    requested: int
    available: int


class InvalidOrder(InvalidCommand):
    """An order that breaks a domain invariant (422)."""

    title = "Invalid order"


class OrderConflict(StateConflict):
    """A command the order's current status does not allow (409)."""


class Order(Aggregate):
    """One customer order and its status machine.

    Reactions arrive from several topics, so their order across services is not
    guaranteed: a later fact (paid) may arrive before an earlier one (stock locked).
    Each reaction therefore records what it implies and ignores what is already past.
    """

    # The events, declared by the `@event` methods below (their arguments are the fields).
    Placed: ClassVar[type[Aggregate.Created]]
    StockLocked: ClassVar[type[Aggregate.Event]]
    Rejected: ClassVar[type[Aggregate.Event]]
    Paid: ClassVar[type[Aggregate.Event]]
    Cancelled: ClassVar[type[Aggregate.Event]]
    CancellationRequested: ClassVar[type[Aggregate.Event]]
    CancellationRefused: ClassVar[type[Aggregate.Event]]
    """Shipping refused the cancellation: the parcel had left (the order goes on)."""
    Shipped: ClassVar[type[Aggregate.Event]]
    ShippedAfterCancellation: ClassVar[type[Aggregate.Event]]
    """The carrier took the parcel although the order had been cancelled."""
    Delivered: ClassVar[type[Aggregate.Event]]
    PartiallyReturned: ClassVar[type[Aggregate.Event]]
    Returned: ClassVar[type[Aggregate.Event]]
    """Every delivered unit is back (the last return completed it)."""
    Flagged: ClassVar[type[Aggregate.Event]]

    @classmethod
    def place(
        cls,
        *,
        order_id: UUID,
        customer_id: UUID,
        lines: list[OrderLine],
        currency: str,
        shipping_address: Address,
        payment_token: str | None,
        request_fingerprint: str | None,
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
            payment_token=payment_token,
            request_fingerprint=request_fingerprint,
        )

    @event("Placed")
    def __init__(
        self,
        id: UUID,
        customer_id: UUID,
        lines: list[OrderLine],
        currency: str,
        shipping_address: Address,
        payment_token: str | None,
        request_fingerprint: str | None,
    ) -> None:
        self.customer_id = customer_id
        self.lines = list(lines)
        self.currency = currency
        self.shipping_address = shipping_address
        self.payment_token = payment_token
        self.request_fingerprint = request_fingerprint
        self.status = OrderStatus.PLACED
        self.stage_entered_at: datetime = self.created_on
        self.flagged_stages: list[str] = []
        self.shortages: list[Shortage] = []
        self.paid_minor = 0
        self.carrier: str | None = None
        self.tracking_number: str | None = None
        self.cancelled_by: str | None = None
        self.cancel_reason: str | None = None
        self.cancellation_pending = False
        """A cancellation was requested and shipping has not answered yet."""
        self.refused_cancellation = False
        self.returned: dict[str, int] = {}
        """Units received back per SKU, over all returns."""
        self.return_ids: list[UUID] = []
        self.returned_refund_minor = 0

    @property
    def total_minor(self) -> int:
        return sum(line.total_minor for line in self.lines)

    def _all_back_after(self, lines: list[ReturnedLine]) -> bool:
        back = dict(self.returned)
        for line in lines:
            back[line.sku] = back.get(line.sku, 0) + line.quantity
        return all(back.get(line.sku, 0) >= line.quantity for line in self.lines)

    # --- reactions to other services (idempotent: a fact already past is ignored) ---

    def stock_locked(self) -> None:
        if self.status is OrderStatus.PLACED:
            self._lock(customer_id=self.customer_id)

    def stock_rejected(self, shortages: list[Shortage]) -> None:
        if self.status is OrderStatus.PLACED:
            self._reject(customer_id=self.customer_id, shortages=shortages)

    def payment_captured(self, amount_minor: int) -> None:
        if self.status is OrderStatus.PLACED:
            self._lock(customer_id=self.customer_id)  # payment is only taken for locked stock
        if self.status is OrderStatus.STOCK_LOCKED:
            self._pay(
                customer_id=self.customer_id, amount_minor=amount_minor, currency=self.currency
            )

    def payment_failed(self, reason: str) -> None:
        if self.status in (OrderStatus.PLACED, OrderStatus.STOCK_LOCKED):
            self._cancel(
                customer_id=self.customer_id,
                cancelled_by="system",
                reason=f"payment failed: {reason}",
            )

    def shipment_shipped(self, carrier: str, tracking_number: str) -> None:
        # Shipped while a cancellation was requested: the parcel left, shipping will refuse.
        if self.status in (OrderStatus.PAID, OrderStatus.CANCELLATION_REQUESTED):
            self._ship(
                customer_id=self.customer_id, carrier=carrier, tracking_number=tracking_number
            )
        elif self.status is OrderStatus.CANCELLED and self.tracking_number is None:
            self._shipped_after_cancellation(
                customer_id=self.customer_id, carrier=carrier, tracking_number=tracking_number
            )

    def shipment_cancelled(self) -> None:
        """Shipping held the parcel: the requested cancellation is done (refund and release
        follow from shipping's event)."""
        if self.status is OrderStatus.CANCELLATION_REQUESTED:
            self._cancel(
                customer_id=self.customer_id,
                cancelled_by=self.cancelled_by or "customer",
                reason=self.cancel_reason or "cancelled by the customer",
            )

    def cancellation_refused(self) -> None:
        """Shipping refused: the parcel had left. The order goes on along its shipping path."""
        if self.cancellation_pending:
            self._refuse_cancellation(customer_id=self.customer_id)

    def shipment_delivered(self) -> None:
        if self.status is OrderStatus.SHIPPED:
            self._deliver(customer_id=self.customer_id)

    def return_received(
        self, return_id: UUID, lines: list[ReturnedLine], refund_minor: int
    ) -> bool:
        """Units came back: partially returned, or returned once every delivered unit is back.

        Ignored unless the order was delivered, and for a return already counted."""
        if self.status not in RETURNABLE or return_id in self.return_ids:
            return False
        ordered = {line.sku: line.quantity for line in self.lines}
        if not lines or any(
            line.sku not in ordered
            or line.quantity <= 0
            or self.returned.get(line.sku, 0) + line.quantity > ordered[line.sku]
            for line in lines
        ):
            raise InvalidOrder(f"return {return_id} does not fit the delivered units")
        mutator = self._returned if self._all_back_after(lines) else self._partially_returned
        mutator(
            customer_id=self.customer_id,
            return_id=return_id,
            lines=lines,
            refund_minor=refund_minor,
            currency=self.currency,
        )
        return True

    # --- commands ---

    def cancel(self, reason: str) -> bool:
        """The customer's cancellation: before payment it cancels at once; a paid order gets
        a cancellation *request* (shipping answers). False if either happened already."""
        if self.status in (OrderStatus.CANCELLED, OrderStatus.CANCELLATION_REQUESTED):
            return False
        if self.status not in CANCELLABLE or self.refused_cancellation:
            raise OrderConflict(f"order {self.id} is {self.status} and can no longer be cancelled")
        if self.status in CANCELLED_AT_ONCE:
            self._cancel(customer_id=self.customer_id, cancelled_by="customer", reason=reason)
        else:
            self._request_cancellation(
                customer_id=self.customer_id, requested_by="customer", reason=reason
            )
        return True

    def flag_overdue(self, stage: str, deadline_at: datetime) -> bool:
        """Flag the order as stuck in `stage` (once per stage); False if it moved on."""
        if self.status != stage or stage in self.flagged_stages:
            return False
        self._flag(
            customer_id=self.customer_id,
            stage=stage,
            stage_entered_at=self.stage_entered_at,
            deadline_at=deadline_at,
        )
        return True

    # --- state changes ---

    def _enter(self, status: OrderStatus) -> None:
        self.status = status
        self.stage_entered_at = self.modified_on

    @event("StockLocked")
    def _lock(self, customer_id: UUID) -> None:
        self._enter(OrderStatus.STOCK_LOCKED)

    @event("Rejected")
    def _reject(self, customer_id: UUID, shortages: list[Shortage]) -> None:
        self.shortages = list(shortages)
        self._enter(OrderStatus.REJECTED)

    @event("Paid")
    def _pay(self, customer_id: UUID, amount_minor: int, currency: str) -> None:
        self.paid_minor = amount_minor
        self._enter(OrderStatus.PAID)

    @event("Cancelled")
    def _cancel(self, customer_id: UUID, cancelled_by: str, reason: str) -> None:
        self.cancellation_pending = False
        self.cancelled_by = cancelled_by
        self.cancel_reason = reason
        self._enter(OrderStatus.CANCELLED)

    @event("CancellationRequested")
    def _request_cancellation(self, customer_id: UUID, requested_by: str, reason: str) -> None:
        self.cancelled_by = requested_by
        self.cancel_reason = reason
        self.cancellation_pending = True
        self._enter(OrderStatus.CANCELLATION_REQUESTED)

    @event("CancellationRefused")
    def _refuse_cancellation(self, customer_id: UUID) -> None:
        self.cancellation_pending = False
        self.refused_cancellation = True
        self.cancelled_by = None
        self.cancel_reason = None
        if self.status is OrderStatus.CANCELLATION_REQUESTED:
            self._enter(OrderStatus.SHIPPED if self.tracking_number else OrderStatus.PAID)

    @event("Shipped")
    def _ship(self, customer_id: UUID, carrier: str, tracking_number: str) -> None:
        self.carrier = carrier
        self.tracking_number = tracking_number
        self._enter(OrderStatus.SHIPPED)

    @event("ShippedAfterCancellation")
    def _shipped_after_cancellation(
        self, customer_id: UUID, carrier: str, tracking_number: str
    ) -> None:
        self.carrier = carrier
        self.tracking_number = tracking_number

    @event("Delivered")
    def _deliver(self, customer_id: UUID) -> None:
        self._enter(OrderStatus.DELIVERED)

    def _count_return(self, return_id: UUID, lines: list[ReturnedLine], refund_minor: int) -> None:
        for line in lines:
            self.returned[line.sku] = self.returned.get(line.sku, 0) + line.quantity
        self.return_ids = [*self.return_ids, return_id]
        self.returned_refund_minor += refund_minor

    @event("PartiallyReturned")
    def _partially_returned(
        self,
        customer_id: UUID,
        return_id: UUID,
        lines: list[ReturnedLine],
        refund_minor: int,
        currency: str,
    ) -> None:
        self._count_return(return_id, lines, refund_minor)
        if self.status is not OrderStatus.PARTIALLY_RETURNED:
            self._enter(OrderStatus.PARTIALLY_RETURNED)

    @event("Returned")
    def _returned(
        self,
        customer_id: UUID,
        return_id: UUID,
        lines: list[ReturnedLine],
        refund_minor: int,
        currency: str,
    ) -> None:
        self._count_return(return_id, lines, refund_minor)
        self._enter(OrderStatus.RETURNED)

    @event("Flagged")
    def _flag(
        self, customer_id: UUID, stage: str, stage_entered_at: datetime, deadline_at: datetime
    ) -> None:
        self.flagged_stages = [*self.flagged_stages, stage]


ERASURE_NAMESPACE = UUID("5d0c1f7e-8a43-4b36-9c2e-7f1a6b3d9e42")


def erasure_id_for(customer_id: UUID) -> UUID:
    """One erasure per customer: a second request finds the first (idempotent)."""
    from uuid import uuid5

    return uuid5(ERASURE_NAMESPACE, str(customer_id))


class CustomerErasure(Aggregate):
    """The audit record of a customer's erasure: who asked, with which role, when.

    The customer's data key is destroyed before this is saved, so a recorded erasure always
    means the key is gone (a crash in between is finished by the retry)."""

    Erased: ClassVar[type[Aggregate.Created]]

    @event("Erased")
    def __init__(self, customer_id: UUID, requested_by: str, requested_role: str) -> None:
        self.customer_id = customer_id
        self.requested_by = requested_by
        self.requested_role = requested_role

    @staticmethod
    def create_id(customer_id: UUID, **_: object) -> UUID:
        return erasure_id_for(customer_id)
