"""Invariants of StockItem and Reservation (pure domain, no store)."""

from __future__ import annotations

import uuid

import pytest

from fulfilment_kit.tracing import Trace, stamp
from inventory.domain import (
    CountBelowReserved,
    InsufficientStock,
    InvalidQuantity,
    InvalidTransition,
    Reservation,
    ReservationConflict,
    ReservationStatus,
    Shortage,
    StockItem,
    StockLine,
    reservation_id,
    stock_item_id,
)

TRACE = Trace("corr-1", "cause-1")


def item(on_hand: int = 10, threshold: int = 5) -> StockItem:
    stock = StockItem.create("MUG", threshold)
    if on_hand:
        stock.receive(on_hand)
    stock.collect_events()
    return stock


def names(stock: StockItem | Reservation) -> list[str]:
    return [type(e).__name__ for e in stock.collect_events()]


def test_ids_are_deterministic() -> None:
    order_id = uuid.uuid4()
    assert StockItem.create("MUG", 5).id == stock_item_id("MUG")
    assert stock_item_id("MUG") != stock_item_id("TEE")
    assert Reservation.lock(order_id, [StockLine("MUG", 1)]).id == reservation_id(order_id)


def test_receive_adds_to_on_hand_and_every_event_carries_the_trace() -> None:
    stock = StockItem.create("MUG", 5)
    stock.receive(7, reference="PO-1")
    stock.receive(3)
    assert (stock.on_hand, stock.reserved, stock.available) == (10, 0, 10)
    stamp(TRACE, stock.pending_events)  # as the application layer does
    events = stock.collect_events()
    assert [type(e).__name__ for e in events] == ["Created", "Received", "Received"]
    assert all(e.trace == TRACE for e in events)  # type: ignore[attr-defined]


@pytest.mark.parametrize("quantity", [0, -1, 10_001, True])
def test_receive_refuses_quantities_out_of_range(quantity: int) -> None:
    stock = item()
    with pytest.raises(InvalidQuantity):
        stock.receive(quantity)
    assert stock.collect_events() == []


def test_reserve_never_makes_available_negative() -> None:
    stock = item(on_hand=3, threshold=0)
    stock.reserve(uuid.uuid4(), 2)
    with pytest.raises(InsufficientStock, match="1 available"):
        stock.reserve(uuid.uuid4(), 2)
    assert (stock.on_hand, stock.reserved, stock.available) == (3, 2, 1)


def test_reserve_is_idempotent_per_order_and_refuses_a_different_quantity() -> None:
    stock = item(threshold=0)
    order_id = uuid.uuid4()
    stock.reserve(order_id, 4)
    stock.reserve(order_id, 4)
    assert names(stock) == ["Reserved"]
    with pytest.raises(ReservationConflict):
        stock.reserve(order_id, 5)
    assert stock.reserved_for(order_id) == 4


def test_release_and_commit_are_exact_and_idempotent() -> None:
    stock = item(on_hand=10, threshold=0)
    kept, released, shipped = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    stock.reserve(kept, 1)
    stock.reserve(released, 2)
    stock.reserve(shipped, 3)
    stock.release(released)
    stock.release(released)
    stock.commit(shipped)
    stock.commit(shipped)
    stock.release(uuid.uuid4())  # never reserved: nothing to do
    assert (stock.on_hand, stock.reserved, stock.available) == (7, 1, 6)
    assert names(stock) == ["Reserved"] * 3 + ["Released", "Committed"]


def test_cycle_count_sets_on_hand_and_refuses_a_count_below_reserved() -> None:
    stock = item(on_hand=10, threshold=0)
    stock.reserve(uuid.uuid4(), 4)
    stock.count(6, "cycle count")
    events = stock.collect_events()
    assert events[-1].delta == -4  # type: ignore[attr-defined]
    assert (stock.on_hand, stock.available) == (6, 2)
    with pytest.raises(CountBelowReserved, match="4 are reserved"):
        stock.count(3, "cycle count")
    with pytest.raises(InvalidQuantity):
        stock.count(8, "")
    assert stock.on_hand == 6


def test_low_stock_is_detected_once_per_downward_crossing() -> None:
    stock = item(on_hand=10, threshold=5)
    stock.reserve(uuid.uuid4(), 5)  # available 5: at threshold, not below
    assert names(stock) == ["Reserved"]
    second = uuid.uuid4()
    stock.reserve(second, 1)  # 4 < 5: crossed
    stock.reserve(uuid.uuid4(), 1)  # still below: no second alert
    events = stock.collect_events()
    assert [type(e).__name__ for e in events] == ["Reserved", "LowStockDetected", "Reserved"]
    assert (events[1].available, events[1].threshold) == (4, 5)  # type: ignore[attr-defined]

    stock.release(second)
    stock.receive(5)  # back above the threshold
    assert "LowStockDetected" not in names(stock)
    stock.count(stock.reserved + 2, "recount")  # crossed again by a count
    assert names(stock) == ["Counted", "LowStockDetected"]


def test_raising_the_threshold_over_available_is_a_crossing() -> None:
    stock = item(on_hand=10, threshold=5)
    stock.set_threshold(5)
    assert names(stock) == []
    stock.set_threshold(11)
    assert names(stock) == ["ThresholdSet", "LowStockDetected"]
    assert stock.below_threshold
    with pytest.raises(InvalidQuantity):
        stock.set_threshold(-1)


def test_reservation_lock_then_release_or_commit_once() -> None:
    order_id = uuid.uuid4()
    reservation = Reservation.lock(order_id, [StockLine("MUG", 2)])
    assert reservation.status is ReservationStatus.LOCKED
    reservation.release("payment_failed")
    assert reservation.status is ReservationStatus.RELEASED
    with pytest.raises(InvalidTransition):
        reservation.commit()
    with pytest.raises(InvalidTransition):
        reservation.release("order_cancelled")
    assert names(reservation) == ["Locked", "Released"]


def test_rejected_reservation_names_its_shortages_and_cannot_move() -> None:
    shortage = Shortage("MUG", requested=3, available=1)
    reservation = Reservation.reject(uuid.uuid4(), [StockLine("MUG", 3)], [shortage])
    assert reservation.status is ReservationStatus.REJECTED
    assert reservation.shortages == [shortage]
    with pytest.raises(InvalidTransition):
        reservation.commit()
    with pytest.raises(InvalidQuantity):
        Reservation.reject(uuid.uuid4(), [StockLine("MUG", 3)], [])


@pytest.mark.parametrize(
    "lines",
    [[], [StockLine("MUG", 1), StockLine("MUG", 1)], [StockLine("MUG", 0)]],
)
def test_reservation_lines_are_checked(lines: list[StockLine]) -> None:
    with pytest.raises(InvalidQuantity):
        Reservation.lock(uuid.uuid4(), lines)
