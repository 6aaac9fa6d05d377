"""One transaction per fetched batch on PostgreSQL (ADR 26): a process application and the
read models record the positions of several partitions with their effects, each position a
compare-and-set, so a position moved by another writer holds that partition only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from customer_service.projections.queries import ReadModels
from customer_service.projections.store import ProjectionsApplier, ReadModelRecorder, datastore
from fulfilment_kit.messaging.inbox import InboundMessage
from fulfilment_kit.persistence.fencing import FencedTracking, TrackingSet, positions_of
from fulfilment_kit.settings import PostgresSettings
from tests.integration.tally import TallyApplication
from tests.integration.test_inbox_never_skips import tally
from tests.support.public_events import EventFactory
from tests.unit.test_inbox_batches import name, on
from tests.unit.test_inbox_failures import TOPIC, inbox_of, record
from tests.unit.test_inbox_skipping import placed


class CountingTally(TallyApplication):
    transactions: list[int] = []

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        super().process_messages(messages, tracking)
        type(self).transactions.append(len(positions_of(tracking)))


def execute(database: str, statement: str, *params: object) -> None:
    pg = PostgresSettings(dbname=database)
    dsn = f"host={pg.host} port={pg.port} user={pg.user} password={pg.password} dbname={database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)  # type: ignore[arg-type]


async def test_a_batch_of_three_partitions_commits_once_and_a_moved_position_holds_only_its_own(
    database: str,
) -> None:
    CountingTally.transactions = []
    app = tally(database, CountingTally)
    inbox, _ = inbox_of(app)
    first = [placed() for _ in range(3)]
    assert await inbox.apply_records([on(p, record(o, 0)) for p, o in enumerate(first)]) == []
    assert CountingTally.transactions == [3]
    assert [app.recorder.max_tracking_id(name(p)) for p in range(3)] == [1, 1, 1]
    # Another writer moves partition 1's position to one this consumer never based on.
    execute(
        database,
        f"UPDATE {app.recorder.tracking_table_name} SET notification_id = 0"
        " WHERE application_name = %s",
        name(1),
    )
    second = [placed() for _ in range(3)]
    blocked = await inbox.apply_records([on(p, record(o, 1)) for p, o in enumerate(second)])
    assert [(b.tp.partition, b.kind) for b in blocked] == [(1, "moved")]
    assert [app.count(o.order_id) for o in second] == [1, 0, 1]
    assert [app.recorder.max_tracking_id(name(p)) for p in range(3)] == [2, 0, 2]
    assert CountingTally.transactions[0] == 3  # the later ones went partition by partition


@pytest.fixture
def read_models(database: str) -> Iterator[ReadModelRecorder]:
    recorder = ReadModelRecorder(datastore(PostgresSettings(dbname=database)))
    recorder.create_table()
    yield recorder
    recorder.datastore.close()


def test_the_read_models_record_every_position_of_a_set_or_none(
    read_models: ReadModelRecorder,
) -> None:
    f = EventFactory()
    customer = uuid.uuid4()
    _, events = f.order(customer, price=1000, until="paid")
    messages = [InboundMessage(e.envelope(), TOPIC, n % 2, n // 2) for n, e in enumerate(events)]
    applier = ProjectionsApplier(read_models)
    positions = [FencedTracking(name(p), 5, expected=None) for p in (0, 1)]
    applier.process_messages(messages, TrackingSet.of(positions))
    assert [applier.next_offset(name(p)) for p in (0, 1)] == [5, 5]
    assert ReadModels(read_models.datastore).customer(customer) is not None
    # A set with one stale position records nothing at all.
    stale = [FencedTracking(name(0), 9, expected=5), FencedTracking(name(1), 9, expected=4)]
    with pytest.raises(IntegrityError):
        applier.process_messages([], TrackingSet.of(stale))
    assert [applier.next_offset(name(p)) for p in (0, 1)] == [5, 5]
