"""Group commit: the commands of concurrent requests run together, in one thread hop.

A busy route's command costs a hop to a worker thread and a database transaction each; most
of both is the same for one command or thirty. `GroupCommit` runs the first call at once and
gathers the calls that arrive while it runs into the next batch (at most `max_batch`), so a
lone request waits for nothing and a burst shares its hops and transactions.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import structlog

from fulfilment_kit.http.context import REQUEST_LOG_KEYS

C = TypeVar("C")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 64


class GroupCommit(Generic[C, R]):
    """`await group(command)`: `run_batch(commands)` (in a worker thread) returns each
    command's outcome, a result or the exception its caller gets, in the commands' order."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[C]], Sequence[R | Exception]],
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch = max_batch
        self._waiting: list[tuple[C, asyncio.Future[R]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop whose task is running batches (None: none is)."""
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, command: C) -> R:
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:  # another loop's batches
            return _result(await asyncio.to_thread(self._run_batch, [command]))
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((command, future))
        if self._loop is None:
            self._loop = loop
            # Not in the first caller's context: its request's log keys are not the batch's.
            context = contextvars.copy_context()
            context.run(structlog.contextvars.unbind_contextvars, *REQUEST_LOG_KEYS)
            self._task = loop.create_task(self._drain(), name="group-commit", context=context)
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[C, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                commands = [command for command, _ in batch]
                try:
                    outcomes = await asyncio.to_thread(self._run_batch, commands)
                except Exception as exc:  # the batch as a whole failed: each caller's answer
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller went away
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                batch = []
        finally:
            self._loop = None
            for _, future in [*batch, *self._waiting]:  # the loop is closing: nobody runs them
                if not future.done():
                    future.cancel()
            self._waiting.clear()


def _result(outcomes: Sequence[R | Exception]) -> R:
    (outcome,) = outcomes
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
