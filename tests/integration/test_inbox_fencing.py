"""Defect 11: a revoked consumer cannot commit tracking over its partition's new owner.

On the real PostgreSQL: two inboxes of one consumer group on one database, as a revoked
member (still finishing its batch) and the partition's new owner."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from fulfilment_kit.messaging.inbox import Inbox
from fulfilment_kit.observability import metrics
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.settings import KafkaSettings, PostgresSettings, ServiceSettings
from tests.integration.tally import TallyApplication
from tests.unit.test_inbox_failures import TOPIC, record
from tests.unit.test_inbox_skipping import placed


def fenced() -> float:
    labels = {"consumer": "g", "topic": TOPIC}
    return metrics.REGISTRY.get_sample_value("fulfil_inbox_fenced_total", labels) or 0.0


def member(database: str) -> tuple[Inbox, TallyApplication]:
    env = eventsourcing_env("tally", ServiceSettings(), PostgresSettings(dbname=database))
    app = TallyApplication(env=env)
    return Inbox(app=app, group_id="g", kafka_settings=KafkaSettings(), backoff_s=0), app


async def test_a_revoked_consumer_cannot_commit_tracking_over_the_new_owner(database: str) -> None:
    revoked, app = member(database)
    owner, _ = member(database)
    tp = TopicPartition(TOPIC, 0)
    orders = [placed() for _ in range(6)]
    records = [record(order, offset) for offset, order in enumerate(orders)]
    await revoked.handle_records(records[:2])  # tracked: next offset 2
    assert await owner.tracked_position(tp) == 2  # the new owner takes over from there

    # The new owner applies 2..3; the revoked member, still at 2, then commits 2..5:
    # its position (6) is ahead of the owner's (4), which plain tracking would accept.
    await owner.handle_records(records[2:4])
    before = fenced()
    outcome: Exception | None = None
    try:
        await revoked.handle_records(records[2:])
    except Exception as exc:
        outcome = exc

    counts = [await asyncio.to_thread(app.count, o.order_id) for o in orders]
    assert counts == [1, 1, 1, 1, 0, 0]  # nothing twice; 4 and 5 wait for their owner
    blocked = getattr(outcome, "failures", [])
    assert [(b.kind, b.resume_at) for b in blocked] == [("moved", 4)]
    assert fenced() == before + 1
    assert await asyncio.to_thread(app.next_offset, revoked.tracking_name(TOPIC, 0)) == 4


async def test_two_first_batches_on_an_untracked_partition_cannot_both_commit(
    database: str,
) -> None:
    one, app = member(database)
    two, _ = member(database)
    orders = [placed() for _ in range(3)]
    records = [record(order, offset) for offset, order in enumerate(orders)]
    tp = TopicPartition(TOPIC, 0)
    assert await one.tracked_position(tp) is None
    assert await two.tracked_position(tp) is None
    await two.handle_records(records[:1])
    outcome: Exception | None = None
    try:
        await one.handle_records(records)
    except Exception as exc:
        outcome = exc
    assert [await asyncio.to_thread(app.count, o.order_id) for o in orders] == [1, 0, 0]
    blocked = getattr(outcome, "failures", [])
    assert [(b.kind, b.resume_at) for b in blocked] == [("moved", 1)]
