"""The read-model tables, their merge rules, and the SQL generated from them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cache

from psycopg import sql


class Merge(Enum):
    """How a value an event brings merges into a stored row (commutative and idempotent)."""

    MIN = "min"
    """LEAST of stored and new (NULLs ignored): first times, stable attributes."""
    MAX = "max"
    """GREATEST of stored and new: cumulative amounts stated by their producer."""
    KEEP = "keep"
    """Immutable once inserted (rows keyed by the event's own id)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    merge: Merge = Merge.MIN
    register: str | None = None
    """Last-writer-wins: take the new value when the new `register` key is greater."""


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    indexes: tuple[tuple[str, ...], ...] = ()

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _c(name: str, type_: str, merge: Merge = Merge.MIN, register: str | None = None) -> Column:
    return Column(name, type_, merge, register)


TS = "timestamptz"
# `COLLATE "C"`: register keys compare byte-wise, never by locale.
KEY = 'text COLLATE "C"'

TIMELINE = Table(
    "timeline",
    ("ce_id",),
    (
        _c("ce_id", "text NOT NULL", Merge.KEEP),
        _c("order_id", "uuid NOT NULL", Merge.KEEP),
        _c("ce_type", "text NOT NULL", Merge.KEEP),
        _c("source", "text NOT NULL", Merge.KEEP),
        _c("ce_time", f"{TS} NOT NULL", Merge.KEEP),
        _c("sequence", "bigint", Merge.KEEP),
        _c("correlation_id", "text", Merge.KEEP),
        _c("causation_id", "text", Merge.KEEP),
        _c("summary", "jsonb NOT NULL", Merge.KEEP),
    ),
    indexes=(("order_id", "ce_time"),),
)

CUSTOMER_ORDERS = Table(
    "customer_orders",
    ("order_id",),
    (
        _c("order_id", "uuid NOT NULL"),
        _c("customer_id", "uuid"),
        _c("placed_at", TS),
        _c("currency", "text"),
        _c("captured_minor", "bigint", Merge.MAX),
        _c("refunded_minor", "bigint", Merge.MAX),
    ),
    indexes=(("customer_id",),),
)
CUSTOMER_RETURNS = Table(
    "customer_returns",
    ("return_id",),
    (_c("return_id", "uuid NOT NULL"), _c("customer_id", "uuid"), _c("order_id", "uuid")),
    indexes=(("customer_id",),),
)
CUSTOMER_CASES = Table(
    "customer_cases",
    ("case_id",),
    (
        _c("case_id", "uuid NOT NULL"),
        _c("customer_id", "uuid"),
        _c("opened_at", TS),
        _c("resolved_at", TS),
    ),
    indexes=(("customer_id",),),
)
ORDER_FACTS = Table(
    "order_facts",
    ("order_id",),
    (
        _c("order_id", "uuid NOT NULL"),
        _c("customer_id", "uuid"),
        _c("currency", "text"),
        _c("total_minor", "bigint"),
        _c("placed_at", TS),
        _c("stock_locked_at", TS),
        _c("paid_at", TS),
        _c("paid_minor", "bigint", Merge.MAX),
        _c("paid_currency", "text"),
        _c("shipped_at", TS),
        _c("delivered_at", TS),
        _c("cancelled_at", TS),
        _c("rejected_at", TS),
        _c("partially_returned_at", TS),
        _c("returned_at", TS),
        _c("return_received_at", TS),
        _c("refunded_minor", "bigint", Merge.MAX),
        _c("refund_currency", "text"),
    ),
)
SKU_STOCK = Table(
    "sku_stock",
    ("sku",),
    (
        _c("sku", "text NOT NULL"),
        _c("low_key", KEY, Merge.MAX),
        _c("low_available", "bigint", register="low_key"),
        _c("low_threshold", "bigint", register="low_key"),
        _c("low_at", TS, register="low_key"),
        _c("level_key", KEY, Merge.MAX),
        _c("level_on_hand", "bigint", register="level_key"),
        _c("level_at", TS, register="level_key"),
    ),
)
CASE_SLA_BREACHES = Table(
    "case_sla_breaches",
    ("case_id", "sla"),
    (_c("case_id", "uuid NOT NULL"), _c("sla", "text NOT NULL"), _c("breached_at", TS)),
)

APPLIED = Table("applied", ("ce_id",), (_c("ce_id", "text NOT NULL", Merge.KEEP),))
"""Every ce_id applied (not part of a projection): wait_for, and ce_id-level dedupe."""

PROJECTIONS: dict[str, tuple[Table, ...]] = {
    "timeline": (TIMELINE,),
    "customers": (CUSTOMER_ORDERS, CUSTOMER_RETURNS, CUSTOMER_CASES),
    "kpis": (ORDER_FACTS, SKU_STOCK, CASE_SLA_BREACHES),
}
"""Each projection and the tables it owns; a rebuild replaces one projection's tables."""

TABLES: dict[str, Table] = {t.name: t for ts in PROJECTIONS.values() for t in ts}


def projection_names(name: str) -> tuple[str, ...]:
    """`all` or one projection name, as a tuple of names; ValueError for an unknown one."""
    if name == "all":
        return tuple(PROJECTIONS)
    if name not in PROJECTIONS:
        raise ValueError(f"unknown projection {name!r}: choose from {', '.join(PROJECTIONS)}, all")
    return (name,)


def create_statements(schema: str, tables: tuple[Table, ...]) -> list[sql.Composed]:
    """CREATE SCHEMA / TABLE / INDEX IF NOT EXISTS for `tables` in `schema`."""
    statements = [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))]
    for table in tables:
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in table.columns
        )
        statements.append(
            sql.SQL("CREATE TABLE IF NOT EXISTS {}.{} ({}, PRIMARY KEY ({}))").format(
                sql.Identifier(schema),
                sql.Identifier(table.name),
                columns,
                sql.SQL(", ").join(map(sql.Identifier, table.key)),
            )
        )
        for index in table.indexes:
            statements.append(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} ({})").format(
                    sql.Identifier(f"{table.name}_{'_'.join(index)}_idx"),
                    sql.Identifier(schema),
                    sql.Identifier(table.name),
                    sql.SQL(", ").join(map(sql.Identifier, index)),
                )
            )
    return statements


