"""Group commit: the commands of concurrent requests run together, in one thread hop.

A busy route's command costs a hop to a worker thread and a database transaction each; most
of both is the same for one command or thirty. `GroupCommit` runs the first call at once and
gathers the calls that arrive while it runs into the next batch (at most `max_batch`), so a
lone request waits for nothing and a burst shares its hops and transactions.

At a steady moderate rate the calls come one by one, mostly after the previous batch ended,
so most batches hold one call. With `linger_s`, while calls arrive closer together than that
(a moving average of their gaps), a batch waits until its oldest call is `linger_s` old, or
the batch is full, for the next calls to join it: PostgreSQL's `commit_delay`, for requests.
A call after a quiet spell still runs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import structlog

from fulfilment_kit.http.context import REQUEST_LOG_KEYS

C = TypeVar("C")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 64
GAP_WEIGHT = 0.2
"""The weight of the newest gap between two calls in their moving average."""


class GroupCommit(Generic[C, R]):
    """`await group(command)`: `run_batch(commands)` (in a worker thread) returns each
    command's outcome, a result or the exception its caller gets, in the commands' order."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[C]], Sequence[R | Exception]],
        max_batch: int = DEFAULT_MAX_BATCH,
        linger_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._clock = clock
        self._waiting: list[tuple[C, asyncio.Future[R], float]] = []
        """(command, its caller's future, when it arrived), in arrival order."""
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop whose task is running batches (None: none is)."""
        self._task: asyncio.Task[None] | None = None
        self._last_call: float | None = None
        self.gap_s = math.inf
        """The moving average of the gaps between calls."""
        self._full: asyncio.Event | None = None
        """Set when a lingering batch fills up."""

    async def __call__(self, command: C) -> R:
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:  # another loop's batches
            return _result(await asyncio.to_thread(self._run_batch, [command]))
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((command, future, self._arrived()))
        if self._full is not None and len(self._waiting) >= self.max_batch:
            self._full.set()
        if self._loop is None:
            self._loop = loop
            # Not in the first caller's context: its request's log keys are not the batch's.
            context = contextvars.copy_context()
            context.run(structlog.contextvars.unbind_contextvars, *REQUEST_LOG_KEYS)
            self._task = loop.create_task(self._drain(), name="group-commit", context=context)
        return await future

    def _arrived(self) -> float:
        """Now, with the gap since the previous call averaged in."""
        now = self._clock()
        if self._last_call is not None:
            gap = now - self._last_call
            self.gap_s = (
                gap if math.isinf(self.gap_s) else self.gap_s + GAP_WEIGHT * (gap - self.gap_s)
            )
        self._last_call = now
        return now

    async def _drain(self) -> None:
        batch: list[tuple[C, asyncio.Future[R], float]] = []
        try:
            while self._waiting:
                await self._linger()
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                commands = [command for command, _, _ in batch]
                try:
                    outcomes = await asyncio.to_thread(self._run_batch, commands)
                except Exception as exc:  # the batch as a whole failed: each caller's answer
                    outcomes = [exc] * len(batch)
                for (_, future, _), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller went away
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                batch = []
        finally:
            self._loop = None
            for _, future, _ in [*batch, *self._waiting]:  # the loop is closing: nobody runs them
                if not future.done():
                    future.cancel()
            self._waiting.clear()

    async def _linger(self) -> None:
        """While calls come closer together than `linger_s`, wait for company: until the
        oldest waiting call is `linger_s` old, or the batch is full."""
        if self.gap_s >= self.linger_s or len(self._waiting) >= self.max_batch:
            return
        rest = self._waiting[0][2] + self.linger_s - self._clock()
        if rest <= 0:
            return
        self._full = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), rest)
        finally:
            self._full = None


def _result(outcomes: Sequence[R | Exception]) -> R:
    (outcome,) = outcomes
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
