"""Group commit of placements on PostgreSQL: one transaction and one key-store statement for
a group, each order as `place_order` makes it; a repeated key among them is still a replay."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.privacy import KeyEncryptionKeys, PersonalDataVault
from fulfilment_kit.privacy.keys import generate_kek
from fulfilment_kit.privacy.store import PostgresKeyStore
from fulfilment_kit.settings import PostgresSettings, ServiceSettings
from fulfilment_kit.tracing import Trace, event_trace
from orders.application import OrdersApplication, Placed, PlaceOrder
from orders.domain import Address, Order, OrderLine


@pytest.fixture
def app(database: str) -> Iterator[OrdersApplication]:
    vault = PersonalDataVault(
        PostgresKeyStore(PostgresSettings(), database),
        KeyEncryptionKeys.parse(generate_kek("k1")),
        ("contact",),
    )
    app = OrdersApplication(
        env=eventsourcing_env("orders", ServiceSettings(), PostgresSettings(dbname=database)),
        vault=vault,
    )
    yield app
    app.close()
    vault.close()


def command(customer: uuid.UUID, key: str, name: str = "Ada") -> PlaceOrder:
    return PlaceOrder(
        customer_id=customer,
        lines=[OrderLine("MUG", 1, 500)],
        currency="EUR",
        shipping_address=Address(name, "1 St", None, "Berlin", "10115", "DE"),
        payment_token="tok_visa",
        idempotency_key=key,
        fingerprint=f"f-{name}",
        trace=Trace(f"corr-{key}", f"http:{key}"),
    )


def test_a_group_is_one_transaction_and_each_order_is_as_placed_alone(
    app: OrdersApplication, database: str
) -> None:
    returning = uuid.uuid4()
    app.place_order(command(returning, "earlier"))
    before = app.recorder.max_notification_id() or 0
    group = [
        command(uuid.uuid4(), "g-1", "Ada"),
        command(returning, "g-2", "Bea"),
        command(returning, "g-3", "Cy"),
        command(uuid.uuid4(), "g-4", "Dee"),
    ]
    outcomes = app.place_orders(group)
    assert all(isinstance(o, Placed) and o.created for o in outcomes)
    placed = [o.order for o in outcomes if isinstance(o, Placed)]
    notifications = app.notification_log.select(before + 1, 10)
    assert [n.originator_id for n in notifications] == [o.id for o in placed]
    assert [n.id for n in notifications] == list(range(before + 1, before + 5))
    assert _transactions(app, database, before) == 1
    for given, order in zip(group, placed, strict=True):
        stored = app.repository.get(order.id)
        assert isinstance(stored, Order)
        assert app.vault.reveal_fields(stored.shipping_address) == given.shipping_address
        (placed_event,) = app.repository.event_store.get(order.id)
        assert event_trace(placed_event) == given.trace  # each its own request's trace


def _transactions(app: OrdersApplication, database: str, after: int) -> int:
    """How many transactions wrote the notifications after `after` (their rows' xmin)."""
    recorder: Any = app.recorder
    pg = PostgresSettings()
    with psycopg.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=database
    ) as conn:
        (count,) = conn.execute(
            f"SELECT count(DISTINCT xmin::text) FROM {recorder.events_table_name}"
            " WHERE notification_id > %s",
            (after,),
        ).fetchone() or (0,)
    return int(count)


def test_a_repeated_key_in_a_group_is_replayed_and_the_rest_placed(
    app: OrdersApplication,
) -> None:
    first = app.place_order(command(uuid.uuid4(), "seen", "Ada"))
    again = command(first.order.customer_id, "seen", "Ada")
    other = command(uuid.uuid4(), "unseen", "Bea")
    outcomes = app.place_orders([other, again])
    assert isinstance(outcomes[0], Placed)
    assert outcomes[0].created
    assert isinstance(outcomes[1], Placed)
    assert not outcomes[1].created
    assert outcomes[1].order.id == first.order.id
