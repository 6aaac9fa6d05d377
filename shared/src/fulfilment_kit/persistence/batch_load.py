"""Load many aggregates with one query: a batch of messages needs them all at once."""

from __future__ import annotations

from collections.abc import Collection
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


def load_aggregates(app: Application[Any], ids: Collection[UUID]) -> dict[UUID, Any]:
    """The current state of each aggregate in `ids` that exists, from its newest snapshot
    (when the application takes snapshots) and the events after it: one query for all."""
    if not ids:
        return {}
    recorder = app.recorder
    snapshots = app.snapshots
    rows: list[tuple[StoredEvent, bool]]
    if isinstance(recorder, PostgresAggregateRecorder):
        statement = _statement(recorder, snapshots.recorder if snapshots else None)
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, {"ids": list(ids)}, prepare=True)
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
            after = None
            if snapshots is not None:
                newest = snapshots.recorder.select_events(aggregate_id, desc=True, limit=1)
                rows.extend((s, True) for s in newest)
                after = newest[0].originator_version if newest else None
            events = recorder.select_events(aggregate_id, gt=after)
            rows.extend((e, False) for e in events)
    aggregates: dict[UUID, Any] = {}
    for stored_event, is_snapshot in rows:
        mapper = snapshots.mapper if is_snapshot and snapshots is not None else app.mapper
        domain_event: Any = mapper.to_domain_event(stored_event)
        raw_id = stored_event.originator_id
        aggregate_id = raw_id if isinstance(raw_id, UUID) else UUID(raw_id)
        aggregates[aggregate_id] = domain_event.mutate(aggregates.get(aggregate_id))
    return aggregates


def _statement(events: PostgresAggregateRecorder, snapshots: Any) -> Composed:
    schema = Identifier(events.datastore.schema)
    if isinstance(snapshots, PostgresAggregateRecorder):
        return SQL(_FROM_SNAPSHOTS).format(
            schema=schema,
            snapshot_schema=Identifier(snapshots.datastore.schema),
            snapshots=Identifier(snapshots.events_table_name),
            events=Identifier(events.events_table_name),
        )
    return SQL(_ALL_EVENTS).format(schema=schema, events=Identifier(events.events_table_name))
