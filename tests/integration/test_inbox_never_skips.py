"""Defect 1: the inbox never moves past an offset it has not applied or dead-lettered.

On the real broker and PostgreSQL: a batch whose application raises (the database down or
failing over, at a start, a rebalance or mid-stream) is sought back and retried until the
database answers; nothing is skipped and nothing is applied twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import OperationalError, Tracking

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging.admin import ensure_topics
from fulfilment_kit.messaging.inbox import InboundMessage
from fulfilment_kit.observability import metrics
from fulfilment_kit.runtime import ServiceRuntime
from fulfilment_kit.settings import ServiceSettings
from tests.integration.tally import TallyApplication, tally_app, tally_runtime
from tests.integration.test_inbox import placed, produce
from tests.support.polling import eventually
from tests.support.stack import end_offsets, pg_down, pg_up, postgres_answers


class FailingOverTally(TallyApplication):
    """The tally consumer whose database calls fail while `down` is set (a failover)."""

    down = False
    failures = 0

    def _check(self) -> None:
        if type(self).down:
            type(self).failures += 1
            raise OperationalError("connection refused (database failing over)")

    def next_offset(self, tracking_name: str) -> int | None:
        self._check()
        return super().next_offset(tracking_name)

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        self._check()
        super().process_messages(messages, tracking)


def runtime_of(app: TallyApplication, group: str) -> ServiceRuntime:
    settings = ServiceSettings(
        relay_enabled=False,
        consumer_max_attempts=3,
        consumer_backoff_s=0.05,
        consumer_max_backoff_s=0.5,
    )
    runtime: ServiceRuntime = tally_runtime(app, group, settings)
    return runtime


def tally(database: str, cls: type[TallyApplication] = TallyApplication) -> TallyApplication:
    return tally_app(database, cls=cls)


async def assigned(rt: ServiceRuntime) -> None:
    async def partitions() -> int:
        consumer = rt._subscriber.consumer
        return len(consumer.assignment()) if consumer is not None else 0

    await eventually(partitions, until=lambda n: n > 0, timeout=60, what="partitions assigned")


async def test_inbox_skips_records_when_applying_a_batch_raises(database: str) -> None:
    """A consumer (re)started while its database fails over: the assignment cannot read the
    tracked offsets and the first batch raises. Before the fix the listener's error was
    swallowed, the batch's exception left aiokafka's position past it, and the next batch
    tracked a higher offset: the records in between were never applied."""
    group = f"tally-{uuid.uuid4().hex[:8]}"
    await ensure_topics([topics.dlq(topics.physical(topics.ORDERS), group)])
    first = placed()
    rt = runtime_of(tally(database), group)
    async with rt.running():
        await assigned(rt)
        await produce(first)
        app = rt.app
        assert isinstance(app, TallyApplication)
        await eventually(
            lambda: asyncio.to_thread(app.count, first.order_id), until=lambda n: n == 1
        )

    FailingOverTally.down, FailingOverTally.failures = True, 0
    app = tally(database, FailingOverTally)
    rt = runtime_of(app, group)
    try:
        async with rt.running():
            await assigned(rt)
            in_flight = [placed() for _ in range(3)]
            for event in in_flight:
                await produce(event)

            async def failures() -> int:
                return FailingOverTally.failures

            # the assignment and then the batch of the in-flight records hit the outage
            await eventually(failures, until=lambda n: n >= 3, timeout=30, what="failures")
            FailingOverTally.down = False
            later = placed()
            await produce(later)
            for event in [*in_flight, later]:
                await eventually(
                    lambda e=event: asyncio.to_thread(app.count, e.order_id),
                    until=lambda n: n == 1,
                    timeout=30,
                    what=f"order {event.order_id} applied once",
                )
            assert await asyncio.to_thread(app.count, first.order_id) == 1
    finally:
        FailingOverTally.down = False


def tracked(app: TallyApplication, group: str, partitions: int) -> dict[int, int | None]:
    topic = topics.physical(topics.ORDERS)
    return {p: app.next_offset(f"{group}:{topic}:{p}") for p in range(partitions)}


async def test_database_stopped_with_records_in_flight_and_across_a_rebalance_applies_every_record_once(  # noqa: E501
    database: str,
) -> None:
    """Stop this stack's PostgreSQL while a consumer has records in flight, start a second
    member of the group (a rebalance) while it is down, then start PostgreSQL again: every
    record is applied exactly once and each partition's tracked offset is its last offset."""
    group = f"tally-{uuid.uuid4().hex[:8]}"
    await ensure_topics([topics.dlq(topics.physical(topics.ORDERS), group)])
    partitions = 6
    one, two = tally(database), tally(database)
    first, second = runtime_of(one, group), runtime_of(two, group)
    produced: list[Any] = []

    async def produce_round(n: int) -> None:
        for i in range(n):
            event = placed()
            await produce(event, partition=i % partitions)
            produced.append(event)

    try:
        async with first.running():
            await assigned(first)
            await produce_round(12)
            await eventually(
                lambda: asyncio.to_thread(one.count, produced[-1].order_id),
                until=lambda n: n == 1,
                what="the first round applied",
            )

            pg_down()
            await produce_round(12)  # in flight: fetched, cannot be applied

            async def problems() -> dict[str, str]:
                return await first.health.readiness()

            held = await eventually(
                problems,
                until=lambda p: "consumers" in p,
                timeout=30,
                what="/readyz naming the held consumer",
            )
            assert group in held["consumers"]

            async with second.running():  # a rebalance while the database is down
                await produce_round(12)
                lag = metrics.INBOX_TRACKED_LAG

                def lag_total() -> float:
                    return sum(
                        lag.labels(group, topics.physical(topics.ORDERS), str(p))._value.get()
                        for p in range(partitions)
                    )

                async def lag_now() -> float:
                    return lag_total()

                await eventually(lag_now, until=lambda v: v > 0, timeout=30, what="lag grows")
                await asyncio.to_thread(pg_up)
                assert postgres_answers()
                await produce_round(6)

                async def applied() -> list[int]:
                    return [await asyncio.to_thread(one.count, e.order_id) for e in produced]

                counts = await eventually(
                    applied,
                    until=lambda c: all(n >= 1 for n in c),
                    timeout=90,
                    interval=0.5,
                    what="every record applied",
                )
                assert counts == [1] * len(produced)
                ends = await end_offsets([topics.physical(topics.ORDERS)])

                async def positions() -> dict[int, int | None]:
                    return await asyncio.to_thread(tracked, one, group, partitions)

                expected = {p: ends[(topics.physical(topics.ORDERS), p)] for p in range(partitions)}
                await eventually(positions, until=lambda t: t == expected, what="tracked = end")
                assert sum(counts) == len(produced) == 42
                gone = await eventually(problems, until=lambda p: "consumers" not in p, timeout=30)
                assert "consumers" not in gone
    finally:
        if not postgres_answers():
            await asyncio.to_thread(pg_up)
