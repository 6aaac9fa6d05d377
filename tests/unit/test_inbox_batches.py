"""One transaction per fetched batch (ADR 26): the records of several partitions are applied
together when the processor allows it, and one by one when that fails, so a failing record,
a moved position or a processor without the capability behaves as before."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from eventsourcing.persistence import Tracking

from fulfilment_kit.contracts import OrderPlaced
from fulfilment_kit.messaging.inbox import InboundMessage
from fulfilment_kit.persistence.fencing import TrackingSet, positions_of
from tests.integration.tally import POISON_SKU, TallyApplication
from tests.unit.test_inbox_failures import TOPIC, in_memory_tally, inbox_of, record
from tests.unit.test_inbox_skipping import placed


class CountingTally(TallyApplication):
    """The tally, counting its transactions and the positions each one recorded."""

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self.transactions: list[list[str]] = []

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        super().process_messages(messages, tracking)
        self.transactions.append([p.application_name for p in positions_of(tracking)])


def on(partition: int, rec: ConsumerRecord[bytes, bytes]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        rec.topic,
        partition,
        rec.offset,
        rec.timestamp,
        rec.timestamp_type,
        rec.key,
        rec.value,
        rec.checksum,
        rec.serialized_key_size,
        rec.serialized_value_size,
        rec.headers,
    )


def poisoned() -> OrderPlaced:
    order = placed()
    return order.model_copy(
        update={"lines": [order.lines[0].model_copy(update={"sku": POISON_SKU})]}
    )


def name(partition: int) -> str:
    return f"g:{TOPIC}:{partition}"


async def test_the_records_of_several_partitions_are_applied_in_one_transaction() -> None:
    app = in_memory_tally(CountingTally)
    assert isinstance(app, CountingTally)
    inbox, letters = inbox_of(app)
    orders = [placed() for _ in range(6)]
    # Two records on each of partitions 2, 0 and 1, fetched in no particular order.
    records = [
        on(p, record(o, offset))
        for (p, offset), o in zip(
            [(2, 0), (0, 0), (1, 0), (2, 1), (0, 1), (1, 1)], orders, strict=True
        )
    ]
    assert await inbox.apply_records(records) == []
    assert app.transactions == [[name(0), name(1), name(2)]]
    assert [app.count(o.order_id) for o in orders] == [1] * 6
    for partition in (0, 1, 2):
        assert app.recorder.max_tracking_id(name(partition)) == 2
        assert inbox.next_offset(TopicPartition(TOPIC, partition)) == 2
    assert letters.sent == []
    # Fetched again (a rebalance): nothing is applied twice, and nothing is written.
    assert await inbox.apply_records(records) == []
    assert [app.count(o.order_id) for o in orders] == [1] * 6
    assert len(app.transactions) == 1


async def test_a_failing_record_costs_only_its_own_partition_the_others_apply_once() -> None:
    app = in_memory_tally(CountingTally)
    assert isinstance(app, CountingTally)
    inbox, letters = inbox_of(app, max_attempts=2)
    good, bad, after, other = placed(), poisoned(), placed(), placed()
    records = [
        on(0, record(good, 0)),
        on(0, record(bad, 1)),
        on(0, record(after, 2)),
        on(1, record(other, 0)),
    ]
    assert await inbox.apply_records(records) == []
    # The one transaction failed on the poison; one by one, partition 0 isolated it.
    assert [letter[1] for letter in letters.sent] == [records[1].value]
    assert [app.count(o.order_id) for o in (good, after, other)] == [1, 1, 1]
    assert app.count(bad.order_id) == 0
    assert inbox.next_offset(TopicPartition(TOPIC, 0)) == 3
    assert inbox.next_offset(TopicPartition(TOPIC, 1)) == 1
    assert all(len(t) == 1 for t in app.transactions)  # none of them went together


async def test_a_position_moved_on_by_another_writer_costs_only_that_partition() -> None:
    app = in_memory_tally(CountingTally)
    assert isinstance(app, CountingTally)
    inbox, _ = inbox_of(app)
    first = [on(p, record(placed(), 0)) for p in (0, 1)]
    assert await inbox.apply_records(first) == []
    # The partition's new owner (after a rebalance this consumer has not seen) moves on.
    app.recorder.insert_events([], tracking=Tracking(name(1), 5))
    mine, theirs = placed(), placed()
    blocked = await inbox.apply_records([on(0, record(mine, 1)), on(1, record(theirs, 1))])
    assert blocked == []
    assert app.count(mine.order_id) == 1
    assert app.count(theirs.order_id) == 0  # its new owner applies it
    assert app.recorder.max_tracking_id(name(0)) == 2


class PlainApplier:
    """A processor that does not declare `applies_across_partitions`: one position a call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Tracking]] = []
        self.tracking: dict[str, int] = {}

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        self.calls.append((len(messages), tracking))
        self.tracking[tracking.application_name] = tracking.notification_id

    def next_offset(self, tracking_name: str) -> int | None:
        return self.tracking.get(tracking_name)


async def test_a_processor_without_the_capability_gets_one_partition_a_call() -> None:
    applier = PlainApplier()
    inbox, _ = inbox_of(applier)
    records = [on(p, record(placed(), 0)) for p in (0, 1, 2)]
    assert await inbox.apply_records(records) == []
    assert [n for n, _ in applier.calls] == [1, 1, 1]
    assert not any(isinstance(t, TrackingSet) for _, t in applier.calls)
    assert applier.tracking == {name(0): 1, name(1): 1, name(2): 1}


def test_a_tracking_set_names_its_first_position_and_lists_them_all() -> None:
    positions = [Tracking(f"p{i}", i + 10) for i in range(3)]
    both = TrackingSet.of(positions)
    assert (both.application_name, both.notification_id) == ("p0", 10)
    assert positions_of(both) == tuple(positions)
    assert positions_of(positions[1]) == (positions[1],)
