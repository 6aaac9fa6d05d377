"""A consumer's batches are spaced (`round_spacing_s`) while records keep coming, a full
batch goes on at once, and the consumers of a process off the order's path take the
background spacing (ADR 28)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from fulfilment_kit.consumer_runtime import ConsumerRuntime
from fulfilment_kit.messaging.consumer import InboxSubscriber
from fulfilment_kit.settings import KafkaSettings, ServiceSettings
from tests.support.polling import eventually

TP = TopicPartition("t", 0)


def record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", 0, offset, 0, 0, b"k", b"v", None, 1, 1, [])


class Fetcher:
    """A consumer whose fetches return the given batch sizes, then nothing."""

    def __init__(self, sizes: Sequence[int]) -> None:
        self.sizes = list(sizes)
        self.offset = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if not self.sizes:
            await asyncio.Event().wait()  # nothing more: an idle long poll, until cancelled
        size = self.sizes.pop(0)
        batch = [record(self.offset + i) for i in range(size)]
        self.offset += size
        return {TP: batch}

    def assignment(self) -> set[TopicPartition]:
        return {TP}


class Applied:
    """The inbox's side: when each batch began and how large it was."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, int]] = []

    async def apply_records(self, records: Sequence[Any]) -> list[Any]:
        self.batches.append((time.monotonic(), len(records)))
        return []


class Gate:
    def holding(self, tp: TopicPartition) -> bool:
        return False

    def release(self, tp: TopicPartition) -> None:
        return None


async def batches_of(sizes: Sequence[int], spacing_s: float) -> list[tuple[float, int]]:
    inbox = Applied()
    subscriber = InboxSubscriber(
        inbox,  # type: ignore[arg-type]
        Gate(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        ["t"],
        KafkaSettings(),
        group_id="spaced",
        max_records=3,
        commit_interval_s=3600,
        fetch_timeout_ms=50,
        round_spacing_s=spacing_s,
    )
    task = asyncio.create_task(subscriber._run(Fetcher(sizes)))  # type: ignore[arg-type]
    try:
        await eventually(
            lambda: asyncio.sleep(0, len(inbox.batches)),
            until=lambda n: n == len(sizes),
            timeout=10,
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return inbox.batches


async def test_small_batches_start_at_least_the_spacing_apart() -> None:
    batches = await batches_of([1, 2, 1], spacing_s=0.3)
    starts = [at for at, _ in batches]
    assert [n for _, n in batches] == [1, 2, 1]
    assert all(later - earlier >= 0.3 for earlier, later in itertools.pairwise(starts))


async def test_a_full_batch_is_followed_at_once() -> None:
    # Full batches (max_records=3) mean the consumer is behind: no spacing after them.
    batches = await batches_of([3, 3, 1], spacing_s=5.0)
    starts = [at for at, _ in batches]
    assert starts[-1] - starts[0] < 5.0


def test_a_background_process_spaces_its_consumers_by_the_background_setting() -> None:
    settings = ServiceSettings(
        consumer_round_spacing_s=0.0, consumer_background_round_spacing_s=0.25
    )

    def spacing(background: bool) -> float:
        runtime = ConsumerRuntime(
            service="spacing-under-test",
            database=lambda: None,  # type: ignore[arg-type,return-value]
            settings=settings,
            background_consumers=background,
        )
        group = runtime.add_consumer("spacing-under-test", Processor(), ["fulfilment.orders.v1"])
        assert group.subscriber is not None
        return group.subscriber.round_spacing_s

    assert spacing(background=True) == 0.25
    assert spacing(background=False) == 0.0


class Processor:
    def process_messages(self, messages: Sequence[Any], tracking: Any) -> None:
        return None

    def next_offset(self, tracking_name: str) -> int | None:
        return None
