"""Defect 11 (inbox parts), defect 9 (read models stop) and payload-free DLQ logs, on the
inbox itself with the in-memory event store (the Kafka side is in tests/integration)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import Tracking

from fulfilment_kit.contracts import OrderPlaced
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.messaging import cloudevents
from fulfilment_kit.messaging import inbox as inbox_module
from fulfilment_kit.messaging.inbox import InboundMessage, Inbox
from fulfilment_kit.observability import metrics
from fulfilment_kit.settings import KafkaSettings
from tests.integration.tally import TallyApplication, tally_id
from tests.support.logs import captured_logs
from tests.unit.test_inbox_skipping import placed

TOPIC = "failures-test"
SECRET = "Ada Lovelace, 12 Secret Lane"


def record(
    event: IntegrationEvent | None, offset: int, *, ce_type: str | None = None
) -> ConsumerRecord[bytes, bytes]:
    if event is None:
        event = placed()
    key, value, headers = cloudevents.encode(
        event,
        ce_id=str(uuid.uuid4()),
        source="/t",
        time=datetime.now(UTC),
        correlation_id="c",
        causation_id="c",
    )
    if ce_type is not None:
        headers = [(k, ce_type.encode() if k == "ce_type" else v) for k, v in headers]
    return ConsumerRecord(TOPIC, 0, offset, 0, 0, key, value, None, len(key), len(value), headers)


def in_memory_tally(cls: type[TallyApplication] = TallyApplication) -> TallyApplication:
    return cls(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


class DeadLetters:
    """A stand-in for the DLQ producer that keeps what it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    async def send_and_wait(self, topic: str, *, value: bytes | None, **_: Any) -> None:
        self.sent.append((topic, value))


def inbox_of(app: Any, **kwargs: Any) -> tuple[Inbox, DeadLetters]:
    inbox = Inbox(app=app, group_id="g", kafka_settings=KafkaSettings(), backoff_s=0, **kwargs)
    letters = DeadLetters()
    inbox._dlq_producer = letters  # type: ignore[assignment]
    return inbox, letters


async def test_unknown_ce_type_from_a_newer_producer_is_skipped_and_counted_not_dead_lettered() -> (
    None
):
    app = in_memory_tally()
    inbox, letters = inbox_of(app)

    def unknown() -> float:
        labels = {"consumer": "g", "topic": TOPIC}
        return metrics.REGISTRY.get_sample_value("fulfil_inbox_unknown_types_total", labels) or 0

    before = unknown()
    order = placed()
    await inbox.handle_records(
        [record(None, 0, ce_type="fulfilment.order.teleported.v1"), record(order, 1)]
    )
    assert letters.sent == []
    assert unknown() == before + 1
    assert app.count(order.order_id) == 1
    assert inbox.next_offset(TopicPartition(TOPIC, 0)) == 2


class ContendedTally(TallyApplication):
    """A hot aggregate: another writer changes the tally between our load and our save,
    `contended` times in a row (a real optimistic-concurrency conflict each time)."""

    contended = 0

    def aggregate_ids(self, message: InboundMessage) -> list[uuid.UUID]:
        event: Any = message.envelope.event
        return [tally_id(event.order_id)]  # loaded before `handle`, at the current version

    def handle(self, message: InboundMessage, processing: ProcessingEvent[uuid.UUID]) -> None:
        event: Any = message.envelope.event
        if isinstance(event, OrderPlaced) and type(self).contended > 0:
            type(self).contended -= 1
            theirs = self.repository.get(tally_id(event.order_id))
            theirs.count_one()
            self.save(theirs)  # the other writer takes the version ours was loaded at
        super().handle(message, processing)


async def test_optimistic_concurrency_conflict_is_retried_never_dead_lettered() -> None:
    app = in_memory_tally(ContendedTally)
    inbox, letters = inbox_of(app, max_attempts=3)
    order = placed()
    await inbox.handle_records([record(order, 0)])  # the tally exists: count 1
    ContendedTally.contended = 7  # more conflicts in a row than attempts per round
    redelivered = [record(order, 1)]
    rounds = 0
    while True:  # what the consumer's backoff does: seek back, apply again
        rounds += 1
        try:
            await inbox.handle_records(redelivered)
            break
        except Exception as exc:
            blocked = getattr(exc, "failures", [])
            assert [(b.kind, b.resume_at) for b in blocked] == [("conflict", 1)]
    assert letters.sent == []
    assert rounds == 3  # 3 + 3 conflicts held the partition twice; the 7th conflict retried
    assert app.count(order.order_id) == 1 + 7 + 1  # every other write, and ours once


class FailingProjection:
    """A read model whose write fails for one order (a projection bug), until fixed."""

    def __init__(self, bad: uuid.UUID) -> None:
        self.bad: uuid.UUID | None = bad
        self.rows: list[uuid.UUID] = []
        self.tracking: dict[str, int] = {}

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        for message in messages:
            event: Any = message.envelope.event
            if event.order_id == self.bad:
                raise ValueError(f"invalid input syntax for type json: {SECRET}")
        self.rows.extend(m.envelope.event.order_id for m in messages)  # type: ignore[attr-defined]
        self.tracking[tracking.application_name] = tracking.notification_id

    def next_offset(self, tracking_name: str) -> int | None:
        return self.tracking.get(tracking_name)


async def test_a_projection_failure_stops_its_partition_and_never_dead_letters() -> None:
    good, bad, after = placed(), placed(), placed()
    projection = FailingProjection(bad.order_id)
    inbox, letters = inbox_of(projection, on_failure="stop")
    records = [record(good, 0), record(bad, 1), record(after, 2)]
    with captured_logs(inbox_module) as logs:
        blocked = await inbox.apply_records(records)
    assert [(b.kind, b.resume_at) for b in blocked] == [("handler", 1)]
    assert letters.sent == []
    assert projection.rows == [good.order_id]  # nothing after the failing record
    assert projection.next_offset("g:failures-test:0") == 1
    assert SECRET not in repr(logs)
    projection.bad = None  # the bug fixed: the held partition is retried from offset 1
    assert await inbox.apply_records(records[1:]) == []
    assert projection.rows == [good.order_id, bad.order_id, after.order_id]


async def test_a_dead_lettered_record_is_logged_without_quoting_its_payload() -> None:
    bad = placed()
    projection = FailingProjection(bad.order_id)
    inbox, letters = inbox_of(projection, max_attempts=2)
    with captured_logs(inbox_module) as logs:
        await inbox.handle_records([record(bad, 0)])
    assert [topic for topic, _ in letters.sent] == ["failures-test.dlq.g"]
    dead = [line for line in logs if line["event"] == "record dead-lettered"]
    assert len(dead) == 1
    assert dead[0]["error"] == "ValueError"
    assert SECRET not in repr(logs)
