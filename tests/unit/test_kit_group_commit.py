"""Group commit (fulfilment_kit.http.batching): concurrent calls share one batch, a lone call
waits for nothing, and each caller gets its own command's outcome."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
import structlog

from fulfilment_kit.http.batching import GroupCommit


class Recorder:
    """A batch runner that records its batches; the first batch waits for `release`."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.seen_correlation: list[object] = []

    def __call__(self, commands: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(commands))
        self.seen_correlation.append(structlog.contextvars.get_contextvars().get("correlation_id"))
        self.started.set()
        assert self.release.wait(5)
        return [ValueError(f"odd {c}") if c % 2 else c * 10 for c in commands]


async def test_a_lone_call_runs_at_once_alone() -> None:
    runner = Recorder()
    runner.release.set()
    group = GroupCommit(runner)
    assert await group(4) == 40
    assert runner.batches == [[4]]


async def test_calls_arriving_while_a_batch_runs_go_together_each_with_its_outcome() -> None:
    runner = Recorder()
    group = GroupCommit(runner, max_batch=3)
    first = asyncio.create_task(group(2))
    await asyncio.to_thread(runner.started.wait, 5)
    later = [asyncio.create_task(group(n)) for n in (4, 5, 6, 8)]
    await asyncio.sleep(0)  # one loop turn: each new task runs up to its wait (it is queued)
    runner.release.set()
    assert await first == 20
    outcomes = await asyncio.gather(*later, return_exceptions=True)
    assert outcomes[0] == 40
    assert outcomes[2] == 60
    assert outcomes[3] == 80
    assert isinstance(outcomes[1], ValueError)
    assert str(outcomes[1]) == "odd 5"
    assert runner.batches == [[2], [4, 5, 6], [8]]  # in arrival order, at most max_batch


async def test_a_failing_batch_is_each_of_its_callers_answer_and_the_next_batch_runs() -> None:
    calls: list[list[int]] = []

    def broken(commands: Sequence[int]) -> list[int | Exception]:
        calls.append(list(commands))
        if len(calls) == 1:
            raise ConnectionError("database down")
        return list(commands)

    group = GroupCommit(broken)
    with pytest.raises(ConnectionError):
        await group(1)
    assert await group(2) == 2


async def test_the_batch_does_not_log_with_its_first_callers_request_context() -> None:
    runner = Recorder()
    runner.release.set()
    group = GroupCommit(runner)
    structlog.contextvars.bind_contextvars(correlation_id="first-caller")
    try:
        assert await group(2) == 20
    finally:
        structlog.contextvars.unbind_contextvars("correlation_id")
    assert runner.seen_correlation == [None]


class Clock:
    """A clock the test moves: the gaps between calls are what it says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_while_calls_come_close_together_a_batch_lingers_for_company_until_full() -> None:
    runner, clock = Recorder(), Clock()
    runner.release.set()
    group = GroupCommit(runner, max_batch=3, linger_s=30.0, clock=clock)
    assert await group(2) == 20  # the first call: no gap known, it runs at once
    clock.now += 0.01
    second = asyncio.create_task(group(4))
    for _ in range(5):  # loop turns: without lingering the second call would run alone now
        await asyncio.sleep(0)
    assert runner.batches == [[2]]
    clock.now += 0.01
    rest = [asyncio.create_task(group(n)) for n in (6, 8)]  # the third fills the batch
    assert await asyncio.wait_for(asyncio.gather(second, *rest), 5) == [40, 60, 80]
    assert runner.batches == [[2], [4, 6, 8]]


async def test_a_lingering_batch_runs_once_its_oldest_call_is_linger_old() -> None:
    runner = Recorder()
    runner.release.set()
    group = GroupCommit(runner, linger_s=0.05)
    assert await group(2) == 20
    assert await asyncio.wait_for(group(4), 5) == 40  # alone, after at most the linger
    assert runner.batches == [[2], [4]]
    assert group.gap_s < 0.05


async def test_a_call_after_a_quiet_spell_does_not_linger() -> None:
    runner, clock = Recorder(), Clock()
    runner.release.set()
    group = GroupCommit(runner, linger_s=30.0, clock=clock)
    assert await group(2) == 20
    clock.now += 60.0  # a gap longer than the linger: nobody is likely to join
    assert await asyncio.wait_for(group(4), 5) == 40
    assert runner.batches == [[2], [4]]
