"""Follow a service's own notification log into a small table, with a persisted position.

A background loop (stage deadlines, auto-dispatch, SLA deadlines, the case directory, the
SKU listing) needs to know a few things of its own service's log: which orders wait in
which stage since when, which shipments are packing, which case deadlines are pending.
`LogFollower` reads the log from its tracked position and lets a *projector* turn each
batch of domain events into rows of one shared table of followed items (`kind`, `key`, an
optional `due_at`, a JSON `data`). The rows and the follower's new position are written in
one transaction, so a restart reads only what was recorded since (no full replay) and the
table holds only the live items, not everything ever seen.

Loops act on due rows with `claim_due`, which locks them `FOR UPDATE SKIP LOCKED`: with
several replicas against one database each due item is acted on by one of them at a time.
Several replicas may also catch up at once: the position row is locked for the batch.

On PostgreSQL the tables live in the service's database; on the in-memory (popo) and
SQLite stores they live in memory, per application (rebuilt at process start).
"""

from __future__ import annotations

import abc
import contextlib
import threading
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eventsourcing.application import Application
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL
from psycopg.types.json import Jsonb

from fulfilment_kit.persistence.fencing import SCHEMA_LOCK

ItemKey = tuple[str, str, str]
"""(follower, kind, key) of one followed item."""


@dataclass(frozen=True)
class Item:
    """One row of a follower's table: something it keeps track of, maybe due at a time."""

    kind: str
    key: str
    due_at: datetime | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Quarantined:
    """A notification the outbox relay could not map to its public events."""

    service: str
    notification_id: int
    originator_id: str
    originator_version: int
    topic: str
    error: str


class Transaction(abc.ABC):
    """One database transaction over the tracking and items tables."""

    @abc.abstractmethod
    def lock_position(self, name: str) -> int:
        """The tracked position of `name` (0 if none), locked until the end of the transaction."""

    @abc.abstractmethod
    def read_position(self, name: str) -> int:
        """The tracked position of `name` (0 if none), not locked (another writer may move it)."""

    @abc.abstractmethod
    def set_position(self, name: str, position: int) -> None: ...

    def newest(self, recorder: Any) -> int:
        """The newest notification id of `recorder`'s log (0: none)."""
        return int(recorder.max_notification_id() or 0)

    @abc.abstractmethod
    def get(self, follower: str, kind: str, key: str) -> Item | None: ...

    @abc.abstractmethod
    def get_many(self, follower: str, kind: str, keys: Sequence[str]) -> dict[str, Item]: ...

    @abc.abstractmethod
    def put(self, follower: str, item: Item) -> None: ...

    @abc.abstractmethod
    def drop(self, follower: str, kind: str, key: str) -> None: ...

    def write(self, follower: str, changes: Mapping[tuple[str, str], Item | None]) -> None:
        """Apply (kind, key) -> item (None: drop) changes."""
        for (kind, key), item in changes.items():
            if item is None:
                self.drop(follower, kind, key)
            else:
                self.put(follower, item)

    @abc.abstractmethod
    def select(
        self, follower: str, kind: str, where: Mapping[str, Any], *, due_by: datetime | None
    ) -> list[Item]:
        """Items of `kind` whose data contains `where` (and due by `due_by`), due first."""

    def select_kinds(self, follower: str, kinds: Sequence[str]) -> list[Item]:
        """The items of each of `kinds`, earliest due first (one query where the store can)."""
        found = [i for kind in kinds for i in self.select(follower, kind, {}, due_by=None)]
        return sorted(found, key=_due_order)

    @abc.abstractmethod
    def claim_due(self, follower: str, kind: str, now: datetime, limit: int) -> list[Item]:
        """Items due by `now`, earliest first, locked; those another transaction holds skipped."""

    @abc.abstractmethod
    def next_due(self, follower: str, kind: str) -> datetime | None:
        """The earliest `due_at` of the items of `kind` (None when none is due ever)."""

    @abc.abstractmethod
    def quarantine(self, record: Quarantined) -> None: ...

    @abc.abstractmethod
    def quarantined(self, service: str) -> list[Quarantined]: ...


