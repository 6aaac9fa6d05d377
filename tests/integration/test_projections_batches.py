"""A batch's changes are folded per row by PostgreSQL (one statement per table): whatever the
batches, their order and their duplicates, the rows equal those of one event at a time."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from eventsourcing.postgres import PostgresDatastore
from psycopg import sql

from customer_service.projections.store import ALL, apply_batch, datastore
from customer_service.projections.tables import APPLIED, TABLES, create_statements
from fulfilment_kit.messaging.cloudevents import Envelope
from fulfilment_kit.settings import PostgresSettings
from tests.support.public_events import EventFactory


@pytest.fixture
def store(database: str) -> Iterator[PostgresDatastore]:
    pool = datastore(PostgresSettings(dbname=database))
    yield pool
    pool.close()


def history(f: EventFactory) -> list[Envelope]:
    """Orders of shared customers through their lifecycles, returns, cases with breaches and
    several stock registers per SKU (last-writer-wins columns)."""
    customers = [uuid.uuid4() for _ in range(3)]
    events = []
    for n in range(9):
        customer = customers[n % 3]
        order_id, order_events = f.order(customer, price=100 * (n + 1))
        events += order_events
        if n % 2:
            events += f.return_and_refund(order_id, customer, 40 * n)
        if n % 3 == 0:
            events += f.case(customer, order_id, breach=True)
    for n in range(6):
        events += [f.stock_low("MUG", n), f.stock_received("MUG", 5, 10 + n)]
        events += [f.stock_low(f"SKU-{n % 2}", n), f.stock_received(f"SKU-{n % 2}", 3, n)]
    return [e.envelope() for e in events]


def apply(store: PostgresDatastore, schema: str, batches: Sequence[Sequence[Envelope]]) -> None:
    with store.transaction(commit=True) as curs:
        for statement in create_statements(schema, (APPLIED, *TABLES.values())):
            curs.execute(statement)
    for batch in batches:
        with store.transaction(commit=True) as curs:
            apply_batch(curs, schema, batch, ALL)


def rows(store: PostgresDatastore, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    tables = {}
    with store.transaction(commit=False) as curs:
        for name, table in TABLES.items():
            columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
            curs.execute(
                sql.SQL("SELECT {} FROM {}.{}").format(
                    columns, sql.Identifier(schema), sql.Identifier(name)
                )
            )
            tables[name] = sorted(tuple(map(str, r.values())) for r in curs.fetchall())
    return tables


def test_batches_of_any_size_order_and_duplicates_give_the_rows_of_one_event_at_a_time(
    store: PostgresDatastore,
) -> None:
    envelopes = history(EventFactory())
    apply(store, "one_by_one", [[e] for e in envelopes])
    reference = rows(store, "one_by_one")
    assert all(reference[name] for name in TABLES), "the history fills every table"
    assert len(reference["sku_stock"]) == 3

    rng = random.Random(14)
    for attempt in range(4):
        shuffled = envelopes + rng.sample(envelopes, 15)  # redelivered copies
        rng.shuffle(shuffled)
        cuts = sorted(rng.sample(range(1, len(shuffled)), attempt * 3))
        batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
        schema = f"batched_{attempt}"
        apply(store, schema, batches)
        assert rows(store, schema) == reference, f"{len(batches)} batches"


def test_one_batch_holding_every_event_of_an_order_folds_them_into_its_rows(
    store: PostgresDatastore,
) -> None:
    f = EventFactory()
    customer = uuid.uuid4()
    order_id, events = f.order(customer, price=1200)
    events += f.return_and_refund(order_id, customer, 500)
    events += [f.stock_low("MUG", 4), f.stock_received("MUG", 20, 24), f.stock_low("MUG", 1)]
    envelopes = [e.envelope() for e in events]
    apply(store, "one_batch", [list(reversed(envelopes))])
    with store.transaction(commit=False) as curs:
        curs.execute("SELECT * FROM one_batch.order_facts")
        (fact,) = curs.fetchall()
        curs.execute("SELECT * FROM one_batch.sku_stock")
        (stock,) = curs.fetchall()
        curs.execute("SELECT count(*) AS n FROM one_batch.timeline")
        timeline = curs.fetchone()
    assert fact["customer_id"] == customer
    assert fact["total_minor"] == fact["paid_minor"] == 1200
    assert fact["refunded_minor"] == 500
    assert fact["placed_at"] < fact["paid_at"] < fact["delivered_at"] <= fact["return_received_at"]
    # The last low-stock signal by log position wins, whatever the order within the batch.
    assert (stock["low_available"], stock["level_on_hand"]) == (1, 24)
    assert timeline is not None
    assert timeline["n"] == len(envelopes) - 3  # the stock events name no order


def test_a_batch_with_nul_in_its_text_stores_the_replacement_character(
    store: PostgresDatastore,
) -> None:
    """PostgreSQL refuses NUL in text and jsonb: a whole batch's rows (one JSON parameter per
    table) get U+FFFD for it, as one row's upsert does."""
    f = EventFactory()
    customer = uuid.uuid4()
    events = []
    for n in range(6):  # more rows than go row by row
        order_id, _ = f.order(customer, price=100, until="placed")
        case = f.case(customer, order_id)[0]
        events.append(
            dataclasses.replace(
                case, event=case.event.model_copy(update={"summary": f"parcel\u0000late {n}"})
            )
        )
    apply(store, "with_nul", [[e.envelope() for e in events]])
    with store.transaction(commit=False) as curs:
        curs.execute("SELECT summary FROM with_nul.timeline")
        summaries = sorted(r["summary"]["summary"] for r in curs.fetchall())
    assert summaries == [f"parcel\ufffdlate {n}" for n in range(6)]
