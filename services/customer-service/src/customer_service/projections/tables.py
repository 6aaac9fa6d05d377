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

    @property
    def base_type(self) -> str:
        """The SQL type without constraints or collation (`uuid`, `text`, ...)."""
        return self.type.split()[0]

    @property
    def collation(self) -> str | None:
        """The column's explicit collation (`C` for register keys), None for the default."""
        words = self.type.split()
        return words[words.index("COLLATE") + 1].strip('"') if "COLLATE" in words else None


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
    """The stored value of `column` merged with the one a batch brings (`EXCLUDED`)."""
    stored = sql.SQL("{}.{}").format(sql.Identifier(table.name), sql.Identifier(column.name))
    new = sql.SQL("EXCLUDED.{}").format(sql.Identifier(column.name))
    if column.register is not None:
        key = sql.Identifier(column.register)
        # A batch without a value for this register (its key NULL) leaves the stored one.
        return sql.SQL(
            "CASE WHEN EXCLUDED.{k} IS NOT NULL AND ({t}.{k} IS NULL OR EXCLUDED.{k} > {t}.{k}) "
            "THEN {new} ELSE {stored} END"
        ).format(t=sql.Identifier(table.name), k=key, new=new, stored=stored)
    function = "LEAST" if column.merge is Merge.MIN else "GREATEST"
    return sql.SQL("{}({}, {})").format(sql.SQL(function), stored, new)


def _collated(expression: sql.Composable, column: Column) -> sql.Composable:
    if column.collation is None:
        return expression
    return sql.SQL("{} COLLATE {}").format(expression, sql.Identifier(column.collation))


def _ordered(column: Column) -> sql.Composable:
    """`u.<column>` as it sorts: byte-wise for text (as Python sorts str), natively otherwise."""
    value = sql.SQL("u.{}").format(sql.Identifier(column.name))
    if column.base_type == "text":
        return sql.SQL("{} COLLATE {}").format(value, sql.Identifier("C"))
    return value


def _folded(table: Table, column: Column) -> sql.Composable:
    """The aggregate that folds one key's values of a batch by the column's merge rule: the
    same comparisons as `_merged` (LEAST/GREATEST ignore NULLs, as min/max do)."""
    value = sql.SQL("u.{}").format(sql.Identifier(column.name))
    if column.register is not None:
        key = table.column(column.register)
        latest = _collated(sql.SQL("u.{}").format(sql.Identifier(key.name)), key)
        return sql.SQL("(array_agg({} ORDER BY {} DESC NULLS LAST))[1]").format(value, latest)
    function = sql.SQL("min" if column.merge is Merge.MIN else "max")
    if column.base_type == "uuid":  # no min(uuid) before PostgreSQL 16: its text sorts alike
        as_text = sql.SQL("{}::text COLLATE {}").format(value, sql.Identifier("C"))
        return sql.SQL("{}({})::uuid").format(function, as_text)
    return sql.SQL("{}({})").format(function, _collated(value, column))


@cache
def upsert_statement(schema: str, table_name: str, columns: tuple[str, ...]) -> sql.Composed:
    """INSERT of one row's `columns` that merges into an existing row by the merge rules."""
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


@cache
def merge_statement(schema: str, table_name: str) -> sql.Composed:
    """One INSERT of a whole batch's changes to `table_name`: one JSON array of the rows as
    the only parameter (`store.rows_json`; a key a row lacks is NULL), typed by
    `json_to_recordset`, folded per key by the merge rules, inserted in key order (two
    consumers lock shared rows in one order), merged into existing rows."""
    table = TABLES.get(table_name) or APPLIED
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    typed = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.base_type)) for c in table.columns
    )
    rows = sql.SQL("json_to_recordset({}::json) AS u ({})").format(sql.Placeholder(), typed)
    keys = [table.column(k) for k in table.key]
    key_names = sql.SQL(", ").join(sql.SQL("u.{}").format(sql.Identifier(k.name)) for k in keys)
    order = sql.SQL(", ").join(_ordered(k) for k in keys)
    mergeable = [c for c in table.columns if c.name not in table.key and c.merge is not Merge.KEEP]
    action: sql.Composable
    if mergeable:
        selected = sql.SQL(", ").join(
            sql.SQL("u.{}").format(sql.Identifier(c.name))
            if c.name in table.key
            else _folded(table, c)
            for c in table.columns
        )
        query = sql.SQL("SELECT {} FROM {} GROUP BY {} ORDER BY {}").format(
            selected, rows, key_names, order
        )
        updates = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c.name), _merged(table, c)) for c in mergeable
        )
        action = sql.SQL("DO UPDATE SET {}").format(updates)
    else:  # immutable rows (keyed by the event's own id): the first one of a key stays
        query = sql.SQL("SELECT DISTINCT ON ({k}) {c} FROM {r} ORDER BY {o}").format(
            k=order, c=names, r=rows, o=order
        )
        action = sql.SQL("DO NOTHING")
    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table.name))
    conflict = sql.SQL(", ").join(map(sql.Identifier, table.key))
    return sql.SQL("INSERT INTO {} AS {} ({}) {} ON CONFLICT ({}) {}").format(
        target, sql.Identifier(table.name), names, query, conflict, action
    )
