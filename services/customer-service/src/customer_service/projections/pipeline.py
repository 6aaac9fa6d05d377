"""Reading a rebuild's source and applying it at once: the next batches are read while one is
applied, and what was read meanwhile is applied together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

MAX_APPLY_BATCH = 10_000
"""Events applied in one transaction at most (batches read meanwhile are joined up to it)."""

FULL_COLLECTION_EVERY = 16
"""Applied transactions between two full collections while the automatic collector is off."""

Apply = Callable[[Sequence[Any]], None]


@contextlib.contextmanager
def collected_between_batches() -> Iterator[Callable[[], None]]:
    """The cyclic collector off while a rebuild reads and applies; the caller collects once
    per applied transaction instead (the young generations, and everything every
    FULL_COLLECTION_EVERY). A rebuild holds tens of thousands of decoded events at once, all
    tracked objects: with the collector's automatic thresholds its collections walked them
    again and again (about 40 % of the rebuild's CPU); the events themselves form no cycles
    and are freed by reference counting, so collecting per transaction keeps memory bounded."""
    enabled = gc.isenabled()
    gc.disable()
    done = 0

    def collect() -> None:
        nonlocal done
        done += 1
        gc.collect(2 if done % FULL_COLLECTION_EVERY == 0 else 1)

    try:
        yield collect
    finally:
        if enabled:
            gc.enable()


async def read_and_apply(
    source: Any, apply: Apply, applied: Callable[[int], None] | None = None
) -> None:
    """Read `source` to the end its last `total()` saw, applying batches in a thread while the
    next ones are read; batches read meanwhile go in one transaction (up to MAX_APPLY_BATCH
    events); `applied` is told how many events each transaction applied."""
    queue: asyncio.Queue[list[Any] | None] = asyncio.Queue(maxsize=4)

    async def produce() -> None:
        try:
            async for batch in source.batches():
                await queue.put(batch)
        finally:
            await queue.put(None)

    with collected_between_batches() as collect:
        await _pipelined(queue, produce, apply, applied, collect)


async def _pipelined(
    queue: asyncio.Queue[list[Any] | None],
    produce: Callable[[], Any],
    apply: Apply,
    applied: Callable[[int], None] | None,
    collect: Callable[[], None],
) -> None:
    producer = asyncio.create_task(produce())
    try:
        ended = False
        while not ended and (batch := await queue.get()) is not None:
            # The slower applying is, the larger (and cheaper per event) its transactions.
            while len(batch) < MAX_APPLY_BATCH and not queue.empty():
                more = queue.get_nowait()
                if more is None:
                    ended = True
                    break
                batch = [*batch, *more]
            await asyncio.to_thread(apply, batch)
            size, batch, more = len(batch), [], []  # freed before the collection walks
            collect()
            if applied is not None:
                applied(size)
        await producer  # raises what the reader raised
    finally:
        if not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
