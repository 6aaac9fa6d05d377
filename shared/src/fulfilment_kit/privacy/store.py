"""The key store: per-customer data keys, wrapped by a KEK, destroyed on erasure.

One row per (customer, generation). Erasure clears the wrapped key of every generation and
keeps the row as a tombstone (when, and that it happened); a customer who comes back later gets
a new generation, and nothing sealed before the erasure opens again.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fulfilment_kit.persistence import database_name
from fulfilment_kit.privacy.settings import PrivacySettings
from fulfilment_kit.settings import PostgresSettings, ServiceSettings

__all__ = [
    "InMemoryKeyStore",
    "KeyStore",
    "PostgresKeyStore",
    "SqliteKeyStore",
    "StoredKey",
    "open_key_store",
]

TABLE = "privacy_data_keys"
# Every statement below names this constant table; values always go as parameters.
KEYSTORE_FILE = "fulfil_keys.sqlite"


@dataclass(frozen=True)
class StoredKey:
    customer_id: uuid.UUID
    generation: int
    kek_id: str | None
    wrapped: bytes | None
    """None once erased."""

    @property
    def erased(self) -> bool:
        return self.wrapped is None


class KeyStore(Protocol):
    def latest(self, customer_id: uuid.UUID) -> StoredKey | None:
        """The customer's newest generation (live or erased), if any."""

    def get(self, customer_id: uuid.UUID, generation: int) -> StoredKey | None: ...

    def get_many(self, wanted: Collection[tuple[uuid.UUID, int]]) -> list[StoredKey]:
        """The stored keys among the (customer, generation) pairs `wanted` (one statement
        where the store can)."""

    def create(self, key: StoredKey) -> bool:
        """Store a new generation unless one with that number exists (a concurrent twin);
        whether `key` was stored."""

    def first_or_latest(self, key: StoredKey) -> tuple[StoredKey | None, bool]:
        """Store `key` (generation 1) if the customer has no key at all, else read their
        newest (live or erased): (the newest key, whether it is `key`). One statement where
        the store can (a placement's only key-store round trip); (None, False) when a twin's
        generation 1 was committed meanwhile (read it with `latest`)."""

    def first_or_latest_many(
        self, keys: Sequence[StoredKey]
    ) -> list[tuple[StoredKey | None, bool]]:
        """`first_or_latest` of each key (of distinct customers), in one statement where the
        store can (a group of placements' only key-store round trip)."""

    def erase(self, customer_id: uuid.UUID) -> int:
        """Destroy every live key of the customer; how many were live."""

    def wrapped_by_other_than(self, kek_id: str, limit: int) -> list[StoredKey]:
        """Live keys not wrapped by `kek_id` (to rewrap after a KEK rotation)."""

    def rewrap(self, key: StoredKey, old_kek_id: str) -> bool:
        """Replace a live key's wrapping if it is still wrapped by `old_kek_id`."""

    def close(self) -> None: ...


class InMemoryKeyStore:
    """A key store in a dict (unit tests)."""

    def __init__(self) -> None:
        self._keys: dict[tuple[uuid.UUID, int], StoredKey] = {}
        self._lock = threading.Lock()

    def latest(self, customer_id: uuid.UUID) -> StoredKey | None:
        with self._lock:
            return self._latest(customer_id)

    def _latest(self, customer_id: uuid.UUID) -> StoredKey | None:
        mine = [k for (c, _), k in self._keys.items() if c == customer_id]
        return max(mine, key=lambda k: k.generation, default=None)

    def get(self, customer_id: uuid.UUID, generation: int) -> StoredKey | None:
        return self._keys.get((customer_id, generation))

    def get_many(self, wanted: Collection[tuple[uuid.UUID, int]]) -> list[StoredKey]:
        return [k for k in (self._keys.get(pair) for pair in wanted) if k is not None]

    def create(self, key: StoredKey) -> bool:
        with self._lock:
            return self._keys.setdefault((key.customer_id, key.generation), key) is key

    def first_or_latest(self, key: StoredKey) -> tuple[StoredKey | None, bool]:
        with self._lock:
            latest = self._latest(key.customer_id)
            if latest is None:
                self._keys[(key.customer_id, key.generation)] = key
                return key, True
            return latest, False

    def first_or_latest_many(
        self, keys: Sequence[StoredKey]
    ) -> list[tuple[StoredKey | None, bool]]:
        return [self.first_or_latest(key) for key in keys]

    def erase(self, customer_id: uuid.UUID) -> int:
        with self._lock:
            live = [k for (c, _), k in self._keys.items() if c == customer_id and not k.erased]
            for k in live:
                self._keys[(customer_id, k.generation)] = StoredKey(
                    customer_id, k.generation, None, None
                )
        return len(live)

    def wrapped_by_other_than(self, kek_id: str, limit: int) -> list[StoredKey]:
        with self._lock:
            return [k for k in self._keys.values() if not k.erased and k.kek_id != kek_id][:limit]

    def rewrap(self, key: StoredKey, old_kek_id: str) -> bool:
        with self._lock:
            stored = self._keys.get((key.customer_id, key.generation))
            if stored is None or stored.erased or stored.kek_id != old_kek_id:
                return False
            self._keys[(key.customer_id, key.generation)] = key
            return True

    def close(self) -> None:
        pass


