"""Find a consumer group's inbox by name, and accept a retention gap on one of its partitions.

Services declare their runtimes under the entry-point group `fulfilment.consumers` (name =
consumer group, value = a `create_runtime(settings)` returning a ServiceRuntime or a
ConsumerRuntime that has the group among its consumers). FULFIL_CONSUMER_RUNTIMES
(`group=module:function,...`) adds more.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from aiokafka import TopicPartition

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.messaging.inbox import Inbox
from fulfilment_kit.persistence.fencing import FencedTracking
from fulfilment_kit.settings import KafkaSettings, OperatorSettings, ServiceSettings

ENTRY_POINTS = "fulfilment.consumers"


class OperatorError(Exception):
    """An operator command cannot do what it was asked (said in plain words)."""


def _factories() -> dict[str, str]:
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINTS)}
    for item in filter(None, OperatorSettings().consumer_runtimes.split(",")):
        name, _, target = item.partition("=")
        found[name.strip()] = target.strip()
    return found


def consumer_names() -> list[str]:
    return sorted(_factories())


@contextmanager
def consumer_inbox(group: str) -> Iterator[Inbox]:
    """The inbox of consumer group `group`, as its service builds it (not subscribed)."""
    target = _factories().get(group)
    if target is None:
        known = ", ".join(consumer_names()) or "none"
        raise OperatorError(f"unknown consumer {group!r} (known: {known})")
    module, _, function = target.partition(":")
    create = getattr(import_module(module), function)
    runtime = create(ServiceSettings(relay_enabled=False, consumers_enabled=False))
    try:
        for consumer in runtime.consumers:
            if consumer.inbox.group_id == group:
                yield consumer.inbox
                return
        raise OperatorError(f"{target} has no consumer {group!r}")
    finally:
        runtime.close()  # its appliers' and application's connection pools


def operator() -> str:
    return OperatorSettings().operator or getpass.getuser()


async def audit(action: str, consumer: str, **fields: Any) -> None:
    """Record what an operator did on the audit topic (kept forever)."""
    body = {
        "action": action,
        "consumer": consumer,
        "operator": operator(),
        "at": datetime.now(UTC).isoformat(),
        **fields,
    }
    producer = kafka.producer(KafkaSettings())
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.physical(topics.OPERATOR_AUDIT),
            value=json.dumps(body, sort_keys=True).encode(),
            key=consumer.encode(),
        )
    finally:
        await asyncio.wait_for(producer.stop(), 10)


@dataclass(frozen=True)
class GapOutcome:
    tracked: int | None
    log_start: int
    accepted: bool

    @property
    def lost(self) -> int:
        return max(0, self.log_start - (self.tracked or 0)) if self.accepted else 0


def physical_topic(topic: str) -> str:
    prefix = topics.prefix()
    return topic if not prefix or topic.startswith(prefix) else topics.physical(topic)


async def accept_gap(group: str, topic: str, partition: int, reason: str) -> GapOutcome:
    """Move `group`'s tracked offset on `topic`/`partition` up to the log start: the records
    deleted by retention are given up, on the record (audited). Fenced: if the consumer moved
    meanwhile, nothing is written."""
    tp = TopicPartition(physical_topic(topic), partition)
    reader = kafka.reader(KafkaSettings())
    await reader.start()
    try:
        start = (await reader.beginning_offsets([tp]))[tp]
    finally:
        await reader.stop()
    with consumer_inbox(group) as inbox:
        tracked = await inbox.tracked_position(tp)
        if tracked is None or tracked >= start:
            return GapOutcome(tracked, start, accepted=False)
        name = inbox.tracking_name(tp.topic, tp.partition)
        await asyncio.to_thread(
            inbox.app.process_messages, [], FencedTracking(name, start, expected=tracked)
        )
    outcome = GapOutcome(tracked, start, accepted=True)
    await audit(
        "gap-accepted",
        group,
        topic=tp.topic,
        partition=partition,
        tracked=tracked,
        log_start=start,
        lost_records=outcome.lost,
        reason=reason,
    )
    return outcome