class FollowerStore(abc.ABC):
    """Where followers keep their positions and items: the service's own database."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        """A transaction, committed when the block ends without an exception."""

    def position(self, name: str) -> int:
        with self.transaction() as tx:
            return tx.read_position(name)

    def peek(self, name: str, recorder: Any) -> tuple[int, int]:
        """(the tracked position of `name`, the newest notification id), unlocked."""
        with self.transaction() as tx:
            return tx.read_position(name), tx.newest(recorder)

    def create_tables(self) -> None:  # noqa: B027 - nothing to create in memory
        """Create the tables if missing (also done on first use)."""


# -- PostgreSQL -----------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fulfil_follower_position (
    name text PRIMARY KEY,
    position bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS fulfil_followed_item (
    follower text NOT NULL,
    kind text NOT NULL,
    key text NOT NULL,
    due_at timestamptz,
    data jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (follower, kind, key)
);
CREATE INDEX IF NOT EXISTS fulfil_followed_item_due
    ON fulfil_followed_item (follower, kind, due_at) WHERE due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS fulfil_relay_quarantine (
    service text NOT NULL,
    notification_id bigint NOT NULL,
    originator_id text NOT NULL,
    originator_version bigint NOT NULL,
    topic text NOT NULL,
    error text NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, notification_id)
);
"""


def _item(row: Mapping[str, Any]) -> Item:
    return Item(row["kind"], row["key"], row["due_at"], row["data"])


