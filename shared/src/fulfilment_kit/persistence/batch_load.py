"""Load many aggregates with one query: a batch of messages needs them all at once.

An `AggregateCache` keeps aggregates loaded (and saved) before, so a load reads only the
events recorded after the cached version: a StockItem that gains an event per order is not
replayed on every batch. The cache is a hint, never the truth: every load still asks the
database for newer events (another replica, or a command in another thread, may have written
them), and the optimistic concurrency check of the save guards the writes. An aggregate is
*taken* out of the cache by the load that uses it (no two threads ever share one object) and
*put* back only at a committed version, with no pending events
(docs/adr/0023-aggregate-cache-is-a-hint.md).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg.sql import SQL, Composed, Identifier

_FROM_SNAPSHOTS = """
WITH snap AS (
  SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, state
  FROM {snapshot_schema}.{snapshots} WHERE originator_id = ANY(%(ids)s)
  ORDER BY originator_id, originator_version DESC)
SELECT originator_id, originator_version, topic, state, true AS snapshot FROM snap
UNION ALL
SELECT e.originator_id, e.originator_version, e.topic, e.state, false FROM {schema}.{events} e
  LEFT JOIN snap s ON s.originator_id = e.originator_id
  WHERE e.originator_id = ANY(%(ids)s) AND e.originator_version > coalesce(s.originator_version, 0)
ORDER BY originator_id, originator_version
"""
"""Each aggregate's newest snapshot and the events after it (all events when it has none)."""

_ALL_EVENTS = """
SELECT originator_id, originator_version, topic, state, false AS snapshot
FROM {schema}.{events} WHERE originator_id = ANY(%(ids)s)
ORDER BY originator_id, originator_version
"""

_AFTER_FROM_SNAPSHOTS = """
WITH want AS (SELECT * FROM unnest(%(ids)s::{id_type}[], %(after)s::bigint[]) AS w(id, after)),
snap AS (
  SELECT DISTINCT ON (s.originator_id) s.originator_id, s.originator_version, s.topic, s.state
  FROM {snapshot_schema}.{snapshots} s JOIN want w ON s.originator_id = w.id
  WHERE s.originator_version > w.after
  ORDER BY s.originator_id, s.originator_version DESC)
SELECT originator_id, originator_version, topic, state, true AS snapshot FROM snap
UNION ALL
SELECT e.originator_id, e.originator_version, e.topic, e.state, false
  FROM want w JOIN {schema}.{events} e ON e.originator_id = w.id
  LEFT JOIN snap s ON s.originator_id = w.id
  WHERE e.originator_version > greatest(w.after, coalesce(s.originator_version, 0))
ORDER BY originator_id, originator_version
"""
"""Like _FROM_SNAPSHOTS, each aggregate only after the version given for it (the cached one;
0 when none): a snapshot newer than that replaces the cached state."""

_AFTER_ALL_EVENTS = """
WITH want AS (SELECT * FROM unnest(%(ids)s::{id_type}[], %(after)s::bigint[]) AS w(id, after))
SELECT e.originator_id, e.originator_version, e.topic, e.state, false AS snapshot
FROM want w JOIN {schema}.{events} e ON e.originator_id = w.id
WHERE e.originator_version > w.after
ORDER BY originator_id, originator_version
"""


