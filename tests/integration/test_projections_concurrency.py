"""Defect 5: the customer 360 stays right with several projection consumers writing at once."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from eventsourcing.persistence import Tracking

from customer_service.projections.queries import ReadModels
from customer_service.projections.store import ReadModelRecorder, apply_batch, datastore
from fulfilment_kit.settings import PostgresSettings
from tests.support.polling import eventually
from tests.support.public_events import EventFactory


@pytest.fixture
def consumers(database: str) -> Iterator[tuple[ReadModelRecorder, ReadModelRecorder]]:
    """Two projection consumers of one database (two processes: two pools)."""
    postgres = PostgresSettings(dbname=database)
    first, second = ReadModelRecorder(datastore(postgres)), ReadModelRecorder(datastore(postgres))
    first.create_table()
    yield first, second
    first.datastore.close()
    second.datastore.close()


def _waiting_or_done(database: str, done: threading.Event) -> bool:
    """The second consumer finished, or waits for a lock the first one holds."""
    if done.is_set():
        return True
    pg = PostgresSettings(dbname=database)
    dsn = f"host={pg.host} port={pg.port} user={pg.user} password={pg.password} dbname={database}"
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (database,),
        ).fetchone()
    return bool(row and row[0])


async def test_customer_360_loses_no_update_when_two_consumers_write_one_customer(
    consumers: tuple[ReadModelRecorder, ReadModelRecorder], database: str
) -> None:
    first, second = consumers
    f = EventFactory()
    ada = uuid.uuid4()
    _, order_a = f.order(ada, price=1000, until="paid")
    _, order_b = f.order(ada, price=3000, until="paid")
    envelopes_a = [p.envelope() for p in order_a]
    envelopes_b = [p.envelope() for p in order_b]

    second_done = threading.Event()
    errors: list[BaseException] = []

    def second_consumer() -> None:
        try:
            second.insert_events(envelopes_b, Tracking("read-models:orders:1", 10))
        except BaseException as exc:  # reported by the test below
            errors.append(exc)
        finally:
            second_done.set()

    # The first consumer (partition 0) applies order A and has not committed yet when the
    # second one (partition 1) applies order B of the same customer.
    thread = threading.Thread(target=second_consumer)
    with first.datastore.transaction(commit=True) as curs:
        apply_batch(curs, first.schema, envelopes_a, first.projections)
        first._insert_tracking(curs, Tracking("read-models:orders:0", 10))
        thread.start()
        await eventually(
            lambda: asyncio.to_thread(_waiting_or_done, database, second_done),
            timeout=10,
            what="the second consumer is blocked or done",
        )
    await asyncio.to_thread(thread.join, 10)
    assert not errors, errors

    customer = ReadModels(first.datastore).customer(ada)
    assert customer is not None
    assert customer["orders_count"] == 2
    assert customer["lifetime_spend"] == {"EUR": 4000}