class _PostgresTransaction(Transaction):
    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def lock_position(self, name: str) -> int:
        # The row exists but for a follower's first transaction: one statement then.
        for _ in range(2):
            self.cursor.execute(
                "SELECT position FROM fulfil_follower_position WHERE name = %s FOR UPDATE",
                (name,),
            )
            row = self.cursor.fetchone()
            if row is not None:
                return int(row["position"])
            self.cursor.execute(
                "INSERT INTO fulfil_follower_position (name, position) VALUES (%s, 0) "
                "ON CONFLICT (name) DO NOTHING",
                (name,),
            )
        raise RuntimeError(f"follower position {name!r} neither found nor created")

    def newest(self, recorder: Any) -> int:
        statement = getattr(recorder, "max_notification_id_statement", None)
        if statement is None:
            return super().newest(recorder)
        self.cursor.execute(statement)  # in this transaction: no second connection
        row = self.cursor.fetchone()
        return int(row["max"] or 0) if row else 0

    def read_position(self, name: str) -> int:
        self.cursor.execute(
            "SELECT position FROM fulfil_follower_position WHERE name = %s", (name,)
        )
        row = self.cursor.fetchone()
        return int(row["position"]) if row else 0

    def set_position(self, name: str, position: int) -> None:
        self.cursor.execute(
            "INSERT INTO fulfil_follower_position (name, position) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
            (name, position),
        )

    def get(self, follower: str, kind: str, key: str) -> Item | None:
        self.cursor.execute(
            "SELECT kind, key, due_at, data FROM fulfil_followed_item "
            "WHERE follower = %s AND kind = %s AND key = %s",
            (follower, kind, key),
        )
        row = self.cursor.fetchone()
        return _item(row) if row else None

    def get_many(self, follower: str, kind: str, keys: Sequence[str]) -> dict[str, Item]:
        self.cursor.execute(
            "SELECT kind, key, due_at, data FROM fulfil_followed_item "
            "WHERE follower = %s AND kind = %s AND key = ANY(%s)",
            (follower, kind, list(keys)),
        )
        return {row["key"]: _item(row) for row in self.cursor.fetchall()}

    def write(self, follower: str, changes: Mapping[tuple[str, str], Item | None]) -> None:
        # One statement for the puts and one for the drops, however many (a round of a
        # busy follower changes hundreds of items); the keys are distinct (a mapping).
        puts = [item for item in changes.values() if item is not None]
        drops = [key for key, item in changes.items() if item is None]
        if puts:
            self.cursor.execute(
                "INSERT INTO fulfil_followed_item (follower, kind, key, due_at, data) "
                "SELECT %s, kind, key, due_at, data FROM unnest(%s::text[], %s::text[], "
                "%s::timestamptz[], %s::jsonb[]) AS u(kind, key, due_at, data) "
                "ON CONFLICT (follower, kind, key) "
                "DO UPDATE SET due_at = EXCLUDED.due_at, data = EXCLUDED.data",
                (
                    follower,
                    [item.kind for item in puts],
                    [item.key for item in puts],
                    [item.due_at for item in puts],
                    [Jsonb(dict(item.data)) for item in puts],
                ),
            )
        if drops:
            self.cursor.execute(
                "DELETE FROM fulfil_followed_item WHERE follower = %s AND (kind, key) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                (follower, [kind for kind, _ in drops], [key for _, key in drops]),
            )

    def put(self, follower: str, item: Item) -> None:
        self.cursor.execute(
            "INSERT INTO fulfil_followed_item (follower, kind, key, due_at, data) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (follower, kind, key) "
            "DO UPDATE SET due_at = EXCLUDED.due_at, data = EXCLUDED.data",
            (follower, item.kind, item.key, item.due_at, Jsonb(dict(item.data))),
        )

    def drop(self, follower: str, kind: str, key: str) -> None:
        self.cursor.execute(
            "DELETE FROM fulfil_followed_item WHERE follower = %s AND kind = %s AND key = %s",
            (follower, kind, key),
        )

    def select(
        self, follower: str, kind: str, where: Mapping[str, Any], *, due_by: datetime | None
    ) -> list[Item]:
        sql = (
            "SELECT kind, key, due_at, data FROM fulfil_followed_item "
            "WHERE follower = %s AND kind = %s AND data @> %s"
        )
        params: list[Any] = [follower, kind, Jsonb(dict(where))]
        if due_by is not None:
            sql += " AND due_at <= %s"
            params.append(due_by)
        self.cursor.execute(sql + " ORDER BY due_at, key", params)
        return [_item(row) for row in self.cursor.fetchall()]

    def select_kinds(self, follower: str, kinds: Sequence[str]) -> list[Item]:
        self.cursor.execute(
            "SELECT kind, key, due_at, data FROM fulfil_followed_item "
            "WHERE follower = %s AND kind = ANY(%s) ORDER BY due_at, key",
            (follower, list(kinds)),
        )
        return [_item(row) for row in self.cursor.fetchall()]

    def claim_due(self, follower: str, kind: str, now: datetime, limit: int) -> list[Item]:
        self.cursor.execute(
            "SELECT kind, key, due_at, data FROM fulfil_followed_item "
            "WHERE follower = %s AND kind = %s AND due_at <= %s "
            "ORDER BY due_at, key LIMIT %s FOR UPDATE SKIP LOCKED",
            (follower, kind, now, limit),
        )
        return [_item(row) for row in self.cursor.fetchall()]

    def next_due(self, follower: str, kind: str) -> datetime | None:
        self.cursor.execute(
            "SELECT min(due_at) AS due FROM fulfil_followed_item "
            "WHERE follower = %s AND kind = %s AND due_at IS NOT NULL",
            (follower, kind),
        )
        row = self.cursor.fetchone()
        due: datetime | None = row["due"] if row else None
        return due

    def quarantine(self, record: Quarantined) -> None:
        self.cursor.execute(
            "INSERT INTO fulfil_relay_quarantine (service, notification_id, originator_id, "
            "originator_version, topic, error) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (service, notification_id) DO NOTHING",
            (
                record.service,
                record.notification_id,
                record.originator_id,
                record.originator_version,
                record.topic,
                record.error,
            ),
        )

    def quarantined(self, service: str) -> list[Quarantined]:
        self.cursor.execute(
            "SELECT service, notification_id, originator_id, originator_version, topic, error "
            "FROM fulfil_relay_quarantine WHERE service = %s ORDER BY notification_id",
            (service,),
        )
        return [Quarantined(**row) for row in self.cursor.fetchall()]


