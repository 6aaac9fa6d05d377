"""What each public event changes in each projection: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from uuid import UUID

from fulfilment_kit.contracts import (
    CaseOpened,
    CaseResolved,
    CaseSlaBreached,
    OrderCancelled,
    OrderDelivered,
    OrderPaid,
    OrderPartiallyReturned,
    OrderPlaced,
    OrderRejected,
    OrderReturned,
    OrderShipped,
    OrderStockLocked,
    PaymentCaptured,
    PaymentRefunded,
    ReturnReceived,
    StockAdjusted,
    StockLow,
    StockReceived,
)
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.messaging.cloudevents import Envelope


@dataclass(frozen=True)
class RowMerge:
    """Values merged into the row of `table` identified by the key columns in `row`."""

    table: str
    row: Mapping[str, Any]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.row)


# Never in a summary: personal data, and what the timeline row holds already.
_HIDDEN = frozenset(
    {"order_id", "customer_id", "shipping_address", "payment_token", "sealed_payment_token"}
)
_EXCLUDED: set[str] = set(_HIDDEN)  # pydantic's type for `exclude`; never changed


def _field(event: IntegrationEvent, name: str) -> Any:
    """The event's field `name`, None when it has none (a pydantic model keeps its fields in
    `__dict__`; `getattr` with a default goes through a raised AttributeError per miss)."""
    return vars(event).get(name)


def summary(event: IntegrationEvent) -> dict[str, Any]:
    """A compact JSON summary of an event: no personal data, lists reduced to counts."""
    compact: dict[str, Any] = {}
    # What model_dump(mode="json", exclude=...) returns, without its wrapper's per-call work.
    dumped = event.__pydantic_serializer__.to_python(event, mode="json", exclude=_EXCLUDED)
    for name, value in dumped.items():
        if value is None:
            continue
        if isinstance(value, list):
            compact[name] = len(value)
            units = sum(int(v.get("quantity", v.get("requested", 0))) for v in value)
            if units:
                compact[f"{name}_units"] = units
        else:
            compact[name] = value
    return compact


def register_key(envelope: Envelope) -> str:
    """Orders one producer's events: its log position, then time, then ce_id (byte-wise)."""
    when = envelope.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{envelope.sequence or 0:020d}|{when}|{envelope.id}"


def timeline_changes(envelope: Envelope) -> list[RowMerge]:
    order_id = _field(envelope.event, "order_id")
    if order_id is None:
        return []
    row = {
        "ce_id": envelope.id,
        "order_id": order_id,
        "ce_type": envelope.type,
        "source": envelope.source,
        "ce_time": envelope.time,
        "sequence": envelope.sequence,
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
        "summary": summary(envelope.event),
    }
    return [RowMerge("timeline", row)]


_CASE_EVENTS = (CaseOpened, CaseResolved, CaseSlaBreached)
_STOCK_LEVELS = (StockReceived, StockAdjusted)
"""Tuples made once (an `A | B` union is a new object at every call)."""


def customer_changes(envelope: Envelope) -> list[RowMerge]:
    e = envelope.event
    order_id: UUID | None = _field(e, "order_id")
    customer_id: UUID | None = _field(e, "customer_id")
    changes: list[RowMerge] = []
    if isinstance(e, _CASE_EVENTS):
        case: dict[str, Any] = {"case_id": e.case_id, "customer_id": customer_id}
        if isinstance(e, CaseOpened):
            case["opened_at"] = e.opened_at
        elif isinstance(e, CaseResolved):
            case["resolved_at"] = e.resolved_at
        return [RowMerge("customer_cases", case)]
    if order_id is None:
        return []
    order: dict[str, Any] = {"order_id": order_id}
    if customer_id is not None:
        order["customer_id"] = customer_id
    if isinstance(e, OrderPlaced):
        order.update(placed_at=e.placed_at, currency=e.currency)
    elif isinstance(e, PaymentCaptured):
        order.update(captured_minor=e.amount_minor, currency=e.currency)
    elif isinstance(e, PaymentRefunded):
        order.update(refunded_minor=e.total_refunded_minor, currency=e.currency)
    return_id: UUID | None = _field(e, "return_id")
    if return_id is not None:
        row = {"return_id": return_id, "customer_id": customer_id, "order_id": order_id}
        changes.append(RowMerge("customer_returns", row))
    if len(order) > 1:
        changes.append(RowMerge("customer_orders", order))
    return changes


_ORDER_TIMES: dict[type[IntegrationEvent], tuple[str, str]] = {
    OrderPlaced: ("placed_at", "placed_at"),
    OrderStockLocked: ("stock_locked_at", "locked_at"),
    OrderPaid: ("paid_at", "paid_at"),
    OrderShipped: ("shipped_at", "shipped_at"),
    OrderDelivered: ("delivered_at", "delivered_at"),
    OrderCancelled: ("cancelled_at", "cancelled_at"),
    OrderRejected: ("rejected_at", "rejected_at"),
    OrderPartiallyReturned: ("partially_returned_at", "returned_at"),
    OrderReturned: ("returned_at", "returned_at"),
    ReturnReceived: ("return_received_at", "received_at"),
}
"""Event type -> (order_facts column, the event's own time field)."""


def kpi_changes(envelope: Envelope) -> list[RowMerge]:
    e = envelope.event
    if isinstance(e, StockLow):
        low = {
            "sku": e.sku,
            "low_key": register_key(envelope),
            "low_available": e.available,
            "low_threshold": e.threshold,
            "low_at": e.detected_at,
        }
        return [RowMerge("sku_stock", low)]
    if isinstance(e, _STOCK_LEVELS):
        at = e.received_at if isinstance(e, StockReceived) else e.adjusted_at
        level = {"sku": e.sku, "level_key": register_key(envelope), "level_on_hand": e.on_hand}
        return [RowMerge("sku_stock", {**level, "level_at": at})]
    if isinstance(e, CaseSlaBreached):
        row = {"case_id": e.case_id, "sla": e.sla, "breached_at": e.breached_at}
        return [RowMerge("case_sla_breaches", row)]
    order_id: UUID | None = _field(e, "order_id")
    if order_id is None:
        return []
    fact: dict[str, Any] = {"order_id": order_id}
    times = _ORDER_TIMES.get(type(e))
    if times is not None:
        fact["customer_id"] = _field(e, "customer_id")
        fact[times[0]] = getattr(e, times[1])
    if isinstance(e, OrderPlaced):
        fact.update(currency=e.currency, total_minor=e.total_minor)
    elif isinstance(e, OrderPaid):
        fact.update(paid_minor=e.amount_minor, paid_currency=e.currency)
    elif isinstance(e, PaymentRefunded):
        fact.update(refunded_minor=e.total_refunded_minor, refund_currency=e.currency)
    return [RowMerge("order_facts", fact)] if len(fact) > 1 else []


PROJECTORS = {"timeline": timeline_changes, "customers": customer_changes, "kpis": kpi_changes}


def changes_for(envelopes: Iterable[Envelope], projections: Iterable[str]) -> list[RowMerge]:
    """Every change the events make to the chosen projections."""
    projectors = [PROJECTORS[name] for name in projections]
    return [c for envelope in envelopes for project in projectors for c in project(envelope)]
