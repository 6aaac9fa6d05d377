"""Reads of the read models: the order timeline, customer 360 and the KPIs (computed on read)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor, sql
from psycopg.rows import DictRow

from customer_service.projections.ordering import causal_order

STATUS_PRECEDENCE = (
    ("returned", "returned_at"),
    ("rejected", "rejected_at"),
    ("cancelled", "cancelled_at"),
    ("partially_returned", "partially_returned_at"),
    ("delivered", "delivered_at"),
    ("shipped", "shipped_at"),
    ("paid", "paid_at"),
    ("stock_locked", "stock_locked_at"),
    ("placed", "placed_at"),
)
"""An order's status is the first whose time is known (terminal states first)."""


def status_of(facts: Mapping[str, Any]) -> str | None:
    """The status an order's facts imply (None: no order event seen yet)."""
    return next((s for s, column in STATUS_PRECEDENCE if facts.get(column) is not None), None)


def _status_case() -> sql.Composed:
    whens = sql.SQL(" ").join(
        sql.SQL("WHEN {} IS NOT NULL THEN {}").format(sql.Identifier(col), sql.Literal(status))
        for status, col in STATUS_PRECEDENCE
    )
    return sql.SQL("CASE {} END").format(whens)


def ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


@dataclass(frozen=True)
class KpiAggregates:
    """What SQL aggregates; `compose_kpis` derives the reported values."""

    orders: int
    by_status: dict[str, int]
    gmv: dict[str, int]
    paid_orders: dict[str, int]
    delivered: int
    returned_after_delivery: int
    customers: int
    repeat_customers: int
    lead_time_orders: int
    lead_time_p50_s: float | None
    lead_time_p95_s: float | None
    refunds: dict[str, int]
    sla_breaches: dict[str, int]
    low_stock: list[dict[str, Any]]


def compose_kpis(a: KpiAggregates) -> dict[str, Any]:
    """The KPI document: rates and averages from the aggregates (None when undefined)."""
    return {
        "orders": a.orders,
        "orders_by_status": dict(sorted(a.by_status.items())),
        "gmv_minor": dict(sorted(a.gmv.items())),
        "paid_orders": dict(sorted(a.paid_orders.items())),
        "average_order_value_minor": {
            currency: round(total / a.paid_orders[currency], 2)
            for currency, total in sorted(a.gmv.items())
            if a.paid_orders.get(currency)
        },
        "return_rate": ratio(a.returned_after_delivery, a.delivered),
        "repurchase_rate": ratio(a.repeat_customers, a.customers),
        "fulfilment_lead_time_s": {
            "orders": a.lead_time_orders,
            "p50": a.lead_time_p50_s,
            "p95": a.lead_time_p95_s,
        },
        "refunds_total_minor": dict(sorted(a.refunds.items())),
        "sla_breaches": {
            "total": sum(a.sla_breaches.values()),
            **dict(sorted(a.sla_breaches.items())),
        },
        "low_stock_skus": a.low_stock,
    }


_CUSTOMER = """
SELECT %(c)s::uuid AS customer_id,
  (SELECT count(*) FROM {s}.customer_orders o
     WHERE o.customer_id = %(c)s AND o.placed_at IS NOT NULL) AS orders_count,
  (SELECT coalesce(jsonb_object_agg(currency, amount), '{{}}') FROM (
     SELECT currency, sum(coalesce(captured_minor, 0) - coalesce(refunded_minor, 0)) AS amount
     FROM {s}.customer_orders o
     WHERE o.customer_id = %(c)s AND currency IS NOT NULL
       AND (captured_minor IS NOT NULL OR refunded_minor IS NOT NULL)
     GROUP BY currency) spend) AS lifetime_spend,
  (SELECT coalesce(jsonb_object_agg(currency, amount), '{{}}') FROM (
     SELECT currency, sum(refunded_minor) AS amount FROM {s}.customer_orders o
     WHERE o.customer_id = %(c)s AND currency IS NOT NULL AND refunded_minor > 0
     GROUP BY currency) refunds) AS refunds_total,
  (SELECT count(*) FROM {s}.customer_returns r WHERE r.customer_id = %(c)s) AS returns_count,
  (SELECT count(*) FROM {s}.customer_cases x WHERE x.customer_id = %(c)s
     AND x.opened_at IS NOT NULL AND x.resolved_at IS NULL) AS open_cases,
  (SELECT min(placed_at) FROM {s}.customer_orders o WHERE o.customer_id = %(c)s)
     AS first_order_at,
  (SELECT max(placed_at) FROM {s}.customer_orders o WHERE o.customer_id = %(c)s)
     AS last_order_at
WHERE EXISTS (SELECT 1 FROM {s}.customer_orders WHERE customer_id = %(c)s)
   OR EXISTS (SELECT 1 FROM {s}.customer_returns WHERE customer_id = %(c)s)
   OR EXISTS (SELECT 1 FROM {s}.customer_cases WHERE customer_id = %(c)s)
"""
"""Customer 360 of customer `c`: no row when no order, return or case names the customer."""


