"""A rebuild from the topics read by several processes at once.

Decoding and applying are CPU-bound Python (one core per process, whatever the threads), so
the rebuild splits the topics' partitions between worker processes: each reads its share to
the end and applies it to the shadow tables itself, in transactions of its own. Rows merge
commutatively and idempotently (ADR 5), so any split of the events gives the rows one reader
would have written. The workers are forked when the command starts, before it opens any
connection or thread (they inherit the imported modules instead of importing them again),
and do what the rebuild asks them over a pipe, one command at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from customer_service.projections.pipeline import read_and_apply
from customer_service.projections.sources import TopicSource
from customer_service.projections.store import apply_batch, rebuild_datastore


@dataclass
class ShardCounts:
    """What one worker applied by one read (and the records it could not decode, in all)."""

    events: int = 0
    duplicates: int = 0
    undecodable: int = 0


class ShardedTopics:
    """The five topics' partitions shared by `workers` forked processes (see the module)."""

    name = "topics"

    def __init__(self, workers: int) -> None:
        if workers < 2:
            raise ValueError("sharded reading needs 2 workers or more")
        context = multiprocessing.get_context("fork")
        self.undecodable = 0
        self._pipes: list[Connection] = []
        self._workers: list[Any] = []
        for index in range(workers):
            ours, theirs = context.Pipe()
            # The worker closes its copies of the rebuild's ends (its own and its elders'),
            # so that it sees the pipe close when the rebuild goes away, however it goes.
            inherited = [*self._pipes, ours]
            worker = context.Process(
                target=_serve,
                args=(theirs, index, workers, inherited),
                daemon=True,
                name=f"rebuild-{index}",
            )
            worker.start()
            theirs.close()
            self._pipes.append(ours)
            self._workers.append(worker)

    @property
    def workers(self) -> int:
        return len(self._workers)

    async def open(self) -> None:
        await self._all("open")

    async def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self._all("close")
        for worker in self._workers:
            await asyncio.to_thread(worker.join, 10)
            if worker.is_alive():
                worker.kill()

    async def read_into(self, schema: str, projections: Sequence[str]) -> ShardCounts:
        """Each worker reads its partitions to their current end, applying into `schema`."""
        counts = [c for c in await self._all("read", schema, tuple(projections)) if c]
        self.undecodable = sum(c.undecodable for c in counts)
        return ShardCounts(
            sum(c.events for c in counts), sum(c.duplicates for c in counts), self.undecodable
        )

    async def _all(self, *command: Any) -> list[Any]:
        for pipe in self._pipes:
            pipe.send(command)
        replies = await asyncio.gather(*(asyncio.to_thread(_reply, p) for p in self._pipes))
        failed = [r for r in replies if isinstance(r, _Failed)]
        if failed:
            raise RuntimeError(f"rebuild worker failed: {failed[0].error}")
        return list(replies)


@dataclass(frozen=True)
class _Failed:
    error: str


def _reply(pipe: Connection) -> Any:
    try:
        return pipe.recv()
    except EOFError:
        return _Failed("it exited")


def _serve(pipe: Connection, index: int, workers: int, inherited: list[Connection]) -> None:
    """A worker: the commands of the rebuild, until it says close (or goes away)."""
    for end in inherited:
        end.close()
    loop = asyncio.new_event_loop()
    source = TopicSource(share=(index, workers))
    store: Any = None
    try:
        while True:
            try:
                command, *args = pipe.recv()
            except EOFError:
                break
            try:
                if command == "open":
                    store = rebuild_datastore(1)
                    loop.run_until_complete(source.open())
                    pipe.send(None)
                elif command == "read":
                    pipe.send(loop.run_until_complete(_read(source, store, *args)))
                elif command == "close":
                    loop.run_until_complete(source.close())
                    pipe.send(None)
                    break
            except Exception as exc:  # reported to the rebuild, which stops
                pipe.send(_Failed(f"{type(exc).__name__}: {exc}"))
    finally:
        with contextlib.suppress(Exception):
            if store is not None:
                store.close()
        loop.close()
        os._exit(0)  # nothing of the parent's (atexit, buffers) runs twice


async def _read(
    source: TopicSource, store: Any, schema: str, projections: Sequence[str]
) -> ShardCounts:
    """This worker's partitions to their current end, applied into `schema`."""
    counts = ShardCounts()

    def apply(batch: Sequence[Any]) -> None:
        with store.transaction(commit=True) as curs:
            result = apply_batch(curs, schema, batch, projections)
        counts.events += len(batch)
        counts.duplicates += result.duplicates

    await source.total()
    await read_and_apply(source, apply)
    counts.undecodable = source.undecodable
    return counts
