"""Business metrics of the inventory service (no SKU or order ids in labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from fulfilment_kit.contracts import inventory as public
from fulfilment_kit.observability.business import EventMeter
from fulfilment_kit.observability.metrics import REGISTRY
from inventory.application import InventoryApplication

RESERVATIONS = Counter(
    "fulfil_stock_reservations_total",
    "Stock reservations of orders by outcome: locked, rejected (short), released, committed",
    ["outcome"],
    registry=REGISTRY,
)
LOW_STOCK_EVENTS = Counter(
    "fulfil_stock_low_events_total",
    "Times a SKU's available stock fell to or below its low-stock threshold",
    registry=REGISTRY,
)
LOW_STOCK_SKUS = Gauge(
    "fulfil_stock_low_skus",
    "SKUs whose available stock is at or below their low-stock threshold now",
    registry=REGISTRY,
)


def inventory_meter() -> EventMeter:
    for outcome in ("locked", "rejected", "released", "committed"):
        RESERVATIONS.labels(outcome)
    meter = EventMeter()
    meter.on(public.StockLocked, lambda _: RESERVATIONS.labels("locked").inc())
    meter.on(public.StockRejected, lambda _: RESERVATIONS.labels("rejected").inc())
    meter.on(public.StockReleased, lambda _: RESERVATIONS.labels("released").inc())
    meter.on(public.StockCommitted, lambda _: RESERVATIONS.labels("committed").inc())
    meter.on(public.StockLow, lambda _: LOW_STOCK_EVENTS.inc())
    return meter


def sample_low_stock(app: InventoryApplication) -> None:
    """Count the SKUs below threshold now (a gauge: no SKU label, the listing names them)."""
    LOW_STOCK_SKUS.set(len(app.list_stock(below_threshold=True)))
