"""A plain read_committed consumer tailing the five topics while the suite runs: it tells the
traffic when an order reached a stage (no polling of the APIs) and counts events per second,
the throughput the faults' recovery is measured on."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Iterable

from fulfilment_kit.contracts import topics
from tests.support.stack import assigned_reader


class EventWatch:
    def __init__(self) -> None:
        self.types: dict[str, set[str]] = defaultdict(set)
        self.per_second: dict[int, int] = defaultdict(int)
        self.started = time.monotonic()
        self._waiters: dict[str, list[tuple[frozenset[str], asyncio.Future[str]]]] = defaultdict(
            list
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        names = [topics.physical(t) for t in topics.ALL]
        consumer, tps = await assigned_reader(names, fetch_max_wait_ms=200)
        await consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run(consumer))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, consumer: object) -> None:
        try:
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=500)  # type: ignore[attr-defined]
                except asyncio.CancelledError:
                    raise
                except Exception:  # the broker is down: aiokafka reconnects
                    await asyncio.sleep(0.5)  # backoff before the next fetch
                    continue
                now = int(time.monotonic() - self.started)
                for records in batches.values():
                    for r in records:
                        self.per_second[now] += 1
                        if r.key is None:
                            continue
                        ce_type = next(
                            (v.decode() for k, v in r.headers or () if k == "ce_type"), ""
                        )
                        self._seen(r.key.decode(errors="replace"), ce_type)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 10)  # type: ignore[attr-defined]

    def _seen(self, key: str, ce_type: str) -> None:
        self.types[key].add(ce_type)
        waiters = self._waiters.get(key)
        if not waiters:
            return
        for wanted, future in list(waiters):
            if ce_type in wanted and not future.done():
                future.set_result(ce_type)
        self._waiters[key] = [(w, f) for w, f in waiters if not f.done()]

    async def reached(self, order_id: str, types: Iterable[str], timeout: float) -> str | None:
        """The first of `types` seen for `order_id` (None at the timeout)."""
        wanted = frozenset(types)
        seen = wanted & self.types.get(order_id, set())
        if seen:
            return next(iter(seen))
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[order_id].append((wanted, future))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None

    def now(self) -> float:
        return time.monotonic() - self.started

    def rate(self, start: float, end: float) -> float:
        """Events per second on the topics between two watch times."""
        seconds = range(int(start), max(int(start) + 1, int(end)))
        return sum(self.per_second.get(s, 0) for s in seconds) / len(seconds)