class ReadModels:
    """Queries over the live read-model tables of one schema."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self.schema = datastore.schema

    def _t(self, table: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(table))

    def _rows(
        self, query: sql.Composed, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        with self.datastore.transaction(commit=False) as curs:
            return _fetch(curs, query, params)

    def has_applied(self, ce_id: str) -> bool:
        query = sql.SQL("SELECT 1 AS found FROM {} WHERE ce_id = %s").format(self._t("applied"))
        return bool(self._rows(query, (ce_id,)))

    def timeline(self, order_id: UUID) -> list[dict[str, Any]]:
        query = sql.SQL(
            "SELECT ce_id, ce_type, source, ce_time, sequence, correlation_id, causation_id, "
            "summary FROM {} WHERE order_id = %s"
        ).format(self._t("timeline"))
        return [dict(row) for row in causal_order(self._rows(query, (order_id,)))]

    def customer(self, customer_id: UUID) -> dict[str, Any] | None:
        """Customer 360 computed at read time from the per-order, return and case rows (one
        snapshot), so any number of consumers may write those rows concurrently."""
        query = sql.SQL(_CUSTOMER).format(s=sql.Identifier(self.schema))
        rows = self._rows(query, {"c": customer_id})
        return rows[0] if rows else None

    def kpis(self) -> dict[str, Any]:
        return compose_kpis(self.kpi_aggregates())

    def kpi_aggregates(self) -> KpiAggregates:
        """All aggregates from one snapshot (REPEATABLE READ), so they agree with each other."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return self._kpi_aggregates(curs)

    def _kpi_aggregates(self, curs: Cursor[DictRow]) -> KpiAggregates:
        def rows(query: sql.Composed) -> list[dict[str, Any]]:
            return _fetch(curs, query)

        facts = self._t("order_facts")
        (totals,) = rows(
            sql.SQL(
                "SELECT count(*) FILTER (WHERE placed_at IS NOT NULL) AS orders, "
                "count(*) FILTER (WHERE delivered_at IS NOT NULL) AS delivered, "
                "count(*) FILTER (WHERE delivered_at IS NOT NULL "
                "  AND return_received_at IS NOT NULL) AS returned, "
                "count(*) FILTER (WHERE placed_at IS NOT NULL AND delivered_at IS NOT NULL) "
                "  AS lead_orders, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
                "  delivered_at - placed_at)) AS p50, "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM "
                "  delivered_at - placed_at)) AS p95 "
                "FROM {}"
            ).format(facts)
        )
        (customers,) = rows(
            sql.SQL(
                "SELECT count(*) AS customers, count(*) FILTER (WHERE n >= 2) AS repeat "
                "FROM (SELECT customer_id, count(*) AS n FROM {} "
                "WHERE placed_at IS NOT NULL AND customer_id IS NOT NULL GROUP BY customer_id) c"
            ).format(facts)
        )
        by_status = rows(
            sql.SQL(
                "SELECT status, count(*) AS n FROM (SELECT {} AS status FROM {}) s "
                "WHERE status IS NOT NULL GROUP BY status"
            ).format(_status_case(), facts)
        )
        paid = rows(
            sql.SQL(
                "SELECT paid_currency AS currency, sum(paid_minor) AS total, count(*) AS n "
                "FROM {} WHERE paid_at IS NOT NULL AND paid_currency IS NOT NULL "
                "GROUP BY paid_currency"
            ).format(facts)
        )
        refunds = rows(
            sql.SQL(
                "SELECT refund_currency AS currency, sum(refunded_minor) AS total FROM {} "
                "WHERE refunded_minor > 0 GROUP BY refund_currency"
            ).format(facts)
        )
        breaches = rows(
            sql.SQL("SELECT sla, count(*) AS n FROM {} GROUP BY sla").format(
                self._t("case_sla_breaches")
            )
        )
        low = rows(
            sql.SQL(
                "SELECT sku, low_available AS available, low_threshold AS threshold, "
                "low_at AS since FROM {} WHERE low_key IS NOT NULL AND NOT coalesce("
                "level_key > low_key AND level_on_hand > low_threshold, false) ORDER BY sku"
            ).format(self._t("sku_stock"))
        )

        def seconds(value: Any) -> float | None:
            return None if value is None else round(float(value), 3)

        return KpiAggregates(
            orders=totals["orders"],
            by_status={r["status"]: r["n"] for r in by_status},
            gmv={r["currency"]: int(r["total"]) for r in paid},
            paid_orders={r["currency"]: r["n"] for r in paid},
            delivered=totals["delivered"],
            returned_after_delivery=totals["returned"],
            customers=customers["customers"],
            repeat_customers=customers["repeat"],
            lead_time_orders=totals["lead_orders"],
            lead_time_p50_s=seconds(totals["p50"]),
            lead_time_p95_s=seconds(totals["p95"]),
            refunds={r["currency"]: int(r["total"]) for r in refunds},
            sla_breaches={r["sla"]: r["n"] for r in breaches},
            low_stock=low,
        )


def _fetch(
    curs: Cursor[DictRow], query: sql.Composed, params: Sequence[Any] | Mapping[str, Any] = ()
) -> list[dict[str, Any]]:
    curs.execute(query, params)
    return [dict(row) for row in curs.fetchall()]