class PostgresFollowerStore(FollowerStore):
    """The tables in the service's PostgreSQL database, through the event store's pool."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self._created = False

    def create_tables(self) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            cursor.execute(_SCHEMA)
        self._created = True

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        if not self._created:
            self.create_tables()
        with self.datastore.transaction(commit=True) as cursor:
            yield _PostgresTransaction(cursor)

    def peek(self, name: str, recorder: Any) -> tuple[int, int]:
        statement = getattr(recorder, "max_notification_id_statement", None)
        if statement is None:
            return super().peek(name, recorder)
        if not self._created:
            self.create_tables()
        query = SQL(
            "SELECT (SELECT position FROM fulfil_follower_position WHERE name = %s) AS position, "
            "({}) AS newest"
        ).format(statement)
        with self.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(query, (name,), prepare=True)  # one autocommit statement
            row = cursor.fetchone()
        assert row is not None  # a SELECT without FROM returns one row
        return int(row["position"] or 0), int(row["newest"] or 0)


# -- in memory (popo and SQLite stores) ---------------------------------------------------


class _MemoryTransaction(Transaction):
    def __init__(self, store: MemoryFollowerStore) -> None:
        self.store = store
        self.positions: dict[str, int] = {}
        self.items: dict[ItemKey, Item | None] = {}
        self.quarantines: list[Quarantined] = []

    def lock_position(self, name: str) -> int:
        return self.positions.get(name, self.store.positions.get(name, 0))

    def read_position(self, name: str) -> int:
        return self.lock_position(name)

    def set_position(self, name: str, position: int) -> None:
        self.positions[name] = position

    def get(self, follower: str, kind: str, key: str) -> Item | None:
        k = (follower, kind, key)
        return self.items[k] if k in self.items else self.store.items.get(k)

    def get_many(self, follower: str, kind: str, keys: Sequence[str]) -> dict[str, Item]:
        found = {key: self.get(follower, kind, key) for key in keys}
        return {key: item for key, item in found.items() if item is not None}

    def put(self, follower: str, item: Item) -> None:
        self.items[(follower, item.kind, item.key)] = item

    def drop(self, follower: str, kind: str, key: str) -> None:
        self.items[(follower, kind, key)] = None

    def _current(self, follower: str, kind: str) -> list[Item]:
        merged = {**self.store.items, **self.items}
        return [
            item
            for (f, k, _), item in merged.items()
            if item is not None and f == follower and k == kind
        ]

    def select(
        self, follower: str, kind: str, where: Mapping[str, Any], *, due_by: datetime | None
    ) -> list[Item]:
        found = [
            item
            for item in self._current(follower, kind)
            if all(item.data.get(name) == value for name, value in where.items())
            and (due_by is None or (item.due_at is not None and item.due_at <= due_by))
        ]
        return sorted(found, key=_due_order)

    def claim_due(self, follower: str, kind: str, now: datetime, limit: int) -> list[Item]:
        return self.select(follower, kind, {}, due_by=now)[:limit]

    def next_due(self, follower: str, kind: str) -> datetime | None:
        dues = [i.due_at for i in self._current(follower, kind) if i.due_at is not None]
        return min(dues, default=None)

    def quarantine(self, record: Quarantined) -> None:
        self.quarantines.append(record)

    def quarantined(self, service: str) -> list[Quarantined]:
        return [q for q in self.store.quarantines + self.quarantines if q.service == service]


def _due_order(item: Item) -> tuple[bool, datetime | None, str]:
    return (item.due_at is None, item.due_at, item.key)


class MemoryFollowerStore(FollowerStore):
    """The same tables in memory: transactions run one at a time and apply on success."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {}
        self.items: dict[ItemKey, Item] = {}
        self.quarantines: list[Quarantined] = []
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._lock:
            tx = _MemoryTransaction(self)
            yield tx
            self.positions.update(tx.positions)
            for key, item in tx.items.items():
                if item is None:
                    self.items.pop(key, None)
                else:
                    self.items[key] = item
            self.quarantines.extend(tx.quarantines)


_MEMORY_STORES: weakref.WeakKeyDictionary[Application[Any], MemoryFollowerStore] = (
    weakref.WeakKeyDictionary()
)
_STORES_LOCK = threading.Lock()


