"""PostgreSQL side of the projections: apply a batch of events, with tracking, atomically."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg import Cursor, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from customer_service.projections import SCHEMA
from customer_service.projections.changes import RowMerge, changes_for
from customer_service.projections.metrics import DUPLICATE_EVENTS
from customer_service.projections.tables import (
    APPLIED,
    PROJECTIONS,
    TABLES,
    Merge,
    Table,
    create_statements,
    merge_statement,
    upsert_statement,
)
from fulfilment_kit.messaging.cloudevents import Envelope
from fulfilment_kit.messaging.inbox import InboundMessage
from fulfilment_kit.persistence import database_name
from fulfilment_kit.persistence.fencing import FencedPostgresTrackingMixin
from fulfilment_kit.settings import PostgresSettings

ALL = tuple(PROJECTIONS)


def datastore(postgres: PostgresSettings | None = None, schema: str = SCHEMA) -> PostgresDatastore:
    """A connection pool to customer-service's database whose tracking table is in `schema`."""
    pg = postgres or PostgresSettings()
    return PostgresDatastore(
        dbname=pg.dbname or database_name("customer-service"),
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=pg.password,
        pool_size=pg.pool_size,
        max_overflow=pg.max_overflow,
        connect_timeout=5,
        pre_ping=True,
        schema=schema,
    )


def rebuild_datastore(connections: int) -> PostgresDatastore:
    """A pool of `connections` for a rebuild (its lock and one transaction at a time, or a
    worker's one): opening the services' pool size (5) cost each process 5 connections."""
    pg = PostgresSettings()
    return datastore(pg.model_copy(update={"pool_size": connections, "max_overflow": 1}))


def tables_of(projections: Iterable[str]) -> tuple[Any, ...]:
    return tuple(t for name in projections for t in PROJECTIONS[name])


@dataclass(frozen=True)
class BatchResult:
    fresh: int
    """Events applied for the first time (not seen before by ce_id)."""
    duplicates: int


def apply_batch(
    curs: Cursor[DictRow], schema: str, envelopes: Sequence[Envelope], projections: Sequence[str]
) -> BatchResult:
    """Apply events to `projections` in `schema`, skipping ce_ids applied before (in the caller's
    transaction). Every change merges commutatively, so the order of events does not matter."""
    unique = list({e.id: e for e in envelopes}.values())
    if not unique:
        return BatchResult(0, 0)
    curs.execute(_applied_statement(schema), ([e.id for e in unique],))
    fresh_ids = {row["ce_id"] for row in curs.fetchall()}
    fresh = [e for e in unique if e.id in fresh_ids]
    changes = changes_for(fresh, projections)
    _upsert(curs, schema, changes)
    return BatchResult(len(fresh), len(envelopes) - len(fresh))


@cache
def _applied_statement(schema: str) -> sql.Composed:
    """Record the batch's ce_ids (one binary array), returning those not recorded before."""
    return sql.SQL(
        "INSERT INTO {}.{} (ce_id) SELECT unnest(%b::text[]) ON CONFLICT DO NOTHING RETURNING ce_id"
    ).format(sql.Identifier(schema), sql.Identifier(APPLIED.name))


