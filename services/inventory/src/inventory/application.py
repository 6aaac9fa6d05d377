"""The inventory application: stock commands and queries, and the policy reacting to orders."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import structlog
from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, JSONTranscoder
from eventsourcing.utils import get_topic

from fulfilment_kit.commands import NotFound
from fulfilment_kit.contracts import (
    OrderCancelled,
    OrderPlaced,
    PaymentFailed,
    ReturnReceived,
    ShipmentCancelled,
    ShipmentShipped,
)
from fulfilment_kit.idempotency import check_fingerprint, run_idempotently
from fulfilment_kit.messaging.inbox import InboundMessage, ProcessApplication
from fulfilment_kit.messaging.policy import by_order, policy
from fulfilment_kit.persistence.follower import LogFollower, Writes
from fulfilment_kit.persistence.transcodings import register_dataclasses
from fulfilment_kit.settings import read_settings
from fulfilment_kit.tracing import Trace
from inventory.domain import (
    IdempotencyMarker,
    ReleaseReason,
    Reservation,
    Restock,
    Shortage,
    StockItem,
    StockLine,
    idempotency_marker_id,
    reservation_id,
    restock_id,
    stock_item_id,
)
from inventory.settings import InventorySettings

log = structlog.get_logger(__name__)

SNAPSHOT_INTERVAL = 50
"""Events between two snapshots of a StockItem: a load replays at most this many."""

T = TypeVar("T", bound=Aggregate)


class SkuNotFound(NotFound, what="SKU"): ...


class ReservationNotFound(NotFound, what="reservation of order"): ...


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key and the fingerprint of the request that came with it."""

    key: str
    fingerprint: str


@dataclass(frozen=True)
class ReceiveStock:
    sku: str
    quantity: int
    reference: str | None
    trace: Trace
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class CountStock:
    sku: str
    counted_on_hand: int
    reason: str
    trace: Trace
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class SetThreshold:
    sku: str
    threshold: int
    trace: Trace


@dataclass(frozen=True)
class StockResult:
    item: StockItem
    replayed: bool = False


Change = Callable[[], tuple[StockItem, list[Aggregate]]]


def _reserved_items(event: Any, loaded: Mapping[UUID, Any]) -> list[UUID]:
    """The stock items of the order's locked reservation (prefetched by the class)."""
    reservation = loaded.get(reservation_id(event.order_id))
    if not isinstance(reservation, Reservation) or not reservation.is_locked:
        return []
    return [stock_item_id(line.sku) for line in reservation.lines]


