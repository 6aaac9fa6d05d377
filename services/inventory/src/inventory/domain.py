"""Stock items and reservations. Pure domain: no I/O, no frameworks."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from fulfilment_kit.commands import InvalidCommand, StateConflict

INVENTORY_NAMESPACE = uuid.UUID("3e5c2b7a-9d41-4f0e-8a6b-1c2d3e4f5a6b")

DEFAULT_LOW_STOCK_THRESHOLD = 5
MAX_STOCK = 10**9
"""Most units a count, on-hand figure or threshold may be (the public contract's bound)."""
MAX_LINE_QUANTITY = 10_000
"""Most units of one SKU in one receipt or one order line (the public contract's bound)."""
MAX_RESERVATION_LINES = 100
MAX_REASON_LENGTH = 500

ReleaseReason = Literal["order_cancelled", "payment_failed", "expired"]
RELEASE_REASONS: tuple[ReleaseReason, ...] = ("order_cancelled", "payment_failed", "expired")


@functools.lru_cache(maxsize=8192)  # every line of every record asks; uuid5 hashes
def stock_item_id(sku: str) -> UUID:
    return uuid.uuid5(INVENTORY_NAMESPACE, f"stock-item:{sku}")


@functools.lru_cache(maxsize=8192)
def reservation_id(order_id: UUID) -> UUID:
    return uuid.uuid5(INVENTORY_NAMESPACE, f"reservation:{order_id}")


def idempotency_marker_id(key: str) -> UUID:
    return uuid.uuid5(INVENTORY_NAMESPACE, f"idempotency:{key}")


def restock_id(return_id: UUID) -> UUID:
    return uuid.uuid5(INVENTORY_NAMESPACE, f"restock:{return_id}")


class InventoryError(StateConflict):
    """A command that breaks an inventory invariant (409)."""


class InvalidQuantity(InvalidCommand, InventoryError):
    """A quantity, count, threshold or reason outside its allowed range (422)."""

    title = "Invalid stock change"


class InsufficientStock(InventoryError):
    """More units were asked for than are available."""


class CountBelowReserved(InventoryError):
    """A cycle count below the units already reserved for orders."""


class ReservationConflict(InventoryError):
    """An order already holds a different reservation of this SKU."""


class InvalidTransition(InventoryError):
    """A reservation cannot move from its current status to the one asked for."""


@dataclass(frozen=True)
class StockLine:
    """Units of one SKU for one order."""

    sku: str
    quantity: int


@dataclass(frozen=True)
class Shortage:
    """A SKU that could not be reserved: requested versus available units."""

    sku: str
    requested: int
    available: int


def _check_count(name: str, value: int, low: int = 0, high: int = MAX_STOCK) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidQuantity(f"{name} must be a whole number from {low} to {high}, not {value!r}")


class StockItem(Aggregate):
    """Stock of one SKU: on hand, reserved per order, and the low-stock threshold."""

    # The events, declared by the `@event` methods below (their arguments are the fields).
    Created: ClassVar[type[Aggregate.Created]]
    Received: ClassVar[type[Aggregate.Event]]
    Counted: ClassVar[type[Aggregate.Event]]
    ThresholdSet: ClassVar[type[Aggregate.Event]]
    Reserved: ClassVar[type[Aggregate.Event]]
    Released: ClassVar[type[Aggregate.Event]]
    Committed: ClassVar[type[Aggregate.Event]]
    LowStockDetected: ClassVar[type[Aggregate.Event]]
    Restocked: ClassVar[type[Aggregate.Event]]
    """Units of a customer return went back on the shelf."""

    @staticmethod
    def create_id(sku: str) -> UUID:
        return stock_item_id(sku)

    @classmethod
    def create(cls, sku: str, low_stock_threshold: int) -> StockItem:
        """A new SKU with nothing on hand."""
        if not sku:
            raise InvalidQuantity("sku must not be empty")
        _check_count("low_stock_threshold", low_stock_threshold)
        return cls(sku=sku, low_stock_threshold=low_stock_threshold)

    @event("Created")
    def __init__(self, sku: str, low_stock_threshold: int) -> None:
        self.sku = sku
        self.on_hand = 0
        self.low_stock_threshold = low_stock_threshold
        self.reservations: dict[str, int] = {}
        """Units reserved per order (keyed by the order id as text)."""

    @property
    def reserved(self) -> int:
        return sum(self.reservations.values())

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    @property
    def below_threshold(self) -> bool:
        return self.available < self.low_stock_threshold

    def reserved_for(self, order_id: UUID) -> int:
        return self.reservations.get(str(order_id), 0)

    # Commands: check first, then record.

    def receive(self, quantity: int, reference: str | None = None) -> None:
        _check_count("quantity", quantity, 1, MAX_LINE_QUANTITY)
        if self.on_hand + quantity > MAX_STOCK:
            raise InvalidQuantity(f"on hand would exceed {MAX_STOCK} units")
        self._received(self.sku, quantity, self.on_hand + quantity, reference)

    def restock(self, quantity: int, order_id: UUID, return_id: UUID) -> None:
        """Returned units of `order_id` that can be sold again."""
        _check_count("quantity", quantity, 1, MAX_LINE_QUANTITY)
        if self.on_hand + quantity > MAX_STOCK:
            raise InvalidQuantity(f"on hand would exceed {MAX_STOCK} units")
        self._restocked(self.sku, quantity, self.on_hand + quantity, order_id, return_id)

    def count(self, counted_on_hand: int, reason: str) -> None:
        """A cycle count: on hand becomes what was counted."""
        _check_count("counted_on_hand", counted_on_hand)
        if not reason or len(reason) > MAX_REASON_LENGTH:
            raise InvalidQuantity(f"reason must be 1 to {MAX_REASON_LENGTH} characters")
        if counted_on_hand < self.reserved:
            raise CountBelowReserved(
                f"counted {counted_on_hand} units of {self.sku} but {self.reserved} are "
                "reserved for orders"
            )
        with self._watching_low_stock():
            self._counted(self.sku, counted_on_hand, counted_on_hand - self.on_hand, reason)

    def set_threshold(self, threshold: int) -> None:
        _check_count("threshold", threshold)
        if threshold == self.low_stock_threshold:
            return
        with self._watching_low_stock():
            self._threshold_set(threshold)

    def reserve(self, order_id: UUID, quantity: int) -> None:
        """Hold `quantity` units for the order; never more than available."""
        _check_count("quantity", quantity, 1, MAX_STOCK)
        held = self.reserved_for(order_id)
        if held == quantity:
            return
        if held:
            raise ReservationConflict(f"order {order_id} already holds {held} of {self.sku}")
        if quantity > self.available:
            raise InsufficientStock(
                f"{quantity} units of {self.sku} requested, {self.available} available"
            )
        with self._watching_low_stock():
            self._reserved(order_id, quantity)

    def release(self, order_id: UUID) -> None:
        """Give the order's reserved units back; nothing to do when it holds none."""
        held = self.reserved_for(order_id)
        if held:
            self._released(order_id, held)

    def commit(self, order_id: UUID) -> None:
        """The order's reserved units left the warehouse: on hand and reserved both drop."""
        held = self.reserved_for(order_id)
        if held:
            self._committed(order_id, held)

    @contextmanager
    def _watching_low_stock(self) -> Iterator[None]:
        """Records LowStockDetected when the change takes the SKU below its threshold."""
        was_below = self.below_threshold
        yield
        if not was_below and self.below_threshold:
            self._low_stock_detected(self.sku, self.available, self.low_stock_threshold)

    # Mutators: apply recorded facts, no checks.

    @event("Received")
    def _received(self, sku: str, quantity: int, on_hand: int, reference: str | None) -> None:
        self.on_hand = on_hand

    @event("Restocked")
    def _restocked(
        self,
        sku: str,
        quantity: int,
        on_hand: int,
        order_id: UUID,
        return_id: UUID,
    ) -> None:
        self.on_hand = on_hand

    @event("Counted")
    def _counted(self, sku: str, counted_on_hand: int, delta: int, reason: str) -> None:
        self.on_hand = counted_on_hand

    @event("ThresholdSet")
    def _threshold_set(self, threshold: int) -> None:
        self.low_stock_threshold = threshold

    @event("Reserved")
    def _reserved(self, order_id: UUID, quantity: int) -> None:
        self.reservations[str(order_id)] = quantity

    @event("Released")
    def _released(self, order_id: UUID, quantity: int) -> None:
        self.reservations.pop(str(order_id), None)

    @event("Committed")
    def _committed(self, order_id: UUID, quantity: int) -> None:
        self.reservations.pop(str(order_id), None)
        self.on_hand -= quantity

    @event("LowStockDetected")
    def _low_stock_detected(self, sku: str, available: int, threshold: int) -> None:
        pass


class ReservationStatus(StrEnum):
    LOCKED = "locked"
    REJECTED = "rejected"
    RELEASED = "released"
    COMMITTED = "committed"


def _check_lines(lines: Sequence[StockLine]) -> None:
    if not 1 <= len(lines) <= MAX_RESERVATION_LINES:
        raise InvalidQuantity(f"a reservation has 1 to {MAX_RESERVATION_LINES} lines")
    skus = [line.sku for line in lines]
    if len(set(skus)) != len(skus):
        raise InvalidQuantity("each SKU may appear in one line of a reservation only")
    for line in lines:
        _check_count(f"quantity of {line.sku}", line.quantity, 1, MAX_LINE_QUANTITY)


class Reservation(Aggregate):
    """The stock decision for one order: all lines locked, or rejected with shortages."""

    class Locked(Aggregate.Created):
        order_id: UUID
        lines: list[StockLine]

        def apply(self, aggregate: Any) -> None:
            aggregate.status = ReservationStatus.LOCKED

    class Rejected(Aggregate.Created):
        order_id: UUID
        lines: list[StockLine]
        shortages: list[Shortage]

        def apply(self, aggregate: Any) -> None:
            aggregate.status = ReservationStatus.REJECTED
            aggregate.shortages = list(self.shortages)

    Released: ClassVar[type[Aggregate.Event]]
    Committed: ClassVar[type[Aggregate.Event]]

    @classmethod
    def lock(cls, order_id: UUID, lines: Sequence[StockLine]) -> Reservation:
        """Record that every line is reserved (the stock items hold the units)."""
        _check_lines(lines)
        return cls._create(
            cls.Locked,
            id=reservation_id(order_id),
            order_id=order_id,
            lines=list(lines),
        )

    @classmethod
    def reject(
        cls,
        order_id: UUID,
        lines: Sequence[StockLine],
        shortages: Sequence[Shortage],
    ) -> Reservation:
        """Record that the order cannot be served; nothing is reserved."""
        _check_lines(lines)
        if not shortages:
            raise InvalidQuantity("a rejected reservation names at least one shortage")
        return cls._create(
            cls.Rejected,
            id=reservation_id(order_id),
            order_id=order_id,
            lines=list(lines),
            shortages=list(shortages),
        )

    def __init__(self, order_id: UUID, lines: list[StockLine]) -> None:
        self.order_id = order_id
        self.lines = list(lines)
        self.status = ReservationStatus.LOCKED
        self.shortages: list[Shortage] = []

    @property
    def is_locked(self) -> bool:
        return self.status is ReservationStatus.LOCKED

    def release(self, reason: ReleaseReason) -> None:
        if reason not in RELEASE_REASONS:
            raise InvalidQuantity(f"unknown release reason {reason!r}")
        self._require_locked("release")
        self._released(self.order_id, self.lines, reason)

    def commit(self) -> None:
        self._require_locked("commit")
        self._committed(self.order_id, self.lines)

    def _require_locked(self, action: str) -> None:
        if not self.is_locked:
            raise InvalidTransition(f"cannot {action} a {self.status} reservation")

    @event("Released")
    def _released(self, order_id: UUID, lines: list[StockLine], reason: str) -> None:
        self.status = ReservationStatus.RELEASED

    @event("Committed")
    def _committed(self, order_id: UUID, lines: list[StockLine]) -> None:
        self.status = ReservationStatus.COMMITTED


class Restock(Aggregate):
    """Marks a customer return as put back on the shelf: a second one is a version conflict."""

    Recorded: ClassVar[type[Aggregate.Created]]

    @staticmethod
    def create_id(return_id: UUID) -> UUID:
        return restock_id(return_id)

    @classmethod
    def record(cls, return_id: UUID, order_id: UUID, lines: Sequence[StockLine]) -> Restock:
        """The restockable units of one return (may be none: everything came back damaged)."""
        for line in lines:
            _check_count(f"quantity of {line.sku}", line.quantity, 1, MAX_LINE_QUANTITY)
        return cls(return_id=return_id, order_id=order_id, lines=list(lines))

    @event("Recorded")
    def __init__(self, return_id: UUID, order_id: UUID, lines: list[StockLine]) -> None:
        self.return_id = return_id
        self.order_id = order_id
        self.lines = list(lines)


class IdempotencyMarker(Aggregate):
    """Remembers that a request with this Idempotency-Key was applied, and what it was."""

    Recorded: ClassVar[type[Aggregate.Created]]

    @staticmethod
    def create_id(key: str) -> UUID:
        return idempotency_marker_id(key)

    @event("Recorded")
    def __init__(self, key: str, fingerprint: str, sku: str) -> None:
        self.key = key
        self.fingerprint = fingerprint
        self.sku = sku
