"""The rebuild joins the batches read while it applied the previous one: fewer, larger
transactions the slower applying is, and every event applied once, in the order read."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from customer_service.projections import pipeline
from customer_service.projections.rebuild import Rebuild
from customer_service.projections.tables import PROJECTIONS


class CountingSource:
    """`batches` batches of `size` numbered stand-ins; `read_ahead` is set once the reader
    has handed over `read_ahead_after` of them (the rebuild's queue holds the rest)."""

    name = "test"
    undecodable = 0

    def __init__(self, batches: int, size: int, read_ahead_after: int) -> None:
        self.batches_, self.size, self.after = batches, size, read_ahead_after
        self.read_ahead = threading.Event()

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def total(self) -> int | None:
        return self.batches_ * self.size

    async def batches(self) -> AsyncIterator[list[Any]]:
        for n in range(self.batches_):
            if n == self.after:
                self.read_ahead.set()
            yield list(range(n * self.size, (n + 1) * self.size))
        self.read_ahead.set()


async def test_batches_read_while_one_is_applied_are_applied_together() -> None:
    # The first apply waits until the reader filled the queue (4) and asks for a sixth batch.
    source = CountingSource(batches=12, size=3, read_ahead_after=5)
    applied: list[list[int]] = []
    job = Rebuild(None, tuple(PROJECTIONS), source, mode="dry-run")  # type: ignore[arg-type]

    def apply(batch: Sequence[int]) -> None:
        if not applied:
            assert source.read_ahead.wait(10), "the reader never filled the queue"
        applied.append(list(batch))

    job._apply = apply  # type: ignore[assignment,method-assign]
    await job._read_all()

    assert [e for batch in applied for e in batch] == list(range(36))
    assert job.report.events == 36
    # While the first batch was applied the reader filled the queue: those went in one.
    assert any(len(batch) >= 4 * 3 for batch in applied[1:]), [len(b) for b in applied]
    assert len(applied) <= 12 - 3


async def test_joined_batches_stay_below_the_largest_transaction(monkeypatch: Any) -> None:
    monkeypatch.setattr(pipeline, "MAX_APPLY_BATCH", 6)
    source = CountingSource(batches=12, size=3, read_ahead_after=5)
    applied: list[list[int]] = []
    job = Rebuild(None, tuple(PROJECTIONS), source, mode="dry-run")  # type: ignore[arg-type]

    def apply(batch: Sequence[int]) -> None:
        if not applied:
            assert source.read_ahead.wait(10)
        applied.append(list(batch))

    job._apply = apply  # type: ignore[assignment,method-assign]
    await job._read_all()

    assert [e for batch in applied for e in batch] == list(range(36))
    assert max(len(batch) for batch in applied) == 6


def test_workers_only_where_the_records_pay_for_their_start(monkeypatch: Any) -> None:
    from customer_service import cli

    monkeypatch.setattr(cli.os, "cpu_count", lambda: 2)
    assert cli.default_workers(5_000) == 1  # one process: no worker to start
    assert cli.default_workers(cli.EVENTS_PER_WORKER * 2) == 2
    assert cli.default_workers(10**7) == 2  # at most the CPUs
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 64)
    assert cli.default_workers(10**7) == cli.MAX_WORKERS


async def test_the_collector_is_paused_while_applying_and_restored_after(monkeypatch: Any) -> None:
    import gc

    monkeypatch.setattr(pipeline, "FULL_COLLECTION_EVERY", 2)
    collections: list[int] = []
    monkeypatch.setattr(pipeline.gc, "collect", lambda generation=2: collections.append(generation))
    source = CountingSource(batches=12, size=3, read_ahead_after=0)
    enabled_while_applying: list[bool] = []
    job = Rebuild(None, tuple(PROJECTIONS), source, mode="dry-run")  # type: ignore[arg-type]

    def apply(batch: Sequence[int]) -> None:
        enabled_while_applying.append(gc.isenabled())

    job._apply = apply  # type: ignore[assignment,method-assign]
    assert gc.isenabled()
    await job._read_all()

    assert job.report.events == 36
    assert enabled_while_applying
    assert not any(enabled_while_applying)
    assert gc.isenabled()  # restored
    # One collection per applied transaction; every second a full one.
    assert len(collections) == len(enabled_while_applying)
    assert collections[1::2] == [2] * (len(collections) // 2)
    assert set(collections[0::2]) == {1}


async def test_the_collector_is_restored_when_applying_fails() -> None:
    import gc

    source = CountingSource(batches=3, size=3, read_ahead_after=0)
    job = Rebuild(None, tuple(PROJECTIONS), source, mode="dry-run")  # type: ignore[arg-type]

    def apply(batch: Sequence[int]) -> None:
        raise RuntimeError("database gone")

    job._apply = apply  # type: ignore[assignment,method-assign]
    with pytest.raises(RuntimeError, match="database gone"):
        await job._read_all()
    assert gc.isenabled()


class Steps(CountingSource):
    """A source recording its opening and closing (failing to open when told)."""

    def __init__(self, steps: list[str], fail_open: bool = False) -> None:
        super().__init__(batches=2, size=3, read_ahead_after=0)
        self.steps, self.fail_open = steps, fail_open
        self.opening = threading.Event()

    async def open(self) -> None:
        self.opening.set()
        self.steps.append("open")
        if self.fail_open:
            raise RuntimeError("kafka gone")

    async def close(self) -> None:
        self.steps.append("close")


def stepped(source: Steps, steps: list[str]) -> Rebuild:
    job = Rebuild(None, tuple(PROJECTIONS), source, mode="dry-run")  # type: ignore[arg-type]

    def create_shadow() -> None:
        # Made while the source connects: it started opening before the tables are done.
        assert source.opening.wait(10), "the source did not open while the shadow was made"
        steps.append("create")

    job._exclusive = contextlib.nullcontext  # type: ignore[assignment,method-assign]
    job._create_shadow = create_shadow  # type: ignore[method-assign]
    job._drop_shadow = lambda: steps.append("drop")  # type: ignore[method-assign]
    job._apply = lambda batch: steps.append("apply")  # type: ignore[method-assign]
    job._finish = lambda final: steps.append("finish")  # type: ignore[method-assign]
    return job


async def test_the_shadow_is_made_while_the_source_opens_and_dropped_while_it_closes() -> None:
    steps: list[str] = []
    report = await stepped(Steps(steps), steps).run()
    assert report.events == 6
    assert steps[:2] == ["open", "create"]
    assert "finish" in steps
    assert sorted(steps[-2:]) == ["close", "drop"]


async def test_a_source_that_fails_to_open_is_closed_and_the_shadow_dropped() -> None:
    steps: list[str] = []
    with pytest.raises(RuntimeError, match="kafka gone"):
        await stepped(Steps(steps, fail_open=True), steps).run()
    assert "apply" not in steps
    assert sorted(steps) == ["close", "create", "drop", "open"]