class _SqlKeyStore:
    """The SQL both stores share; subclasses say how to run a statement."""

    placeholder = "%s"

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _run(self, sql: str, params: tuple[Any, ...]) -> int:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", self.placeholder)

    @staticmethod
    def _key(row: tuple[Any, ...]) -> StoredKey:
        customer, generation, kek_id, wrapped = row
        return StoredKey(
            uuid.UUID(str(customer)), int(generation), kek_id, bytes(wrapped) if wrapped else None
        )

    def latest(self, customer_id: uuid.UUID) -> StoredKey | None:
        rows = self._rows(
            f"SELECT customer_id, generation, kek_id, wrapped FROM {TABLE} "  # noqa: S608
            "WHERE customer_id = %s ORDER BY generation DESC LIMIT 1",
            (str(customer_id),),
        )
        return self._key(rows[0]) if rows else None

    def get(self, customer_id: uuid.UUID, generation: int) -> StoredKey | None:
        rows = self._rows(
            f"SELECT customer_id, generation, kek_id, wrapped FROM {TABLE} "  # noqa: S608
            "WHERE customer_id = %s AND generation = %s",
            (str(customer_id), generation),
        )
        return self._key(rows[0]) if rows else None

    def get_many(self, wanted: Collection[tuple[uuid.UUID, int]]) -> list[StoredKey]:
        pairs = set(wanted)
        customers = sorted({str(customer) for customer, _ in pairs})
        found: list[StoredKey] = []
        for start in range(0, len(customers), 500):
            chunk = customers[start : start + 500]
            rows = self._rows(
                f"SELECT customer_id, generation, kek_id, wrapped FROM {TABLE} "  # noqa: S608
                f"WHERE customer_id IN ({', '.join(['%s'] * len(chunk))})",
                tuple(chunk),
            )
            keys = (self._key(row) for row in rows)
            found += [k for k in keys if (k.customer_id, k.generation) in pairs]
        return found

    def create(self, key: StoredKey) -> bool:
        stored = self._run(
            f"INSERT INTO {TABLE} (customer_id, generation, kek_id, wrapped) "  # noqa: S608
            "VALUES (%s, %s, %s, %s) ON CONFLICT (customer_id, generation) DO NOTHING",
            (str(key.customer_id), key.generation, key.kek_id, key.wrapped),
        )
        return stored == 1

    def first_or_latest(self, key: StoredKey) -> tuple[StoredKey | None, bool]:
        # Every customer with a key has a generation 1 (erasure keeps the row), so inserting
        # generation 1 succeeds exactly for a customer without any key.
        if self.create(key):
            return key, True
        return self.latest(key.customer_id), False

    def first_or_latest_many(
        self, keys: Sequence[StoredKey]
    ) -> list[tuple[StoredKey | None, bool]]:
        return [self.first_or_latest(key) for key in keys]

    def erase(self, customer_id: uuid.UUID) -> int:
        return self._run(
            f"UPDATE {TABLE} SET wrapped = NULL, kek_id = NULL, erased_at = CURRENT_TIMESTAMP "  # noqa: S608
            "WHERE customer_id = %s AND wrapped IS NOT NULL",
            (str(customer_id),),
        )

    def wrapped_by_other_than(self, kek_id: str, limit: int) -> list[StoredKey]:
        rows = self._rows(
            f"SELECT customer_id, generation, kek_id, wrapped FROM {TABLE} "  # noqa: S608
            "WHERE wrapped IS NOT NULL AND kek_id <> %s LIMIT %s",
            (kek_id, limit),
        )
        return [self._key(r) for r in rows]

    def rewrap(self, key: StoredKey, old_kek_id: str) -> bool:
        return (
            self._run(
                f"UPDATE {TABLE} SET kek_id = %s, wrapped = %s WHERE customer_id = %s "  # noqa: S608
                "AND generation = %s AND kek_id = %s AND wrapped IS NOT NULL",
                (key.kek_id, key.wrapped, str(key.customer_id), key.generation, old_kek_id),
            )
            == 1
        )