def _merged(table: Table, column: Column) -> sql.Composable:
    stored = sql.SQL("{}.{}").format(sql.Identifier(table.name), sql.Identifier(column.name))
    new = sql.SQL("EXCLUDED.{}").format(sql.Identifier(column.name))
    if column.register is not None:
        key = sql.Identifier(column.register)
        return sql.SQL(
            "CASE WHEN {t}.{k} IS NULL OR EXCLUDED.{k} > {t}.{k} THEN {new} ELSE {stored} END"
        ).format(t=sql.Identifier(table.name), k=key, new=new, stored=stored)
    function = "LEAST" if column.merge is Merge.MIN else "GREATEST"
    return sql.SQL("{}({}, {})").format(sql.SQL(function), stored, new)


@cache
def upsert_statement(schema: str, table_name: str, columns: tuple[str, ...]) -> sql.Composed:
    """INSERT of `columns` that merges into an existing row by the table's merge rules."""
    table = TABLES.get(table_name) or APPLIED
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    values = sql.SQL(", ").join(sql.Placeholder(c) for c in columns)
    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table.name))
    updates = [
        sql.SQL("{} = {}").format(sql.Identifier(c), _merged(table, table.column(c)))
        for c in columns
        if c not in table.key and table.column(c).merge is not Merge.KEEP
    ]
    conflict = sql.SQL(", ").join(map(sql.Identifier, table.key))
    action = (
        sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(updates))
        if updates
        else sql.SQL("DO NOTHING")
    )
    return sql.SQL("INSERT INTO {} AS {} ({}) VALUES ({}) ON CONFLICT ({}) {}").format(
        target, sql.Identifier(table.name), names, values, conflict, action
    )
