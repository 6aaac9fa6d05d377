"""The kit's aggregate cache with two processes (two applications, each with its own cache)
writing the same StockItem through the real PostgreSQL: neither hides the other's writes,
a commit that lost the race is retried on the newest state, and nothing is oversold."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from fulfilment_kit.messaging.inbox import InboundMessage
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.settings import PostgresSettings
from fulfilment_kit.tracing import Trace
from inventory.application import SNAPSHOT_INTERVAL, InventoryApplication, ReceiveStock
from inventory.domain import stock_item_id
from tests.support.public_events import EventFactory


class Replica:
    """One inventory process: its own application (and cache), its own partition."""

    def __init__(self, database: str, partition: int) -> None:
        self.app = InventoryApplication(
            env=eventsourcing_env("inventory", postgres=PostgresSettings(dbname=database))
        )
        self.tracking = f"inventory:orders:{partition}"
        self.partition = partition
        self.offset = 0
        self.factory = EventFactory()

    def messages(self, sku: str, orders: int, quantity: int = 1) -> list[InboundMessage]:
        out = []
        for _ in range(orders):
            _, [placed] = self.factory.order(
                uuid.uuid4(), sku=sku, quantity=quantity, until="placed"
            )
            out.append(InboundMessage(placed.envelope(), "orders", self.partition, self.offset))
            self.offset += 1
        return out

    def apply(self, messages: list[InboundMessage]) -> None:
        self.app.process_messages(messages, Tracking(self.tracking, messages[-1].offset + 1))

    def order(self, sku: str, orders: int = 1, quantity: int = 1) -> None:
        self.apply(self.messages(sku, orders, quantity))


@pytest.fixture
def replicas(database: str) -> Iterator[tuple[Replica, Replica]]:
    a, b = Replica(database, 0), Replica(database, 1)
    yield a, b
    a.app.close()
    b.app.close()


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


def test_each_replica_reads_the_others_writes_after_its_cached_version(
    replicas: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = replicas
    _receive(a.app, "MUG", 100)
    a.order("MUG", orders=2)  # A caches the SKU
    b.order("MUG", orders=3)  # B loads it (A's writes included), caches it, writes 3 more
    assert a.app.aggregate_cache.version(stock_item_id("MUG")) is not None

    decoded = _Counting(a.app.mapper.to_domain_event)
    monkeypatch.setattr(a.app.mapper, "to_domain_event", decoded)
    a.order("MUG", orders=1)
    assert decoded.calls == 3, "A read exactly B's three events after its cached version"
    for app in (a.app, b.app):
        item = app.get_stock("MUG")
        assert (item.on_hand, item.reserved) == (100, 6)
    assert a.app.get_stock("MUG").version == b.app.get_stock("MUG").version


def test_a_commit_that_lost_the_race_is_retried_on_the_newest_state_and_never_oversells(
    replicas: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = replicas
    _receive(a.app, "MUG", 3)
    a.order("MUG")  # 1 reserved; A caches the SKU
    b.order("MUG")  # 2 reserved; B caches it, A's copy is one event behind
    _receive(b.app, "MUG", 2)  # on hand 5, reserved 2, available 3

    record = a.app._record
    raced = False

    def b_commits_first(processing: Any) -> Any:
        nonlocal raced
        if not raced:  # between A's load and A's commit, B takes the last two units
            raced = True
            b.order("MUG", quantity=2)
        return record(processing)

    monkeypatch.setattr(a.app, "_record", b_commits_first)
    wants_two = a.messages("MUG", 1, quantity=2)
    with pytest.raises(IntegrityError):
        a.apply(wants_two)  # A decided on its cached state: the version is taken
    assert stock_item_id("MUG") not in a.app.aggregate_cache
    a.apply(wants_two)  # the inbox retries: B's reservation is read, the order is rejected

    for app in (a.app, b.app):
        item = app.get_stock("MUG")
        assert (item.on_hand, item.reserved, item.available) == (5, 4, 1), "oversold"
    reservation = a.app.get_reservation(uuid.UUID(_order_id(wants_two[0])))
    assert not reservation.is_locked


def test_a_replica_far_behind_starts_from_the_newer_snapshot(
    replicas: tuple[Replica, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = replicas
    _receive(a.app, "MUG", 1000)
    a.order("MUG")  # A caches the SKU at version 2
    for _ in range(3):
        b.order("MUG", orders=40)  # 120 events by B, snapshots taken at 50 and 100

    decoded = _Counting(a.app.mapper.to_domain_event)
    monkeypatch.setattr(a.app.mapper, "to_domain_event", decoded)
    assert a.app.snapshots is not None
    assert a.app.snapshots.mapper is a.app.mapper
    a.order("MUG")  # from B's snapshot at 100 and the 23 events after it, not 120 events
    assert decoded.calls <= SNAPSHOT_INTERVAL, f"{decoded.calls} events replayed"
    assert a.app.get_stock("MUG").reserved == 122
    assert b.app.get_stock("MUG").reserved == 122


def _order_id(message: InboundMessage) -> str:
    subject = message.envelope.subject
    assert subject is not None
    return subject