def follower_store(app: Application[Any]) -> FollowerStore:
    """The store of `app`'s followers: its PostgreSQL database, or memory of this process."""
    with _STORES_LOCK:
        store = getattr(app, "_fulfil_follower_store", None)
        if isinstance(store, FollowerStore):
            return store
        datastore = getattr(app.recorder, "datastore", None)
        if isinstance(datastore, PostgresDatastore):
            store = PostgresFollowerStore(datastore)
        else:
            store = _MEMORY_STORES.setdefault(app, MemoryFollowerStore())
        app._fulfil_follower_store = store  # type: ignore[attr-defined]
        return store


# -- the follower ---------------------------------------------------------------------------


class Writes:
    """What a projector (or a claim) does to its follower's items inside one transaction.

    Changes are buffered and written together at the end (`flush`); `get` sees them.
    `prefetch` loads many items with one query before a batch reads them one by one.
    """

    def __init__(self, tx: Transaction, follower: str) -> None:
        self.tx = tx
        self.follower = follower
        self._pending: dict[tuple[str, str], Item | None] = {}
        self._loaded: dict[tuple[str, str], Item | None] = {}

    def prefetch(self, kind: str, keys: Iterable[str]) -> None:
        wanted = [k for k in dict.fromkeys(keys) if (kind, k) not in self._loaded]
        if wanted:
            found = self.tx.get_many(self.follower, kind, wanted)
            for key in wanted:
                self._loaded[(kind, key)] = found.get(key)

    def get(self, kind: str, key: str) -> Item | None:
        if (kind, key) in self._pending:
            return self._pending[(kind, key)]
        if (kind, key) not in self._loaded:
            self._loaded[(kind, key)] = self.tx.get(self.follower, kind, key)
        return self._loaded[(kind, key)]

    def put(self, kind: str, key: str, /, *, due_at: datetime | None = None, **data: Any) -> None:
        self._pending[(kind, key)] = Item(kind, key, due_at, data)

    def put_item(self, item: Item) -> None:
        self._pending[(item.kind, item.key)] = item

    def drop(self, kind: str, key: str) -> None:
        self._pending[(kind, key)] = None

    def flush(self) -> None:
        if self._pending:
            self.tx.write(self.follower, self._pending)
            self._loaded.update(self._pending)
            self._pending = {}


Projector = Callable[[Sequence[Any], Writes], None]
"""Turns a batch of domain events, in log order, into changes of the follower's items (the
events of the follower's `undecoded` topics as `Notified`)."""


@dataclass(frozen=True)
class Notified:
    """An event handed to a projector undecoded (its topic is one of the follower's
    `undecoded`): what the notification log says of it, without its state."""

    originator_id: Any
    originator_version: int
    topic: str


@dataclass(frozen=True)
class Followed:
    """What `LogFollower.follow` read: the position reached, and the items then."""

    position: int
    items: list[Item] | None
    """None: unchanged since the read at the `known` position that `follow` was given."""


UNWRITTEN_GAP = 1000
"""Notifications of other topics a follower reads past before it writes its position."""


