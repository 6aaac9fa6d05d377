"""Business metrics of the orders service, counted from the events it publishes (no ids)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Histogram

from fulfilment_kit.contracts import orders as public
from fulfilment_kit.observability.business import EventMeter, expected_currencies
from fulfilment_kit.observability.metrics import REGISTRY
from orders.deadlines import DEFAULT_DEADLINES_S, ORDERS_FLAGGED, ORDERS_OVERDUE, STAGE_SECONDS

OUTCOMES = (
    "placed",
    "stock_locked",
    "paid",
    "shipped",
    "delivered",
    "rejected",
    "cancelled",
    "returned",
    "partially_returned",
)
ORDERS = Counter(
    "fulfil_orders_total",
    "Orders reaching a step of their lifecycle (placed ... delivered) or an outcome",
    ["outcome"],
    registry=REGISTRY,
)
PAID_VALUE_MINOR = Histogram(
    "fulfil_paid_order_value_minor",
    "Amounts of paid orders in minor units of the currency: _sum is the GMV, _count the paid "
    "orders, so _sum / _count is the average order value",
    ["currency"],
    buckets=(500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000),
    registry=REGISTRY,
)
PLACED_VALUE_MINOR = Counter(
    "fulfil_order_placed_value_minor_total",
    "Amounts of placed orders (paid or not), in minor units of the currency",
    ["currency"],
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "fulfil_orders_rejected_total",
    "Orders rejected, by reason code",
    ["reason"],
    registry=REGISTRY,
)


def _count(outcome: str) -> None:
    ORDERS.labels(outcome).inc()


def order_meter() -> EventMeter:
    """The orders service's business metrics, each series present from the start (at 0)."""
    for outcome in OUTCOMES:
        ORDERS.labels(outcome)
    for reason in get_args(public.OrderRejected.model_fields["reason_code"].annotation):
        REJECTIONS.labels(reason)
    for currency in expected_currencies():
        PAID_VALUE_MINOR.labels(currency)
        PLACED_VALUE_MINOR.labels(currency)
    for stage in DEFAULT_DEADLINES_S:
        ORDERS_FLAGGED.labels(str(stage))
        ORDERS_OVERDUE.labels(str(stage))
        STAGE_SECONDS.labels(str(stage))
    meter = EventMeter()

    def placed(event: public.OrderPlaced) -> None:
        _count("placed")
        PLACED_VALUE_MINOR.labels(event.currency).inc(event.total_minor)

    def paid(event: public.OrderPaid) -> None:
        _count("paid")
        PAID_VALUE_MINOR.labels(event.currency).observe(event.amount_minor)

    def rejected(event: public.OrderRejected) -> None:
        _count("rejected")
        REJECTIONS.labels(event.reason_code).inc()

    meter.on(public.OrderPlaced, placed)
    meter.on(public.OrderPaid, paid)
    meter.on(public.OrderRejected, rejected)
    meter.on(public.OrderStockLocked, lambda _: _count("stock_locked"))
    meter.on(public.OrderShipped, lambda _: _count("shipped"))
    meter.on(public.OrderDelivered, lambda _: _count("delivered"))
    meter.on(public.OrderCancelled, lambda _: _count("cancelled"))
    meter.on(public.OrderReturned, lambda _: _count("returned"))
    meter.on(public.OrderPartiallyReturned, lambda _: _count("partially_returned"))
    return meter
