"""Defect 6 (inventory): a hot SKU loads in bounded time and listing is a bounded number of
queries, on the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import Tracking

from fulfilment_kit.messaging.inbox import InboundMessage
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.settings import PostgresSettings
from fulfilment_kit.tracing import Trace
from inventory.application import SNAPSHOT_INTERVAL, InventoryApplication, ReceiveStock
from tests.support.public_events import EventFactory

RESERVATIONS = 1_000
BATCH = 100


@pytest.fixture
def inventory(database: str) -> Iterator[InventoryApplication]:
    app = InventoryApplication(
        env=eventsourcing_env("inventory", postgres=PostgresSettings(dbname=database))
    )
    yield app
    app.close()


def _receive(app: InventoryApplication, sku: str, quantity: int) -> None:
    app.receive_stock(ReceiveStock(sku, quantity, None, Trace("test", f"receipt:{sku}")))


class _Counting:
    """Counts what passes through a wrapped callable (instrumentation, not a stand-in)."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.wrapped(*args, **kwargs)


def test_loading_a_sku_with_1000_reservations_reads_a_bounded_number_of_events(
    inventory: InventoryApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    _receive(inventory, "HOT", RESERVATIONS)
    factory = EventFactory()
    offset = 0
    for _ in range(RESERVATIONS // BATCH):  # orders arrive on Kafka and reserve one unit each
        messages = []
        for _ in range(BATCH):
            _, [placed] = factory.order(uuid.uuid4(), sku="HOT", until="placed")
            messages.append(InboundMessage(placed.envelope(), "orders", 0, offset))
            offset += 1
        inventory.process_messages(messages, Tracking("inventory:orders:0", offset))

    decoded = _Counting(inventory.mapper.to_domain_event)
    monkeypatch.setattr(inventory.mapper, "to_domain_event", decoded)
    item = inventory.get_stock("HOT")
    assert item.reserved == RESERVATIONS
    assert item.available == 0
    assert item.version > RESERVATIONS
    assert decoded.calls <= SNAPSHOT_INTERVAL + 1, f"{decoded.calls} events read for one SKU"


def test_listing_stock_issues_a_bounded_number_of_queries(
    inventory: InventoryApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    def queries_to_list(skus: list[str], fresh: str) -> int:
        for sku in skus:
            for _ in range(3):
                _receive(inventory, sku, 2)
        inventory.list_stock()  # the first listing also catches up with the log of creations
        _receive(inventory, fresh, 1)
        original_execute, original_executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
        statements = 0  # what the server runs: an executemany runs one per parameter set

        def execute(cursor: psycopg.Cursor[Any], *args: Any, **kwargs: Any) -> Any:
            nonlocal statements
            statements += 1
            return original_execute(cursor, *args, **kwargs)

        def executemany(cursor: psycopg.Cursor[Any], query: Any, params: Any, **kwargs: Any) -> Any:
            nonlocal statements
            params = list(params)
            statements += len(params)
            return original_executemany(cursor, query, params, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(psycopg.Cursor, "execute", execute)
            patch.setattr(psycopg.Cursor, "executemany", executemany)
            listed = inventory.list_stock()
        assert listed[-1].sku == fresh  # the SKU created just before is listed
        assert all(item.on_hand == 6 for item in listed if item.sku in skus)
        return statements

    small = queries_to_list([f"SKU-{n:03}" for n in range(60)], "SKU-NEW")
    large = queries_to_list([f"SKV-{n:03}" for n in range(120)], "SKV-NEW")
    # No statement per SKU: the same few for 61 and 182 SKUs (the listing's one load, plus
    # the SKU follower catching up, in one transaction: its stored position, its new items in
    # one statement, and its table).
    assert small == large, f"{small} statements for 61 SKUs, {large} for 182"
    assert small <= 9, f"{small} statements to list the stock"


def test_a_page_of_the_listing_loads_only_that_page(inventory: InventoryApplication) -> None:
    skus = [f"PAGE-{n:02}" for n in range(30)]
    for sku in skus:
        _receive(inventory, sku, 1)
    first = inventory.list_stock(limit=10)
    assert [item.sku for item in first] == skus[:11]  # one more: a next page exists
    rest = inventory.list_stock(after=skus[24], limit=10)
    assert [item.sku for item in rest] == skus[25:]
    below = inventory.list_stock(True, after=skus[24], limit=10)  # a filter loads them all
    assert [item.sku for item in below] == skus[25:]
