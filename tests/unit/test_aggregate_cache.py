"""The kit's aggregate cache: a batch reads only the events newer than the cached version, a
writer the cache did not see is never hidden, and a failed batch leaves nothing half-applied
in it (in-memory store; two processes on PostgreSQL: tests/integration/test_aggregate_cache.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from fulfilment_kit.contracts import topics
from fulfilment_kit.persistence.batch_load import AggregateCache
from fulfilment_kit.tracing import Trace
from inventory.application import InventoryApplication, ReceiveStock
from inventory.domain import StockItem, stock_item_id
from tests.support.messages import inbound
from tests.unit.test_inventory_policy import placed

TRACKING = f"inventory:{topics.ORDERS}:0"


class Decoded:
    """Counts the stored events the application decodes (instrumentation, not a stand-in)."""

    def __init__(self, app: InventoryApplication, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        wrapped = app.mapper.to_domain_event

        def counting(stored: Any) -> Any:
            self.calls += 1
            return wrapped(stored)

        monkeypatch.setattr(app.mapper, "to_domain_event", counting)


class Feed:
    def __init__(self, app: InventoryApplication) -> None:
        self.app = app
        self.offset = 0

    def order(self, sku: str, quantity: int) -> None:
        message = inbound(placed((sku, quantity)), offset=self.offset)
        self.offset += 1
        self.app.process_messages([message], Tracking(TRACKING, self.offset))


@pytest.fixture
def app() -> Iterator[InventoryApplication]:
    application = InventoryApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield application
    application.close()


def receive(app: InventoryApplication, sku: str, quantity: int) -> None:
    app.receive_stock(ReceiveStock(sku, quantity, None, Trace("corr", f"receipt:{sku}")))


def test_a_cached_stock_item_is_not_replayed_by_the_next_batch(
    app: InventoryApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    receive(app, "MUG", 10)
    feed = Feed(app)
    feed.order("MUG", 1)  # loads the SKU from its events, then keeps it
    assert app.aggregate_cache.version(stock_item_id("MUG")) == app.get_stock("MUG").version

    decoded = Decoded(app, monkeypatch)
    hits = app.aggregate_cache.hits
    for _ in range(5):
        feed.order("MUG", 1)
    assert decoded.calls == 0, "every batch found the SKU cached at its newest version"
    assert app.aggregate_cache.hits >= hits + 5
    assert app.get_stock("MUG").reserved == 6


def test_a_write_the_cache_did_not_see_is_read_before_the_batch_decides(
    app: InventoryApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    receive(app, "MUG", 1)
    feed = Feed(app)
    feed.order("MUG", 1)  # cached: nothing left
    cached = app.aggregate_cache.version(stock_item_id("MUG"))
    # Another writer (a command on a private copy; a second replica in the integration test)
    # records a receipt the cached object never saw.
    receive(app, "MUG", 3)
    assert app.aggregate_cache.version(stock_item_id("MUG")) == cached

    decoded = Decoded(app, monkeypatch)
    feed.order("MUG", 3)  # only possible with the receipt applied
    assert decoded.calls == 1, "the batch read the one event after the cached version"
    item = app.get_stock("MUG")
    assert (item.on_hand, item.reserved, item.available) == (4, 4, 0)
    assert app.get_reservation(_last_order(app)).is_locked


def test_a_failed_batch_leaves_nothing_it_changed_in_the_cache(
    app: InventoryApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    receive(app, "MUG", 5)
    feed = Feed(app)
    feed.order("MUG", 1)
    sku_id = stock_item_id("MUG")
    assert sku_id in app.aggregate_cache

    record = app._record
    calls = 0

    def conflict_once(processing: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # the commit loses an optimistic-concurrency race
            raise IntegrityError("version taken meanwhile")
        return record(processing)

    monkeypatch.setattr(app, "_record", conflict_once)
    message = inbound(placed(("MUG", 2)), offset=feed.offset)
    with pytest.raises(IntegrityError):
        app.process_messages([message], Tracking(TRACKING, feed.offset + 1))
    assert sku_id not in app.aggregate_cache, "the SKU the failed batch reserved on was kept"
    assert app.get_stock("MUG").reserved == 1

    app.process_messages([message], Tracking(TRACKING, feed.offset + 1))  # the inbox retries
    item = app.get_stock("MUG")
    assert (item.reserved, item.available) == (3, 2), "the failed attempt left no reservation"


def test_a_handler_failure_evicts_what_the_batch_loaded(
    app: InventoryApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    receive(app, "MUG", 5)
    feed = Feed(app)
    feed.order("MUG", 1)
    sku_id = stock_item_id("MUG")

    def reserve_then_fail(self: StockItem, order_id: uuid.UUID, quantity: int) -> None:
        reserve(self, order_id, quantity)  # changed in place, then the handler fails
        raise RuntimeError("handler bug")

    reserve = StockItem.reserve
    monkeypatch.setattr(StockItem, "reserve", reserve_then_fail)
    with pytest.raises(RuntimeError):
        feed.order("MUG", 2)
    monkeypatch.setattr(StockItem, "reserve", reserve)
    assert sku_id not in app.aggregate_cache
    feed.order("MUG", 2)
    assert app.get_stock("MUG").reserved == 3


def test_find_hands_out_a_private_copy(app: InventoryApplication) -> None:
    receive(app, "MUG", 5)
    Feed(app).order("MUG", 1)
    mine = app.get_stock("MUG")
    mine.receive(100, None)  # changed, never saved
    assert app.get_stock("MUG").on_hand == 5
    assert app.get_stock("MUG") is not app.get_stock("MUG")


def test_the_cache_is_bounded_and_keeps_the_newest_version() -> None:
    class Agg:
        def __init__(self, version: int) -> None:
            self.id = uuid.uuid4()
            self.version = version
            self.pending_events: list[Any] = []

    cache = AggregateCache(maxsize=2)
    a, b, c = Agg(1), Agg(1), Agg(1)
    cache.put([a, b, c])
    assert len(cache) == 2
    assert a.id not in cache
    older = Agg(0)
    older.id = b.id
    cache.put([older])
    assert cache.version(b.id) == 1, "an older version never replaces a newer one"
    changed = Agg(2)
    changed.pending_events.append(object())
    cache.put([changed])
    assert changed.id not in cache, "an aggregate with unsaved changes is never cached"
    assert cache.take([b.id]) == {b.id: b}
    assert b.id not in cache


def test_size_zero_turns_the_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULFIL_AGGREGATE_CACHE_SIZE", "0")
    application = InventoryApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    try:
        receive(application, "MUG", 5)
        Feed(application).order("MUG", 1)
        assert len(application.aggregate_cache) == 0
        assert application.get_stock("MUG").reserved == 1
    finally:
        application.close()


def _last_order(app: InventoryApplication) -> uuid.UUID:
    item = app.get_stock("MUG")
    return uuid.UUID(list(item.reservations)[-1])


def test_a_snapshot_is_taken_from_the_saved_object_without_loading_it_again(
    app: InventoryApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    receive(app, "MUG", 1000)  # version 2
    feed = Feed(app)
    for _ in range(47):
        feed.order("MUG", 1)  # versions 3..49, cached
    decoded = Decoded(app, monkeypatch)
    messages = [inbound(placed(("MUG", 1)), offset=feed.offset + i) for i in range(3)]
    app.process_messages(messages, Tracking(TRACKING, feed.offset + 3))  # versions 50..52
    assert decoded.calls == 0, "the snapshot was taken from the object the batch saved"

    assert app.snapshots is not None
    [snapshot] = app.snapshots.recorder.select_events(stock_item_id("MUG"), desc=True, limit=1)
    assert snapshot.originator_version == 52, "taken at the version the batch reached"
    app.aggregate_cache.clear()
    item = app.get_stock("MUG")  # from the snapshot alone
    assert decoded.calls == 1
    assert (item.version, item.reserved, item.on_hand) == (52, 50, 1000)
