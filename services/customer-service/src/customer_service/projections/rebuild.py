"""Rebuild read models from scratch into shadow tables, then swap them in atomically.

The shadow tables fill from a source (the topics or the services' logs). Before the swap
the rebuild must hold every event the live tables hold: under a lock that pauses the live
consumer it checks `applied` (live) is a subset of the shadow's, reads on from the source
while it is not, and then moves the tables between schemas in one transaction. Events the
rebuild has and the live consumer has not applied yet are harmless: applying them again
merges nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor, sql
from psycopg.rows import DictRow

from customer_service.projections import SCHEMA
from customer_service.projections.pipeline import read_and_apply
from customer_service.projections.shards import ShardedTopics
from customer_service.projections.sources import Envelope, Source
from customer_service.projections.store import ReadModelRecorder, apply_batch, tables_of
from customer_service.projections.tables import APPLIED, Table, create_statements

SHADOW = f"{SCHEMA}_rebuild"
RETIRED = f"{SCHEMA}_retired"
LOCK_KEY = 0x52454255494C44  # one rebuild at a time per database ("REBUILD")
CATCH_UP_ATTEMPTS = 20

Mode = Literal["swap", "dry-run", "compare"]
Progress = Callable[[int, int | None], None]
"""Called with (events read so far, events expected in all, when known)."""


class RebuildError(RuntimeError):
    """The rebuild cannot be swapped in (it would lose events the live tables hold)."""


@dataclass
class TableDiff:
    only_live: int
    only_rebuilt: int
    samples_live: list[dict[str, Any]] = field(default_factory=list)
    samples_rebuilt: list[dict[str, Any]] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.only_live == 0 and self.only_rebuilt == 0


@dataclass
class RebuildReport:
    projections: tuple[str, ...]
    source: str
    mode: Mode
    events: int = 0
    duplicates: int = 0
    undecodable: int = 0
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    swapped: bool = False
    differences: dict[str, TableDiff] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def equal(self) -> bool:
        return all(d.equal for d in self.differences.values())


class _NotCaughtUp(Exception):
    """One side holds events the other has not applied (yet)."""

    def __init__(self, missing: int, *, rebuild_behind: bool = True) -> None:
        side = "live are not in the rebuild" if rebuild_behind else "rebuilt are not live"
        super().__init__(f"{missing} events applied {side} yet")
        self.missing = missing
        self.rebuild_behind = rebuild_behind


async def _together(*steps: Awaitable[Any]) -> None:
    """Run `steps` at once and wait for all of them, even when one fails; then raise the
    first failure (a failed open still gets its shadow dropped and its source closed)."""
    outcomes = await asyncio.gather(*steps, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _ident(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


class Rebuild:
    """One rebuild of `projections` from `source` into the database of `datastore`."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        projections: Sequence[str],
        source: Source | ShardedTopics,
        *,
        mode: Mode = "swap",
        progress: Progress | None = None,
        live_schema: str = SCHEMA,
    ) -> None:
        self.datastore = datastore
        self.projections = tuple(projections)
        self.tables: tuple[Table, ...] = tables_of(self.projections)
        self.source = source
        self.mode = mode
        self.progress = progress
        self.live = live_schema
        self.report = RebuildReport(self.projections, source.name, mode)

    async def run(self) -> RebuildReport:
        began = time.perf_counter()
        async with self._exclusive():
            # The shadow tables are made while the source connects (its workers' Kafka
            # readers and pools), and dropped while it closes: neither waits for the other.
            try:
                await _together(asyncio.to_thread(self._create_shadow), self.source.open())
                await self._read_all()
                for attempt in range(CATCH_UP_ATTEMPTS):
                    try:
                        await asyncio.to_thread(self._finish, attempt == CATCH_UP_ATTEMPTS - 1)
                        break
                    except _NotCaughtUp as behind:
                        missing = behind.missing
                        if not behind.rebuild_behind:
                            await asyncio.sleep(0.5)  # let the live consumer apply them
                        await self._read_all()
                else:
                    raise RebuildError(
                        f"the live read models hold {missing} events the {self.source.name} "
                        "source does not have: not swapping"
                    )
            finally:
                await _together(asyncio.to_thread(self._drop_shadow), self.source.close())
        self.report.seconds = time.perf_counter() - began
        self.report.undecodable = self.source.undecodable
        return self.report

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """A session advisory lock: a second rebuild of the same database fails fast."""
        with self.datastore.get_connection() as conn:
            row = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (LOCK_KEY,)).fetchone()
            if not row or not row["ok"]:
                raise RebuildError("another rebuild is running on this database")
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))

    def _create_shadow(self) -> None:
        ReadModelRecorder(self.datastore).create_table()  # the live tables exist
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SHADOW)))
            for statement in create_statements(SHADOW, (APPLIED, *self.tables)):
                curs.execute(statement)

    def _drop_shadow(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SHADOW)))

    async def _read_all(self) -> None:
        """Read the source to its current end, applying batches while the next is read (or
        have the sharded workers read and apply their partitions)."""
        if isinstance(self.source, ShardedTopics):
            counts = await self.source.read_into(SHADOW, self.projections)
            self.report.events += counts.events
            self.report.duplicates += counts.duplicates
            if self.progress:
                self.progress(self.report.events, self.report.events)
            return
        total = await self.source.total()
        expected = None if total is None else self.report.events + total

        def applied(events: int) -> None:
            self.report.events += events
            if self.progress:
                self.progress(self.report.events, expected)

        await read_and_apply(self.source, self._apply, applied)

    def _apply(self, batch: Sequence[Envelope]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            result = apply_batch(curs, SHADOW, batch, self.projections)
        self.report.duplicates += result.duplicates

    def _finish(self, final: bool) -> None:
        """Under a lock that pauses the live consumer: check the rebuild holds every event
        the live tables hold, then swap or compare. Raises _NotCaughtUp when it does not (or, to
        compare, when the live consumer has not applied all the rebuild read, unless `final`)."""
        if self.mode == "dry-run":
            with self.datastore.transaction(commit=False) as curs:
                self.report.rows = {t.name: self._count(curs, SHADOW, t) for t in self.tables}
            return
        with self.datastore.transaction(commit=self.mode == "swap") as curs:
            curs.execute("SET LOCAL lock_timeout = '30s'")
            live, shadow = _ident(self.live, "applied"), _ident(SHADOW, "applied")
            curs.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(live))
            missing = self._missing(curs, live, shadow)
            if missing and not (final and self.mode == "compare"):
                raise _NotCaughtUp(missing)
            if self.mode == "compare" and not final:
                extra = self._missing(curs, shadow, live)
                if extra:
                    raise _NotCaughtUp(extra, rebuild_behind=False)
            self.report.rows = {t.name: self._count(curs, SHADOW, t) for t in self.tables}
            if self.mode == "compare":
                self.report.differences = {t.name: self._diff(curs, t) for t in self.tables}
            else:
                self._swap(curs)
                self.report.swapped = True

    @staticmethod
    def _missing(curs: Cursor[DictRow], of: sql.Composed, in_: sql.Composed) -> int:
        """How many ce_ids of `of` are not in `in_`."""
        curs.execute(
            sql.SQL(
                "SELECT count(*) AS n FROM {} a WHERE NOT EXISTS "
                "(SELECT 1 FROM {} b WHERE b.ce_id = a.ce_id)"
            ).format(of, in_)
        )
        row = curs.fetchone()
        return int(row["n"]) if row else 0

    @staticmethod
    def _count(curs: Cursor[DictRow], schema: str, table: Table) -> int:
        curs.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(_ident(schema, table.name)))
        row = curs.fetchone()
        return int(row["n"]) if row else 0

    def _swap(self, curs: Cursor[DictRow]) -> None:
        retired = sql.Identifier(RETIRED)
        curs.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(retired))
        curs.execute(sql.SQL("CREATE SCHEMA {}").format(retired))
        for table in self.tables:
            curs.execute(
                sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                    _ident(self.live, table.name), retired
                )
            )
            curs.execute(
                sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                    _ident(SHADOW, table.name), sql.Identifier(self.live)
                )
            )
        curs.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(retired))

    def _diff(self, curs: Cursor[DictRow], table: Table, samples: int = 5) -> TableDiff:
        columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)

        def except_all(a: str, b: str) -> list[dict[str, Any]]:
            curs.execute(
                sql.SQL("SELECT {c} FROM {a} EXCEPT ALL SELECT {c} FROM {b}").format(
                    c=columns, a=_ident(a, table.name), b=_ident(b, table.name)
                )
            )
            return [dict(r) for r in curs.fetchall()]

        only_live = except_all(self.live, SHADOW)
        only_rebuilt = except_all(SHADOW, self.live)
        return TableDiff(
            len(only_live), len(only_rebuilt), only_live[:samples], only_rebuilt[:samples]
        )
