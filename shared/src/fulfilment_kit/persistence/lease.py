"""Leadership among a service's replicas: a PostgreSQL advisory lock on a dedicated connection.

The replica holding the session lock is the leader; the others try again every so often.
The lock lives as long as the connection: when the leader's process dies (even SIGKILL)
its socket closes, PostgreSQL ends the session and frees the lock, and the next try of a
standby wins. A leader checks its connection regularly; if it broke (database restart,
network), it has lost the lease and stops before it could act alongside a new leader.
On the in-memory and SQLite stores (one process) the lease is always held.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import psycopg
import structlog
from eventsourcing.application import Application
from eventsourcing.postgres import PostgresDatastore

from fulfilment_kit.persistence import SESSION_CONNECTION

log = structlog.get_logger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for `name`."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


class Lease:
    """Held by at most one process per database and name at a time."""

    def __init__(self, app: Application[Any], name: str) -> None:
        self.name = name
        self.key = lock_key(name)
        datastore = getattr(app.recorder, "datastore", None)
        self._params: dict[str, Any] | None = None
        if isinstance(datastore, PostgresDatastore):
            kwargs = datastore.pool.kwargs
            assert isinstance(kwargs, dict)
            self._params = {k: v for k, v in kwargs.items() if k != "row_factory"}
        self._conn: psycopg.Connection[Any] | None = None
        self.held = False

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it (blocking; call from a worker thread)."""
        if self._params is None:
            self.held = True
            return True
        if self.held:
            return self.still_held()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    **self._params,
                    **SESSION_CONNECTION,
                    application_name=f"fulfil-lease:{self.name}"[:63],
                )
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error:
            self._close()
            raise
        self.held = bool(row and row[0])
        return self.held

    def still_held(self) -> bool:
        """Whether this process still holds the lease (its connection is alive)."""
        if self._params is None:
            return self.held
        if not self.held or self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error as exc:
            log.warning("lease lost", lease=self.name, error=type(exc).__name__)
            self._close()
            return False
        return True

    def release(self) -> None:
        """Give the lease up (a standby takes it at its next try)."""
        if self._conn is not None and self.held:
            with contextlib.suppress(psycopg.Error):  # closing the connection frees it anyway
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        self._close()

    def _close(self) -> None:
        self.held = False
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