class PostgresKeyStore(_SqlKeyStore):
    """The key store in a PostgreSQL database (a small connection pool of its own)."""

    def __init__(self, postgres: PostgresSettings, dbname: str) -> None:
        from psycopg_pool import ConnectionPool

        conninfo = (
            f"host={postgres.host} port={postgres.port} user={postgres.user} "
            f"password={postgres.password} dbname={dbname}"
        )
        # Autocommit: every operation is one statement (its own transaction), so a key
        # costs one round trip, not BEGIN, the statement and COMMIT.
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=4,
            timeout=max(postgres.pool_timeout_s, 5),
            kwargs={"autocommit": True},
            open=True,
        )
        # The table is made at first use, not here: a replica starting while PostgreSQL is
        # down must come up (and answer 503 meanwhile) as its event store does.
        self._table_ready = False
        self._table_lock = threading.Lock()

    def _ensure_table(self) -> None:
        if self._table_ready:
            return
        with self._table_lock, self._pool.connection() as conn, conn.transaction():
            if self._table_ready:
                return
            # Under an advisory lock: replicas starting at once on a fresh database would
            # otherwise collide creating the table ('duplicate key ... pg_type').
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('fulfil privacy key store'))")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                " customer_id uuid NOT NULL, generation integer NOT NULL,"
                " kek_id text, wrapped bytea,"
                " created_at timestamptz NOT NULL DEFAULT now(), erased_at timestamptz,"
                " PRIMARY KEY (customer_id, generation))"
            )
            self._table_ready = True

    def first_or_latest(self, key: StoredKey) -> tuple[StoredKey | None, bool]:
        # One round trip: the insert of generation 1 (a customer's first key), and the newest
        # row as it was before it (the statement's snapshot does not see its own insert).
        rows = self._rows(
            f"WITH inserted AS (INSERT INTO {TABLE} (customer_id, generation, kek_id, wrapped)"  # noqa: S608
            " VALUES (%s, %s, %s, %s) ON CONFLICT (customer_id, generation) DO NOTHING"
            " RETURNING generation)"
            " SELECT customer_id, generation, kek_id, wrapped, false FROM ("
            f"  SELECT customer_id, generation, kek_id, wrapped FROM {TABLE}"
            "   WHERE customer_id = %s ORDER BY generation DESC LIMIT 1) AS newest"
            " UNION ALL SELECT NULL, generation, NULL, NULL, true FROM inserted",
            (str(key.customer_id), key.generation, key.kek_id, key.wrapped, str(key.customer_id)),
        )
        if any(row[4] for row in rows):
            return key, True
        return (self._key(rows[0][:4]), False) if rows else (None, False)

    def first_or_latest_many(
        self, keys: Sequence[StoredKey]
    ) -> list[tuple[StoredKey | None, bool]]:
        # The statement of `first_or_latest` over arrays: every key's insert, and each
        # customer's newest row as it was before them.
        if len(keys) == 1:
            return [self.first_or_latest(keys[0])]
        customers = [str(key.customer_id) for key in keys]
        rows = self._rows(
            "WITH given AS (SELECT * FROM unnest(%s::uuid[], %s::integer[], %s::text[],"  # noqa: S608
            " %s::bytea[]) AS g(customer_id, generation, kek_id, wrapped)),"
            f" inserted AS (INSERT INTO {TABLE} (customer_id, generation, kek_id, wrapped)"
            " SELECT customer_id, generation, kek_id, wrapped FROM given"
            " ON CONFLICT (customer_id, generation) DO NOTHING RETURNING customer_id)"
            " SELECT customer_id, generation, kek_id, wrapped, false FROM ("
            "  SELECT DISTINCT ON (customer_id) customer_id, generation, kek_id, wrapped"
            f"  FROM {TABLE} WHERE customer_id = ANY(%s::uuid[])"
            "  ORDER BY customer_id, generation DESC) AS newest"
            " UNION ALL SELECT customer_id, NULL, NULL, NULL, true FROM inserted",
            (
                customers,
                [key.generation for key in keys],
                [key.kek_id for key in keys],
                [key.wrapped for key in keys],
                customers,
            ),
        )
        created = {str(row[0]) for row in rows if row[4]}
        newest = {str(row[0]): self._key(row[:4]) for row in rows if not row[4]}
        return [
            (key, True) if customer in created else (newest.get(customer), False)
            for customer, key in zip(customers, keys, strict=True)
        ]

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        self._ensure_table()
        with self._pool.connection() as conn:
            return list(conn.execute(self._sql(sql), params).fetchall())

    def _run(self, sql: str, params: tuple[Any, ...]) -> int:
        self._ensure_table()
        with self._pool.connection() as conn:
            return conn.execute(self._sql(sql), params).rowcount

    def close(self) -> None:
        self._pool.close()


class SqliteKeyStore(_SqlKeyStore):
    """The key store in one SQLite file (the embedded fallback: shared by every service)."""

    placeholder = "?"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            " customer_id text NOT NULL, generation integer NOT NULL, kek_id text, wrapped blob,"
            " created_at text NOT NULL DEFAULT CURRENT_TIMESTAMP, erased_at text,"
            " PRIMARY KEY (customer_id, generation))"
        )

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(self._sql(sql), params).fetchall()

    def _run(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._lock:
            return self._db.execute(self._sql(sql), params).rowcount

    def close(self) -> None:
        self._db.close()


def open_key_store(
    service: str,
    settings: PrivacySettings | None = None,
    service_settings: ServiceSettings | None = None,
    postgres: PostgresSettings | None = None,
) -> KeyStore:
    """The key store the service's settings point at (PostgreSQL, or SQLite when embedded)."""
    settings = settings or PrivacySettings()
    service_settings = service_settings or ServiceSettings()
    if service_settings.persistence == "sqlite":
        return SqliteKeyStore(service_settings.sqlite_dir / KEYSTORE_FILE)
    postgres = postgres or PostgresSettings()
    dbname = settings.keystore_dbname or postgres.dbname or database_name(service)
    return PostgresKeyStore(postgres, dbname)
