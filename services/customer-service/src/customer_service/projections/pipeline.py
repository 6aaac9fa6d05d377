"""Reading a rebuild's source and applying it at once: the next batches are read while one is
applied, and what was read meanwhile is applied together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

MAX_APPLY_BATCH = 10_000
"""Events applied in one transaction at most (batches read meanwhile are joined up to it)."""

Apply = Callable[[Sequence[Any]], None]


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
            if applied is not None:
                applied(len(batch))
        await producer  # raises what the reader raised
    finally:
        if not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