class LogFollower:
    """Follows an application's notification log from its persisted position into items."""

    def __init__(
        self,
        app: Application[Any],
        name: str,
        project: Projector,
        *,
        topics: Sequence[str] = (),
        undecoded: Collection[str] = (),
        batch: int = 500,
    ) -> None:
        self.app = app
        self.name = name
        self.project = project
        self.topics = tuple(topics)
        self.undecoded = frozenset(undecoded)
        """Topics of events the projector needs only the identity of: handed over as
        `Notified`, their state never decoded."""
        self.batch = batch
        self.store = follower_store(app)
        self._clear = (-1, -1)
        """(position, newest): from that position the log holds none of our events up to
        that newest notification (found by a read that did not move the position)."""

    @property
    def position(self) -> int:
        """The notification id up to which the log has been followed."""
        return self.store.position(self.name)

    def catch_up(self) -> int:
        """Follow the log to its current end (blocking); returns how many events were read."""
        read = 0
        while True:
            count, more = self._next_batch()
            read += count
            if not more:
                return read

    def follow(self, *kinds: str, known: int | None = None) -> Followed:
        """Catch up, then the items of `kinds`, earliest due first, read in the transaction
        that reached the position (one transaction when there was at most one batch to read).

        With `known`, the position of an earlier `follow`: when the log has nothing new and
        the position is still `known`, one unlocked statement and `items` None (unchanged).
        Only for a follower whose items its projector alone writes (no `claim_due`): the
        items change only in the transactions that move the position."""
        if known is not None:
            position, newest = self.store.peek(self.name, self.app.recorder)
            clear_from, clear_to = self._clear
            if position == known and newest <= (clear_to if clear_from == position else position):
                return Followed(position, None)
        while True:
            with self.store.transaction() as tx:
                position, _, more = self._advance(tx)
                if not more:
                    return Followed(position, tx.select_kinds(self.name, kinds))

    def _next_batch(self) -> tuple[int, bool]:
        with self.store.transaction() as tx:
            _, count, more = self._advance(tx)
            return count, more

    def _advance(self, tx: Transaction) -> tuple[int, int, bool]:
        """Project the next batch in `tx`: (the position reached, events read, whether more
        may follow)."""
        recorder = self.app.recorder
        seen = tx.read_position(self.name)
        newest = tx.newest(recorder)
        if newest <= seen:
            return seen, 0, False
        if (
            self.topics
            and newest - seen < UNWRITTEN_GAP
            and not recorder.select_notifications(seen + 1, 1, stop=newest, topics=self.topics)
        ):
            # None of ours since: a read-only transaction. The position moves with our next
            # event (or once the log ran UNWRITTEN_GAP past it): every commit of the service
            # wakes every follower, most of them for others' events.
            self._clear = (seen, newest)
            return seen, 0, False
        position = tx.lock_position(self.name)
        if newest <= position:  # another replica followed further meanwhile
            return position, 0, False
        notifications = recorder.select_notifications(
            position + 1, self.batch, stop=newest, topics=self.topics
        )
        events = [self._event(n) for n in notifications]
        if events:
            writes = Writes(tx, self.name)
            self.project(events, writes)
            writes.flush()
        full = len(notifications) == self.batch
        # A short batch read everything of our topics up to `newest`.
        reached = notifications[-1].id if full else newest
        tx.set_position(self.name, reached)
        return reached, len(events), full

    def _event(self, notification: Any) -> Any:
        if notification.topic in self.undecoded:
            return Notified(
                notification.originator_id, notification.originator_version, notification.topic
            )
        return self.app.mapper.to_domain_event(notification)

    def items(self, kind: str, /, **where: Any) -> list[Item]:
        """The items of `kind` whose data has the values `where`, earliest due first."""
        with self.store.transaction() as tx:
            return tx.select(self.name, kind, where, due_by=None)

    def due(self, kind: str, now: datetime) -> list[Item]:
        """The items of `kind` due by `now`, earliest first (without claiming them)."""
        with self.store.transaction() as tx:
            return tx.select(self.name, kind, {}, due_by=now)

    @contextlib.contextmanager
    def claim_due(self, kind: str, now: datetime, limit: int = 500) -> Iterator[Claim]:
        """Lock up to `limit` items due by `now` for this block; other replicas skip them.

        Act on each, then `done` it (dropped) or `put` it back changed; everything the block
        did to the items commits when it ends. An exception releases them unchanged.
        Afterwards `next_due` is the earliest due time left (read in the same transaction),
        for the loop to sleep until then."""
        with self.store.transaction() as tx:
            writes = Writes(tx, self.name)
            claim = Claim(tx.claim_due(self.name, kind, now, limit), writes)
            yield claim
            writes.flush()
            claim.next_due = tx.next_due(self.name, kind)


@dataclass
class Claim:
    """Due items locked for one replica to act on."""

    items: list[Item]
    writes: Writes
    next_due: datetime | None = None
    """After the block: the earliest due time of the kind's items (theirs included)."""

    def done(self, item: Item) -> None:
        self.writes.drop(item.kind, item.key)

    def put(self, item: Item) -> None:
        self.writes.put_item(item)


def seconds_until(due: datetime | None, now: datetime, fallback_s: float) -> float:
    """How long a loop may sleep before `due` (at most `fallback_s`; 0 when it passed)."""
    if due is None:
        return fallback_s
    # A few milliseconds late rather than early: woken early, the item is not due yet.
    return min(fallback_s, max(0.0, (due - now).total_seconds() + 0.005))