def storable(value: Any) -> Any:
    """`value` with NUL replaced by U+FFFD in every string: PostgreSQL's text and jsonb refuse
    NUL, and events accepted before requests refused control characters still carry it."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def _upsert(curs: Cursor[DictRow], schema: str, changes: Sequence[RowMerge]) -> None:
    """Every change of a batch in one statement per table (tables in one order): the rows'
    values go as one array per column, PostgreSQL folds them per key and merges."""
    by_table: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for change in changes:
        by_table[change.table].append(change.row)
    for name in TABLES:
        if name not in by_table:
            continue
        table = TABLES[name]
        rows = joined(table, by_table[name])
        if len(rows) <= ROW_BY_ROW:
            _upsert_rows(curs, schema, table, rows)
        else:
            curs.execute(merge_statement(schema, name), (rows_json(rows),))


ROW_BY_ROW = 4
"""Up to this many rows of a table, one plain upsert each: the one-statement fold (recordset,
GROUP BY, an aggregate per column) costs PostgreSQL more than a few rows' upserts (a live
batch of one partition is often one or two events)."""


def _upsert_rows(
    curs: Cursor[DictRow], schema: str, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    grouped: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        stored = {
            k: Jsonb(storable(v)) if isinstance(v, dict) else storable(v) for k, v in row.items()
        }
        grouped[tuple(row)].append(stored)
    for columns, values in grouped.items():
        # Rows in key order: two consumers upserting the same rows lock them in one order.
        values.sort(key=lambda row: tuple(str(row.get(k)) for k in table.key))
        curs.executemany(upsert_statement(schema, table.name, columns), values)


def joined(table: Table, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """`rows` with the rows of one key joined wherever no column gets two different values
    (an order's events each bring a few columns of its row): exactly what PostgreSQL's fold
    makes of them, with fewer values to send; rows that disagree are left for it to merge."""
    if all(c.merge is Merge.KEEP for c in table.columns) or any(c.register for c in table.columns):
        # One row per event's own id: nothing to join. Registers: a value goes with its key,
        # so a None that a row brings is a value there, not an absence; PostgreSQL folds them.
        return list(rows)
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    result: list[Mapping[str, Any]] = []
    for row in rows:
        key = tuple(row[k] for k in table.key)
        candidates = by_key.setdefault(key, [])
        for candidate in candidates:
            if all(v is None or candidate.get(c) in (None, v) for c, v in row.items()):
                candidate.update((c, v) for c, v in row.items() if v is not None)
                break
        else:
            fresh = dict(row)
            candidates.append(fresh)
            result.append(fresh)
    return result


_NUL = b"\\u0000"
"""How orjson writes NUL inside a string (a literal backslash-u0000 matches too: then the
rows are only dumped again, unchanged)."""


def rows_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as one JSON array for `merge_statement` (orjson: UUIDs, datetimes with their
    offset, nested summaries natively), NUL replaced as `storable` does."""
    dumped = orjson.dumps(rows)
    if _NUL in dumped:
        dumped = orjson.dumps([storable(dict(row)) for row in rows])
    return dumped.decode()


class ReadModelRecorder(FencedPostgresTrackingMixin, PostgresTrackingRecorder):
    """eventsourcing's tracking recorder plus the read-model tables of `schema`.

    `insert_events` writes the projections' rows and the tracking record in one transaction;
    a tracking position not ahead of the recorded one raises IntegrityError (nothing applied).
    """

    def __init__(self, datastore: PostgresDatastore, projections: Sequence[str] = ALL) -> None:
        super().__init__(datastore, tracking_table_name="tracking")
        self.projections = tuple(projections)
        self.schema = datastore.schema
        ddl = create_statements(self.schema, (APPLIED, *tables_of(self.projections)))
        self.sql_create_statements = [ddl[0], *self.sql_create_statements, *ddl[1:]]

    def insert_events(self, envelopes: Sequence[Envelope], tracking: Tracking) -> BatchResult:
        with self.datastore.transaction(commit=True) as curs:
            result = apply_batch(curs, self.schema, envelopes, self.projections)
            self._insert_tracking(curs, tracking)
        return result


class ProjectionsApplier:
    """The `MessageProcessor` an Inbox uses to run the live projections."""

    applies_across_partitions = True  # the recorder's fenced tracking records a TrackingSet

    def __init__(self, recorder: ReadModelRecorder) -> None:
        self.recorder = recorder

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        result = self.recorder.insert_events([m.envelope for m in messages], tracking)
        if result.duplicates:
            DUPLICATE_EVENTS.inc(result.duplicates)

    def next_offset(self, tracking_name: str) -> int | None:
        position: int | None = self.recorder.max_tracking_id(tracking_name)
        return position

    def close(self) -> None:
        self.recorder.datastore.close()
