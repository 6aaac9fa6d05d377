"""Projection logic without servers: what each event changes, merge rules, ordering, KPI math."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from customer_service.projections.changes import (
    RowMerge,
    changes_for,
    kpi_changes,
    register_key,
    summary,
    timeline_changes,
)
from customer_service.projections.ordering import causal_order
from customer_service.projections.queries import KpiAggregates, compose_kpis, status_of
from customer_service.projections.store import joined
from customer_service.projections.tables import (
    PROJECTIONS,
    TABLES,
    Merge,
    Table,
    merge_statement,
    projection_names,
)
from tests.support.public_events import EventFactory

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_summary_has_no_personal_data_and_counts_lists() -> None:
    factory = EventFactory()
    _, events = factory.order(uuid.uuid4(), quantity=3, price=250, until="placed")
    compact = summary(events[0].event)
    assert compact["total_minor"] == 750
    assert compact["lines"] == 1
    assert compact["lines_units"] == 3
    for private in ("shipping_address", "payment_token", "customer_id", "order_id"):
        assert private not in compact


def test_timeline_holds_order_events_only() -> None:
    factory = EventFactory()
    order_id, events = factory.order(uuid.uuid4())
    rows = [c.row for e in events for c in timeline_changes(e.envelope())]
    assert {r["order_id"] for r in rows} == {order_id}
    assert len(rows) == len(events)
    assert timeline_changes(factory.stock_low("MUG", 1).envelope()) == []


def test_order_facts_of_a_lifecycle() -> None:
    factory = EventFactory()
    customer = uuid.uuid4()
    order_id, events = factory.order(customer, price=1200)
    facts = [c for e in events for c in kpi_changes(e.envelope())]
    merged: dict[str, Any] = {}
    for change in facts:
        assert change.table == "order_facts"
        assert change.row["order_id"] == order_id
        merged.update(change.row)
    assert merged["customer_id"] == customer
    assert merged["total_minor"] == merged["paid_minor"] == 1200
    assert merged["delivered_at"] - merged["placed_at"] > timedelta(hours=2)
    assert status_of(merged) == "delivered"


def test_register_keys_order_by_log_position_then_time() -> None:
    factory = EventFactory()
    first = factory.stock_low("MUG", 2)
    later = factory.stock_received("MUG", 10, 12)
    assert register_key(later.envelope()) > register_key(first.envelope())
    assert register_key(first.envelope()).startswith("0" * 19 + "1|")


def test_every_merge_is_commutative_and_idempotent() -> None:
    """Any order, any duplicates: the same rows (what makes a rebuild equal the live tables)."""
    factory = EventFactory()
    customer = uuid.uuid4()
    order_id, events = factory.order(customer)
    events += factory.return_and_refund(order_id, customer, 500)
    events += [factory.stock_low("MUG", 1), factory.stock_received("MUG", 20, 21)]
    events += [factory.stock_low("MUG", 3)]
    events += factory.case(customer, order_id, breach=True)
    changes = changes_for([e.envelope() for e in events], PROJECTIONS)
    reference = apply_in_memory(changes)
    rng = random.Random(7)
    for _ in range(20):
        shuffled = changes + rng.sample(changes, 5)
        rng.shuffle(shuffled)
        assert apply_in_memory(shuffled) == reference


def apply_in_memory(changes: list[RowMerge]) -> dict[tuple[str, tuple[Any, ...]], dict[str, Any]]:
    """The SQL merge rules of `tables.py`, in Python."""
    rows: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    for change in changes:
        table = TABLES[change.table]
        key = (table.name, tuple(change.row[k] for k in table.key))
        stored = rows.get(key)
        if stored is None:
            rows[key] = dict(change.row)
            continue
        old = dict(stored)
        for name, value in change.row.items():
            stored[name] = merge(table, name, old, value, change.row)
    return rows


def merge(table: Table, name: str, old: dict[str, Any], value: Any, new: dict[str, Any]) -> Any:
    column = table.column(name)
    current = old.get(name)
    if name in table.key or column.merge is Merge.KEEP:
        return current
    if column.register is not None:
        stored_key = old.get(column.register)
        return value if stored_key is None or new[column.register] > stored_key else current
    present = [v for v in (current, value) if v is not None]
    if not present:
        return None
    return min(present) if column.merge is Merge.MIN else max(present)


def test_joining_a_batch_rows_per_key_changes_no_merged_row() -> None:
    factory = EventFactory()
    customer = uuid.uuid4()
    order_id, events = factory.order(customer)
    events += factory.return_and_refund(order_id, customer, 500)
    events += [factory.stock_low("MUG", 1), factory.stock_received("MUG", 20, 21)]
    events += factory.case(customer, order_id, breach=True)
    changes = changes_for([e.envelope() for e in events], PROJECTIONS)
    rows = []
    for name, table in TABLES.items():
        mine = [c.row for c in changes if c.table == name]
        rows += [RowMerge(name, row) for row in joined(table, mine)]
    assert apply_in_memory(rows) == apply_in_memory(changes)
    assert len([r for r in rows if r.table == "order_facts"]) == 1  # an order's events: one row
    assert len([r for r in rows if r.table == "sku_stock"]) == 2  # registers: left to the SQL
    assert len([r for r in rows if r.table == "timeline"]) == len(events) - 2


def test_rows_that_disagree_on_a_column_are_not_joined() -> None:
    table = TABLES["order_facts"]
    first = {"order_id": 1, "customer_id": None, "placed_at": T0}
    later = {"order_id": 1, "placed_at": T0 + timedelta(seconds=1), "paid_at": T0}
    other = {"order_id": 1, "customer_id": 7, "shipped_at": T0}
    assert joined(table, [first, later, other]) == [
        {"order_id": 1, "customer_id": 7, "placed_at": T0, "shipped_at": T0},
        {"order_id": 1, "placed_at": T0 + timedelta(seconds=1), "paid_at": T0},
    ]


def test_merge_sql_folds_a_batch_per_key_by_the_merge_rules() -> None:
    text = merge_statement("rm", "sku_stock").as_string()
    assert (
        'FROM json_to_recordset(%s::json) AS u ("sku" text, "low_key" text, "low_available" bigint'
    ) in text
    assert 'GROUP BY u."sku" ORDER BY u."sku" COLLATE "C"' in text
    assert 'max(u."low_key" COLLATE "C")' in text
    assert (
        '(array_agg(u."low_available" ORDER BY u."low_key" COLLATE "C" DESC NULLS LAST))[1]' in text
    )
    assert 'ON CONFLICT ("sku") DO UPDATE' in text
    assert 'GREATEST("sku_stock"."low_key", EXCLUDED."low_key")' in text
    assert (
        'CASE WHEN EXCLUDED."low_key" IS NOT NULL AND ("sku_stock"."low_key" IS NULL OR '
        'EXCLUDED."low_key" > "sku_stock"."low_key")'
    ) in text
    facts = merge_statement("rm", "order_facts").as_string()
    assert 'min(u."customer_id"::text COLLATE "C")::uuid' in facts  # no min(uuid) in PG 15
    assert 'LEAST("order_facts"."placed_at", EXCLUDED."placed_at")' in facts
    timeline = merge_statement("rm", "timeline").as_string()
    assert 'SELECT DISTINCT ON (u."ce_id" COLLATE "C")' in timeline
    assert timeline.endswith("DO NOTHING")


def test_projection_names() -> None:
    assert projection_names("all") == ("timeline", "customers", "kpis")
    assert projection_names("kpis") == ("kpis",)
    with pytest.raises(ValueError, match="unknown projection"):
        projection_names("nope")


def row(ce_id: str, at_s: float, cause: str = "http:x", sequence: int = 0) -> dict[str, Any]:
    return {
        "ce_id": ce_id,
        "ce_time": T0 + timedelta(seconds=at_s),
        "causation_id": cause,
        "sequence": sequence,
    }


def test_causal_order_is_by_time_with_causes_first() -> None:
    rows = [
        row("paid", 3, cause="captured"),
        # payments' clock is behind: captured looks older than the stock lock that caused it
        row("captured", 1.5, cause="locked"),
        row("locked", 2, cause="placed"),
        row("placed", 1),
        row("flagged", 2.5),
    ]
    for permutation in itertools.permutations(rows):
        ordered = [r["ce_id"] for r in causal_order(list(permutation))]
        assert ordered == ["placed", "locked", "captured", "flagged", "paid"]


def test_causal_order_breaks_equal_times_by_sequence_then_id() -> None:
    rows = [row("b", 1, sequence=2), row("c", 1, sequence=1), row("a", 1, sequence=2)]
    assert [r["ce_id"] for r in causal_order(rows)] == ["c", "a", "b"]


def test_status_precedence() -> None:
    assert status_of({}) is None
    assert status_of({"placed_at": T0, "paid_at": T0}) == "paid"
    assert status_of({"placed_at": T0, "paid_at": T0, "cancelled_at": T0}) == "cancelled"
    assert status_of({"delivered_at": T0, "partially_returned_at": T0}) == "partially_returned"
    assert status_of({"delivered_at": T0, "returned_at": T0}) == "returned"


def aggregates(**overrides: Any) -> KpiAggregates:
    values: dict[str, Any] = {
        "orders": 4,
        "by_status": {"delivered": 3, "placed": 1},
        "gmv": {"EUR": 3000, "USD": 1001},
        "paid_orders": {"EUR": 2, "USD": 3},
        "delivered": 3,
        "returned_after_delivery": 1,
        "customers": 3,
        "repeat_customers": 1,
        "lead_time_orders": 3,
        "lead_time_p50_s": 7200.0,
        "lead_time_p95_s": 9000.0,
        "refunds": {"EUR": 500},
        "sla_breaches": {"first_response": 2, "resolution": 1},
        "low_stock": [{"sku": "MUG", "available": 1, "threshold": 5}],
    }
    values.update(overrides)
    return KpiAggregates(**values)


def test_kpi_math() -> None:
    kpis = compose_kpis(aggregates())
    assert kpis["gmv_minor"] == {"EUR": 3000, "USD": 1001}
    assert kpis["average_order_value_minor"] == {"EUR": 1500.0, "USD": 333.67}
    assert kpis["return_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert kpis["repurchase_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert kpis["sla_breaches"] == {"total": 3, "first_response": 2, "resolution": 1}
    assert kpis["fulfilment_lead_time_s"] == {"orders": 3, "p50": 7200.0, "p95": 9000.0}


def test_kpi_rates_are_undefined_without_a_denominator() -> None:
    kpis = compose_kpis(
        aggregates(delivered=0, returned_after_delivery=0, customers=0, repeat_customers=0)
    )
    assert kpis["return_rate"] is None
    assert kpis["repurchase_rate"] is None
