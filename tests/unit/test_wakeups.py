"""Wake-ups instead of polls (ADR 24): the kit's Wakeup, the partition gate's sleep, the
samplers on a store without notifications, and the loops' sleep until the next due item."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from fulfilment_kit.messaging.consumer import PartitionGate
from fulfilment_kit.observability.business import sampler
from fulfilment_kit.persistence.follower import seconds_until
from fulfilment_kit.persistence.notifications import Wakeup, on_commit
from orders.application import OrdersApplication
from orders.deadlines import DeadlineWatch
from tests.support.polling import eventually
from tests.unit.test_orders_lifecycle import place


async def test_a_wakeup_set_before_the_first_wait_or_from_a_thread_is_not_lost() -> None:
    wakeup = Wakeup()
    wakeup.set()
    assert await wakeup.wait(60)
    await asyncio.to_thread(wakeup.set)
    assert await wakeup.wait(60)
    assert not await wakeup.wait(0.01)  # cleared by the wait that returned


async def test_a_burst_of_wakeups_makes_one_round_after_the_spacing() -> None:
    wakeup = Wakeup()
    await wakeup.wait(0)
    started = time.monotonic()
    for _ in range(50):
        wakeup.set()
    assert await wakeup.wait(60, spacing_s=0.2)
    assert time.monotonic() - started >= 0.19  # not sooner than the spacing
    assert not await wakeup.wait(0)  # the 50 wake-ups were one round


def test_a_loop_sleeps_until_the_next_due_item_at_most_its_fallback() -> None:
    now = datetime.now(UTC)
    assert seconds_until(None, now, 10.0) == 10.0
    assert 1.0 < seconds_until(now + timedelta(seconds=1), now, 10.0) < 1.1
    assert seconds_until(now + timedelta(days=2), now, 10.0) == 10.0
    assert seconds_until(now - timedelta(seconds=5), now, 10.0) == 0.0


class _Consumer:
    def __init__(self, tps: set[TopicPartition]) -> None:
        self.tps = tps

    def assignment(self) -> set[TopicPartition]:
        return self.tps

    def seek(self, *_: Any) -> None: ...

    def pause(self, *_: Any) -> None: ...

    def resume(self, *_: Any) -> None: ...


def test_the_partition_gate_sleeps_while_nothing_is_held_and_wakes_for_a_retry() -> None:
    inbox: Any = SimpleNamespace(group_id="g", backoff_s=0.5, forget=lambda tp: None)
    gate = PartitionGate(inbox, max_backoff_s=30)
    assert gate._next_wait(0.2, 30.0) == 30.0  # nothing held: nothing to retry
    tp = TopicPartition("t", 0)
    gate.hold(_Consumer({tp}), tp, "database", 5, "down")  # type: ignore[arg-type]
    assert 0.3 < gate._next_wait(0.2, 30.0) <= 0.5  # its first retry, not the idle sleep
    gate.holds[tp].resumed = True
    assert gate._next_wait(0.2, 30.0) == 0.2  # resumed: checked until it caught up
    gate.release(tp)
    assert gate._next_wait(0.2, 30.0) == 30.0


async def test_without_notifications_a_sampler_samples_every_interval() -> None:
    app = OrdersApplication()  # in memory: no LISTEN/NOTIFY
    async with on_commit(app, lambda: None) as notified:
        assert not notified
    samples: list[float] = []
    job = sampler(lambda: samples.append(time.monotonic()), interval_s=0.05, changes=app)
    task = asyncio.create_task(job())
    try:

        async def sampled() -> int:
            return len(samples)

        await eventually(sampled, until=lambda n: n >= 3, timeout=10, what="three samples")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_deadline_watch_knows_when_the_next_deadline_falls_due() -> None:
    app = OrdersApplication()
    watch = DeadlineWatch(app, deadlines_s={"placed": 60.0})
    assert watch.step() == []
    assert watch.next_due is None  # nothing waits: the loop sleeps its fallback
    place(app)
    before = datetime.now(UTC)
    assert watch.step() == []
    assert watch.next_due is not None
    assert timedelta(seconds=59) < watch.next_due - before <= timedelta(seconds=60)
