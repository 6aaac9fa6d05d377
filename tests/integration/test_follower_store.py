"""The log followers' item table on the real PostgreSQL: a round's puts and drops, however
many, are written as one statement each and read back as written."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.persistence.follower import FollowerStore, Item, follower_store
from fulfilment_kit.settings import PostgresSettings, ServiceSettings
from orders.application import OrdersApplication

FOLLOWER = "test-follower"
DUE = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(database: str) -> Iterator[FollowerStore]:
    env = eventsourcing_env("orders", ServiceSettings(), PostgresSettings(dbname=database))
    app = OrdersApplication(env=env)
    yield follower_store(app)
    app.close()


def items(store: FollowerStore) -> dict[tuple[str, str], Item]:
    with store.transaction() as tx:
        found = tx.select_kinds(FOLLOWER, ["deadline", "case"])
    return {(item.kind, item.key): item for item in found}


def test_puts_of_several_kinds_with_and_without_a_due_time_are_stored_as_given(
    store: FollowerStore,
) -> None:
    given = [
        Item("deadline", "a", DUE, {"stage": "placed", "flagged": False}),
        Item("deadline", "b", None, {"stage": "paid"}),
        Item("case", "c", DUE + timedelta(seconds=5), {}),
    ]
    with store.transaction() as tx:
        tx.write(FOLLOWER, {(item.kind, item.key): item for item in given})
    assert items(store) == {(item.kind, item.key): item for item in given}


def test_a_round_without_any_due_time_is_stored_too(store: FollowerStore) -> None:
    given = [Item("deadline", key, None, {"n": n}) for n, key in enumerate("xyz")]
    with store.transaction() as tx:
        tx.write(FOLLOWER, {(item.kind, item.key): item for item in given})
    assert items(store) == {(item.kind, item.key): item for item in given}


def test_a_later_round_replaces_puts_and_drops_only_what_it_names(store: FollowerStore) -> None:
    with store.transaction() as tx:
        tx.write(
            FOLLOWER,
            {("deadline", k): Item("deadline", k, DUE, {"v": 1}) for k in ("a", "b", "c", "d")},
        )
    changed = Item("deadline", "a", None, {"v": 2})
    with store.transaction() as tx:
        tx.write(
            FOLLOWER, {("deadline", "a"): changed, ("deadline", "b"): None, ("deadline", "c"): None}
        )
    assert items(store) == {
        ("deadline", "a"): changed,
        ("deadline", "d"): Item("deadline", "d", DUE, {"v": 1}),
    }
