"""Load many aggregates with one query: a batch of messages needs them all at once."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg.sql import SQL, Identifier


def load_aggregates(app: Application[Any], ids: Collection[UUID]) -> dict[UUID, Any]:
    """The current state of each aggregate in `ids` that exists (no snapshots are used)."""
    if not ids:
        return {}
    recorder = app.recorder
    stored: list[StoredEvent]
    if isinstance(recorder, PostgresAggregateRecorder):
        statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(
            schema=Identifier(recorder.datastore.schema),
            table=Identifier(recorder.events_table_name),
        )
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(ids)], prepare=True)
            stored = [
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]
    else:  # the embedded fallbacks: one query per aggregate is fine there
        stored = [event for aggregate_id in ids for event in recorder.select_events(aggregate_id)]
    aggregates: dict[UUID, Any] = {}
    for stored_event in stored:
        domain_event: Any = app.mapper.to_domain_event(stored_event)
        raw_id = stored_event.originator_id
        aggregate_id = raw_id if isinstance(raw_id, UUID) else UUID(raw_id)
        aggregates[aggregate_id] = domain_event.mutate(aggregates.get(aggregate_id))
    return aggregates