class InventoryApplication(ProcessApplication):
    name = "inventory"
    prefetch = by_order(reservation_id)
    snapshotting_intervals = {StockItem: SNAPSHOT_INTERVAL}
    """A SKU's every reservation is an event on it: load it from a snapshot, not from birth."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self.default_threshold = read_settings(InventorySettings, self.env).default_threshold
        # SKUs known so far: a table followed from the log of creations (persisted position).
        self._creations = LogFollower(
            self, "inventory-skus", _project_skus, topics=[get_topic(StockItem.Created)]
        )

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_dataclasses(transcoder, StockLine, Shortage)

    # Commands (HTTP)

    def receive_stock(self, command: ReceiveStock) -> StockResult:
        """Add received units; a SKU seen for the first time is created."""

        def change() -> tuple[StockItem, list[Aggregate]]:
            item = self.find(stock_item_id(command.sku), StockItem)
            if item is None:
                item = StockItem.create(command.sku, self.default_threshold)
            item.receive(command.quantity, command.reference)
            return item, []

        return self._execute(command.sku, command.idempotency, command.trace, change)

    def count_stock(self, command: CountStock) -> StockResult:
        """Apply a cycle count: on hand becomes the counted figure."""

        def change() -> tuple[StockItem, list[Aggregate]]:
            item = self.get_stock(command.sku)
            item.count(command.counted_on_hand, command.reason)
            return item, []

        return self._execute(command.sku, command.idempotency, command.trace, change)

    def set_threshold(self, command: SetThreshold) -> StockResult:
        def change() -> tuple[StockItem, list[Aggregate]]:
            item = self.get_stock(command.sku)
            item.set_threshold(command.threshold)
            return item, []

        return self._execute(command.sku, None, command.trace, change)

    def _execute(
        self, sku: str, idempotency: Idempotency | None, trace: Trace, change: Change
    ) -> StockResult:
        """Run `change` and save it atomically with its idempotency marker; retry on conflict."""

        def attempt() -> StockItem:
            marker = None
            if idempotency is not None:
                marker = IdempotencyMarker(idempotency.key, idempotency.fingerprint, sku)
            item, others = change()
            try:
                self.save(item, *others, marker, trace=trace)
            except IntegrityError:
                log.info("stock command conflicted, retrying", sku=sku)
                raise
            return item

        replay = (lambda: self._replay(idempotency)) if idempotency is not None else lambda: None
        outcome = run_idempotently(replay=replay, attempt=attempt, what=f"stock of {sku}")
        return StockResult(outcome.result, replayed=not outcome.applied)

    def _replay(self, idempotency: Idempotency) -> StockItem | None:
        marker = self.find(idempotency_marker_id(idempotency.key), IdempotencyMarker)
        if marker is None:
            return None
        check_fingerprint(marker.fingerprint, idempotency.fingerprint)
        return self.get_stock(marker.sku)

    # Queries

    def get_stock(self, sku: str) -> StockItem:
        item = self.find(stock_item_id(sku), StockItem)
        if item is None:
            raise SkuNotFound(sku)
        return item

    def list_stock(
        self,
        below_threshold: bool | None = None,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[StockItem]:
        """Known SKUs sorted by SKU (after `after`), optionally only those below (or not below)
        threshold. Unfiltered, at most `limit` + 1 are loaded: one more than a page, so the
        caller knows whether another page follows."""
        skus = [sku for sku in self.known_skus() if after is None or sku > after]
        if below_threshold is None and limit is not None:
            skus = skus[: limit + 1]
        ids = {stock_item_id(sku): sku for sku in skus}
        # One query: each SKU cached is read after its cached version, the others from
        # their snapshot (private copies: the cache keeps its own).
        loaded = self.read_aggregates(list(ids))
        items = [loaded[i] for i in ids if i in loaded]
        if below_threshold is None:
            return items
        return [item for item in items if item.below_threshold is below_threshold]

    def known_skus(self) -> list[str]:
        """Every SKU ever created, sorted, read from the log of creations.

        No catalogue aggregate: one would make concurrent first receipts of different
        SKUs conflict with each other."""
        self._creations.catch_up()
        return sorted(item.key for item in self._creations.items("sku"))

    def get_reservation(self, order_id: UUID) -> Reservation:
        reservation = self.find(reservation_id(order_id), Reservation)
        if reservation is None:
            raise ReservationNotFound(order_id)
        return reservation

    # Policy (Kafka): every change goes on `processing`, saved with the tracking record.

    @policy(OrderPlaced, prefetch=lambda e: [reservation_id(e.order_id), *_items_of_lines(e)])
    def _order_placed(
        self, event: OrderPlaced, _: InboundMessage, processing: ProcessingEvent[UUID]
    ) -> None:
        """Reserve every line or none: lock, or reject naming each short SKU."""
        if self.get_for_update(processing, reservation_id(event.order_id), Reservation) is not None:
            return  # decided already (a redelivery at a new offset)
        wanted: dict[str, int] = {}
        for line in event.lines:
            wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        lines = [StockLine(sku, quantity) for sku, quantity in wanted.items()]
        items = {
            sku: self.get_for_update(processing, stock_item_id(sku), StockItem) for sku in wanted
        }
        shortages = [
            Shortage(sku, quantity, available)
            for sku, quantity in wanted.items()
            if (available := _available(items[sku])) < quantity
        ]
        if shortages:
            processing.collect_events(Reservation.reject(event.order_id, lines, shortages))
            log.info(
                "stock rejected", order_id=str(event.order_id), short=[s.sku for s in shortages]
            )
            return
        reservation = Reservation.lock(event.order_id, lines)
        for sku, quantity in wanted.items():
            item = items[sku]
            assert item is not None
            item.reserve(event.order_id, quantity)
            processing.collect_events(item)
        processing.collect_events(reservation)
        log.info("stock locked", order_id=str(event.order_id), lines=len(lines))

    @policy(OrderCancelled, prefetch_then=_reserved_items)
    def _order_cancelled(
        self, event: OrderCancelled, _: InboundMessage, processing: ProcessingEvent[UUID]
    ) -> None:
        self._release(event.order_id, "order_cancelled", processing)

    @policy(PaymentFailed, prefetch_then=_reserved_items)
    def _payment_failed(
        self, event: PaymentFailed, _: InboundMessage, processing: ProcessingEvent[UUID]
    ) -> None:
        self._release(event.order_id, "payment_failed", processing)

    @policy(ShipmentCancelled, prefetch_then=_reserved_items)
    def _shipment_cancelled(
        self, event: ShipmentCancelled, _: InboundMessage, processing: ProcessingEvent[UUID]
    ) -> None:
        """Shipping held the parcel (it never leaves): the reservation is released."""
        self._release(event.order_id, "order_cancelled", processing)

    @policy(ShipmentShipped, prefetch_then=_reserved_items)
    def _shipment_shipped(
        self, event: ShipmentShipped, _: InboundMessage, processing: ProcessingEvent[UUID]
    ) -> None:
        """The order's reserved units left the warehouse: commit them."""
        reservation = self._locked(event.order_id, processing)
        if reservation is None:
            return
        for item in self._items_of(reservation, processing):
            item.commit(reservation.order_id)
            processing.collect_events(item)
        reservation.commit()
        processing.collect_events(reservation)
        log.info("stock committed", order_id=str(event.order_id))

    @policy(
        ReturnReceived,
        prefetch=lambda e: [
            reservation_id(e.order_id),
            *_items_of_lines(e),
            restock_id(e.return_id),
        ],
    )
    def _return_received(
        self, event: ReturnReceived, _: InboundMessage, processing: ProcessingEvent[UUID]
    ) -> None:
        """Put the restockable units of a return back on hand; damaged units stay out."""
        if self.get_for_update(processing, restock_id(event.return_id), Restock) is not None:
            return  # restocked already (a redelivery at a new offset)
        wanted: dict[str, int] = {}
        for line in event.lines:
            if line.result == "restockable":
                wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
        for sku, quantity in wanted.items():
            item = self.get_for_update(processing, stock_item_id(sku), StockItem)
            if item is None:  # a SKU sold once but unknown here: create it, like a receipt
                item = StockItem.create(sku, self.default_threshold)
            item.restock(quantity, event.order_id, event.return_id)
            processing.collect_events(item)
        lines = [StockLine(sku, quantity) for sku, quantity in wanted.items()]
        processing.collect_events(Restock.record(event.return_id, event.order_id, lines))
        log.info(
            "return restocked",
            order_id=str(event.order_id),
            units=sum(wanted.values()),
            damaged=sum(x.quantity for x in event.lines if x.result == "damaged"),
        )

    def _release(
        self, order_id: UUID, reason: ReleaseReason, processing: ProcessingEvent[UUID]
    ) -> None:
        reservation = self._locked(order_id, processing)
        if reservation is None:
            return
        for item in self._items_of(reservation, processing):
            item.release(order_id)
            processing.collect_events(item)
        reservation.release(reason)
        processing.collect_events(reservation)
        log.info("stock released", order_id=str(order_id), reason=reason)

    def _locked(self, order_id: UUID, processing: ProcessingEvent[UUID]) -> Reservation | None:
        reservation = self.get_for_update(processing, reservation_id(order_id), Reservation)
        return reservation if reservation is not None and reservation.is_locked else None

    def _items_of(
        self, reservation: Reservation, processing: ProcessingEvent[UUID]
    ) -> list[StockItem]:
        ids = [stock_item_id(line.sku) for line in reservation.lines]
        items = []
        for line, item in zip(
            reservation.lines, self.get_many_for_update(processing, ids, StockItem), strict=True
        ):
            if item is None:  # a locked reservation's items exist: the store is inconsistent
                raise LookupError(f"stock item {line.sku} of a locked reservation is missing")
            items.append(item)
        return items


def _items_of_lines(event: OrderPlaced | ReturnReceived) -> list[UUID]:
    return [stock_item_id(line.sku) for line in event.lines]


def _available(item: StockItem | None) -> int:
    """Available units of a SKU; an unknown SKU has none."""
    return 0 if item is None else item.available


def _project_skus(events: Sequence[Any], writes: Writes) -> None:
    for event in events:
        writes.put("sku", event.sku)
