"""Fenced tracking: a tracking write that only succeeds from the position it was based on.

eventsourcing's single-row tracking only refuses a position that is not ahead of the
recorded one. That lets a consumer whose partition was revoked mid-batch commit *over* the
partition's new owner when its position is higher (both would apply the same records).
A `FencedTracking` carries the position the batch was read from (`expected`); a fenced
recorder writes it as a compare-and-set in the batch's own transaction, and raises
`TrackingMoved` (an IntegrityError, so nothing of the batch is recorded) when another
writer moved the position meanwhile. See docs/adr/0014-inbox-never-skips.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.popo import POPOProcessRecorder
from eventsourcing.postgres import PostgresProcessRecorder, PostgresTrackingRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier


@dataclass(frozen=True)
class FencedTracking(Tracking):
    """Tracking whose write must find `expected` recorded (None: no record yet)."""

    expected: int | None = None


@dataclass(frozen=True)
class TrackingSet(Tracking):
    """The positions of several partitions, recorded in one transaction (each one fenced).

    Its own name and position are the first one's: a recorder that does not know sets
    would record that one only, so an Inbox gives sets only to a processor that declares
    `applies_across_partitions` (see docs/adr/0026-one-transaction-per-fetched-batch.md)."""

    positions: tuple[Tracking, ...] = ()

    @classmethod
    def of(cls, positions: Sequence[Tracking]) -> TrackingSet:
        first = positions[0]
        return cls(first.application_name, first.notification_id, positions=tuple(positions))


def positions_of(tracking: Tracking) -> tuple[Tracking, ...]:
    """The positions `tracking` records: those of a set, else itself."""
    return tracking.positions if isinstance(tracking, TrackingSet) else (tracking,)


class TrackingMoved(IntegrityError):
    """The tracking position is not the one the batch was based on: another writer moved it."""


# Serialises the CREATE ... IF NOT EXISTS of replicas starting at once on one database
# (PostgreSQL answers a concurrent one with "tuple concurrently updated"); the log
# followers' tables take the same lock.
SCHEMA_LOCK = 0x66756C66696C


class FencedPostgresTrackingMixin(PostgresTrackingRecorder):
    """A PostgreSQL tracking recorder that writes `FencedTracking` as a compare-and-set."""

    def create_table(self) -> None:
        for attempt in range(3):
            try:
                super().create_table()
                return
            except IntegrityError:
                # eventsourcing checks whether the tables exist before its transaction: a
                # replica that created them (and their migration record) in between makes
                # this one's insert collide. Checked again, they exist.
                if attempt == 2:
                    raise

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,), prepare=False)
        super()._create_table(curs)

    def _insert_tracking(self, curs: Cursor[DictRow], tracking: Tracking) -> None:
        if isinstance(tracking, TrackingSet):
            rest = self._update_tracking_set(curs, tracking.positions)
            for position in rest:
                self._insert_tracking(curs, position)
            return
        if not isinstance(tracking, FencedTracking) or not self.datastore.single_row_tracking:
            super()._insert_tracking(curs, tracking)
            return
        table = (Identifier(self.datastore.schema), Identifier(self.tracking_table_name))
        if tracking.expected is None:
            # A concurrent first insert waits on the unique index, then does nothing.
            statement = SQL(
                "INSERT INTO {0}.{1} VALUES (%(name)s, %(new)s) "
                "ON CONFLICT (application_name) DO NOTHING RETURNING notification_id"
            ).format(*table)
        else:
            # UPDATE re-checks its WHERE on the newest row version after waiting for a
            # concurrent writer's lock (READ COMMITTED), so this is an atomic compare-and-set.
            statement = SQL(
                "UPDATE {0}.{1} SET notification_id = %(new)s "
                "WHERE application_name = %(name)s AND notification_id = %(expected)s "
                "RETURNING notification_id"
            ).format(*table)
        curs.execute(
            statement,
            {
                "name": tracking.application_name,
                "new": tracking.notification_id,
                "expected": tracking.expected,
            },
            prepare=True,
        )
        if curs.fetchone() is None:
            raise TrackingMoved(
                f"tracking of {tracking.application_name} is no longer at {tracking.expected}"
            )

    def _update_tracking_set(
        self, curs: Cursor[DictRow], positions: Sequence[Tracking]
    ) -> list[Tracking]:
        """The compare-and-set of every fenced position of a set that has a record, in one
        statement (a batch of a consumer of many partitions: one, not one per partition);
        returns the positions left to write one by one."""
        fenced = [p for p in positions if isinstance(p, FencedTracking) and p.expected is not None]
        names = [p.application_name for p in fenced]
        if (
            len(fenced) < 2
            or not self.datastore.single_row_tracking
            or len(set(names)) < len(names)
        ):
            return list(positions)
        statement = SQL(
            "UPDATE {0}.{1} AS t SET notification_id = v.new "
            "FROM unnest(%(names)s::text[], %(news)s::bigint[], %(expected)s::bigint[]) "
            "AS v(name, new, expected) "
            "WHERE t.application_name = v.name AND t.notification_id = v.expected "
            "RETURNING t.application_name"
        ).format(Identifier(self.datastore.schema), Identifier(self.tracking_table_name))
        curs.execute(
            statement,
            {
                "names": names,
                "news": [p.notification_id for p in fenced],
                "expected": [p.expected for p in fenced],
            },
            prepare=True,
        )
        moved = set(names) - {row["application_name"] for row in curs.fetchall()}
        if moved:
            raise TrackingMoved(
                f"tracking of {', '.join(sorted(moved))} is no longer where the batch began"
            )
        written = {id(p) for p in fenced}
        return [p for p in positions if id(p) not in written]


class FencedPostgresProcessRecorder(FencedPostgresTrackingMixin, PostgresProcessRecorder):
    """eventsourcing's PostgreSQL process recorder with fenced tracking writes."""


class FencedPOPOProcessRecorder(POPOProcessRecorder):
    """In-memory process recorder with fenced tracking writes (unit tests)."""

    def _assert_tracking_uniqueness(self, tracking: Tracking) -> None:
        if isinstance(tracking, TrackingSet):
            for position in tracking.positions:
                self._assert_tracking_uniqueness(position)
            return
        if isinstance(tracking, FencedTracking):
            current = self._max_tracking_ids[tracking.application_name]
            if current != tracking.expected:
                raise TrackingMoved(
                    f"tracking of {tracking.application_name} is at {current}, "
                    f"not {tracking.expected}"
                )
        super()._assert_tracking_uniqueness(tracking)

    def _insert_tracking(self, tracking: Tracking) -> None:
        for position in positions_of(tracking):
            super()._insert_tracking(position)


def fenced_process_recorder(factory: Any) -> Any:
    """The process recorder of `factory`, fenced where the persistence module allows it."""
    from eventsourcing.popo import POPOFactory
    from eventsourcing.postgres import PostgresFactory

    if isinstance(factory, PostgresFactory) and not factory.env.get("PROCESS_RECORDER_TOPIC"):
        prefix = factory.env.name.lower() or "stored"
        recorder = FencedPostgresProcessRecorder(
            datastore=factory.datastore,
            events_table_name=prefix + "_events",
            tracking_table_name=(factory.env.name.lower() or "notification") + "_tracking",
        )
        if factory.env_create_table():
            recorder.create_table()
        return recorder
    if isinstance(factory, POPOFactory):
        return FencedPOPOProcessRecorder()
    return factory.process_recorder()  # SQLite: monotonic tracking only (one writer per file)
