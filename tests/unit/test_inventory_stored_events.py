"""Events stored before the trace left the inventory's signatures still load, and events
recorded now keep the stored names and fields (the fixture was recorded from that code)."""

from __future__ import annotations

import uuid
from pathlib import Path

from fulfilment_kit.tracing import Trace
from inventory.application import InventoryApplication
from inventory.contracts import to_public
from inventory.domain import (
    IdempotencyMarker,
    Reservation,
    ReservationStatus,
    Restock,
    Shortage,
    StockItem,
    StockLine,
    idempotency_marker_id,
    restock_id,
)
from tests.support.stored_events import load, published, shapes, with_stored

RELEASED, COMMITTED, REJECTED = (
    uuid.UUID(f"1111111{i}-1111-4111-8111-111111111111") for i in (1, 2, 3)
)
RETURN_ID = uuid.UUID("33333333-3333-4333-8333-333333333333")
POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}

STORED = load(Path(__file__).parent / "inventory_stored_events.json")
"""(originator id, version, topic, state) of each event as the code before the change stored it."""


def _app_with_old_events() -> InventoryApplication:
    return with_stored(InventoryApplication(env=POPO), STORED)


def test_stock_stored_by_the_old_code_loads_in_its_state_and_is_listed() -> None:
    app = _app_with_old_events()
    item = app.get_stock("SKU-1")
    assert (item.on_hand, item.reserved, item.low_stock_threshold) == (4, 0, 4)
    assert app.known_skus() == ["SKU-1"]
    assert app.get_reservation(RELEASED).status is ReservationStatus.RELEASED
    assert app.get_reservation(COMMITTED).status is ReservationStatus.COMMITTED
    rejected = app.get_reservation(REJECTED)
    assert rejected.status is ReservationStatus.REJECTED
    assert rejected.shortages == [Shortage("SKU-1", 50, 3)]
    restock = app.find(restock_id(RETURN_ID), Restock)
    assert restock is not None
    assert restock.lines == [StockLine("SKU-1", 1)]
    marker = app.find(idempotency_marker_id("key-1"), IdempotencyMarker)
    assert marker is not None
    assert (marker.fingerprint, marker.sku) == ("fp-1", "SKU-1")


def test_each_stored_event_maps_to_its_public_event_with_its_stored_trace() -> None:
    assert published(_app_with_old_events(), to_public) == [
        ("StockReceived", "corr", "cause-2"),
        ("StockAdjusted", "corr", "cause-3"),
        ("StockLow", "corr", "cause-7"),
        ("StockReceived", "corr", "cause-9"),
        ("StockLocked", "corr", "cause-5"),
        ("StockReleased", "corr", "cause-6"),
        ("StockLocked", "corr", "cause-7"),
        ("StockCommitted", "corr", "cause-8"),
        ("StockRejected", "corr", "cause-10"),
    ]


def test_events_recorded_now_have_the_stored_names_and_fields() -> None:
    """The same story recorded by today's code: each event's name and fields (and `trace`)
    as stored before."""
    app = InventoryApplication(env=POPO)
    item = StockItem.create("SKU-1", 5)
    item.receive(10, "PO-1")
    item.count(9, "cycle count")
    item.set_threshold(4)
    item.reserve(RELEASED, 2)
    item.release(RELEASED)
    item.reserve(COMMITTED, 6)  # 3 available of threshold 4: LowStockDetected
    item.commit(COMMITTED)
    item.restock(1, COMMITTED, RETURN_ID)
    released = Reservation.lock(RELEASED, [StockLine("SKU-1", 2)])
    released.release("order_cancelled")
    committed = Reservation.lock(COMMITTED, [StockLine("SKU-1", 6)])
    committed.commit()
    rejected = Reservation.reject(REJECTED, [StockLine("SKU-1", 50)], [Shortage("SKU-1", 50, 3)])
    restock = Restock.record(RETURN_ID, COMMITTED, [StockLine("SKU-1", 1)])
    marker = IdempotencyMarker("key-1", "fp-1", "SKU-1")
    app.save(item, released, committed, rejected, restock, marker, trace=Trace("corr", "cause"))

    assert shapes(app) == shapes(_app_with_old_events())