class AggregateCache:
    """A bounded LRU of aggregates at committed versions, shared by one process's threads.

    `take` removes what it returns (the caller owns those objects: it may change them in
    place), `put` keeps aggregates again once their changes are committed (an aggregate with
    pending events is refused, and an older version never replaces a newer one), `evict`
    forgets. What is not in the cache is simply loaded from the database."""

    def __init__(self, maxsize: int = 2000) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[UUID, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, aggregate_id: object) -> bool:
        return aggregate_id in self._items

    def version(self, aggregate_id: UUID) -> int | None:
        """The cached version of `aggregate_id` (None: not cached)."""
        with self._lock:
            aggregate = self._items.get(aggregate_id)
        return None if aggregate is None else int(aggregate.version)

    def take(self, ids: Iterable[UUID]) -> dict[UUID, Any]:
        """Remove and return the cached aggregates among `ids`."""
        taken: dict[UUID, Any] = {}
        with self._lock:
            for aggregate_id in ids:
                aggregate = self._items.pop(aggregate_id, None)
                if aggregate is not None:
                    taken[aggregate_id] = aggregate
            self.hits += len(taken)
        return taken

    def put(self, aggregates: Iterable[Any]) -> None:
        """Keep `aggregates` (each at a version its events are committed to)."""
        if self.maxsize <= 0:
            return
        with self._lock:
            for aggregate in aggregates:
                if aggregate is None or getattr(aggregate, "pending_events", None):
                    continue  # changed and not saved: its state is not the stored one
                aggregate_id = aggregate.id
                present = self._items.get(aggregate_id)
                if present is not None and present.version > aggregate.version:
                    continue  # another thread committed a newer one meanwhile
                self._items[aggregate_id] = aggregate
                self._items.move_to_end(aggregate_id)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def evict(self, ids: Iterable[UUID]) -> None:
        with self._lock:
            for aggregate_id in ids:
                self._items.pop(aggregate_id, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def load_aggregates(
    app: Application[Any], ids: Collection[UUID], cache: AggregateCache | None = None
) -> dict[UUID, Any]:
    """The current state of each aggregate in `ids` that exists, from its newest snapshot
    (when the application takes snapshots) and the events after it: one query for all.

    With `cache`, the aggregates cached are taken out of it and brought up to date with the
    events recorded after their cached version (same one query); the caller owns every
    aggregate returned and puts them back (`cache.put`) once what it changed is committed."""
    if not ids:
        return {}
    ids = list(dict.fromkeys(ids))
    aggregates: dict[UUID, Any] = {} if cache is None else cache.take(ids)
    if cache is not None:
        cache.misses += len(ids) - len(aggregates)
    recorder = app.recorder
    snapshots = app.snapshots
    rows: list[tuple[StoredEvent, bool]]
    if isinstance(recorder, PostgresAggregateRecorder):
        params: dict[str, Any] = {"ids": ids}
        if aggregates:
            params["after"] = [_version(aggregates.get(i)) for i in ids]
        statement = _statement(
            recorder, snapshots.recorder if snapshots else None, after=bool(aggregates)
        )
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            rows = [
                (
                    StoredEvent(
                        originator_id=row["originator_id"],
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=bytes(row["state"]),
                    ),
                    row["snapshot"],
                )
                for row in curs.fetchall()
            ]
    else:  # the embedded fallbacks: one or two queries per aggregate are fine there
        rows = []
        for aggregate_id in ids:
            after = _version(aggregates.get(aggregate_id)) or None
            if snapshots is not None:
                newest = snapshots.recorder.select_events(aggregate_id, desc=True, limit=1)
                newer = [s for s in newest if s.originator_version > (after or 0)]
                rows.extend((s, True) for s in newer)
                after = newer[0].originator_version if newer else after
            events = recorder.select_events(aggregate_id, gt=after)
            rows.extend((e, False) for e in events)
    for stored_event, is_snapshot in rows:
        mapper = snapshots.mapper if is_snapshot and snapshots is not None else app.mapper
        domain_event: Any = mapper.to_domain_event(stored_event)
        raw_id = stored_event.originator_id
        aggregate_id = raw_id if isinstance(raw_id, UUID) else UUID(raw_id)
        # A snapshot starts afresh (it replaces a cached state older than itself).
        base = None if is_snapshot else aggregates.get(aggregate_id)
        aggregates[aggregate_id] = domain_event.mutate(base)
    return aggregates


def _version(aggregate: Any) -> int:
    return 0 if aggregate is None else int(aggregate.version)


def _statement(
    events: PostgresAggregateRecorder, snapshots: Any, *, after: bool = False
) -> Composed:
    schema = Identifier(events.datastore.schema)
    id_type = SQL(events.datastore.originator_id_type)  # "uuid" or "text", checked by it
    if isinstance(snapshots, PostgresAggregateRecorder):
        return SQL(_AFTER_FROM_SNAPSHOTS if after else _FROM_SNAPSHOTS).format(
            schema=schema,
            snapshot_schema=Identifier(snapshots.datastore.schema),
            snapshots=Identifier(snapshots.events_table_name),
            events=Identifier(events.events_table_name),
            id_type=id_type,
        )
    return SQL(_AFTER_ALL_EVENTS if after else _ALL_EVENTS).format(
        schema=schema, events=Identifier(events.events_table_name), id_type=id_type
    )
