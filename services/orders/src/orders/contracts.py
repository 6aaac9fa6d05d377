"""Maps the Order's private domain events to public integration events; the others stay
private."""

from __future__ import annotations

import uuid
from typing import Any

from fulfilment_kit.contracts import (
    CustomerErased,
    OrderCancellationRequested,
    OrderCancelled,
    OrderDelivered,
    OrderFlagged,
    OrderPaid,
    OrderPartiallyReturned,
    OrderPlaced,
    OrderRejected,
    OrderReturned,
    OrderShipped,
    OrderStockLocked,
    ReturnedLine,
    ShippingAddress,
)
from fulfilment_kit.contracts import OrderLine as PublicLine
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.messaging.public import AGGREGATE_ID, RECORDED_AT, PublicEvents
from fulfilment_kit.privacy import is_sealed
from orders.domain import CustomerErasure, Order

PAYMENT_METHOD_NAMESPACE = uuid.UUID("2f7c9a41-3e6b-4d85-a1c0-9b8e7d6f5a43")

to_public = PublicEvents()


@to_public.register(Order.Placed)
def _placed(e: Any) -> OrderPlaced:
    lines = [
        PublicLine(sku=x.sku, quantity=x.quantity, unit_price_minor=x.unit_price_minor)
        for x in e.lines
    ]
    return OrderPlaced(
        order_id=e.originator_id,
        customer_id=e.customer_id,
        lines=lines,
        currency=e.currency,
        total_minor=sum(x.quantity * x.unit_price_minor for x in e.lines),
        shipping_address=ShippingAddress(**e.shipping_address.__dict__),
        placed_at=e.timestamp,
        **_payment(e.originator_id, e.payment_token),
    )


def _payment(order_id: uuid.UUID, token: str | None) -> dict[str, Any]:
    """The token sealed for payments plus a reference; a plaintext token (events stored before
    sealing) goes where it always went, as subscribers already received it."""
    if token is None:
        return {}
    reference = f"pm_{uuid.uuid5(PAYMENT_METHOD_NAMESPACE, str(order_id)).hex[:24]}"
    if is_sealed(token):
        return {"payment_method": reference, "sealed_payment_token": token}
    return {"payment_method": reference, "payment_token": token}


def _shortage_text(e: Any) -> str:
    short = ", ".join(
        f"{x.sku} (requested {x.requested}, available {x.available})" for x in e.shortages
    )
    return f"out of stock: {short}"[:500]


def _returned_lines(e: Any) -> list[ReturnedLine]:
    return [ReturnedLine(sku=x.sku, quantity=x.quantity) for x in e.lines]


def _order_event(
    kind: type[Any], public: type[IntegrationEvent], same: str = "", **sources: Any
) -> None:
    """Every order event names the order (its aggregate) and its customer."""
    to_public.copy(kind, public, f"customer_id {same}", order_id=AGGREGATE_ID, **sources)


to_public.copy(CustomerErasure.Erased, CustomerErased, "customer_id", erased_at=RECORDED_AT)
_order_event(Order.StockLocked, OrderStockLocked, locked_at=RECORDED_AT)
_order_event(
    Order.Rejected,
    OrderRejected,
    reason_code=lambda _: "out_of_stock",
    reason=_shortage_text,
    rejected_at=RECORDED_AT,
)
_order_event(Order.Paid, OrderPaid, "amount_minor currency", paid_at=RECORDED_AT)
_order_event(Order.Cancelled, OrderCancelled, "cancelled_by reason", cancelled_at=RECORDED_AT)
_order_event(
    Order.CancellationRequested,
    OrderCancellationRequested,
    "requested_by reason",
    requested_at=RECORDED_AT,
)
_order_event(Order.Shipped, OrderShipped, "carrier tracking_number", shipped_at=RECORDED_AT)
_order_event(Order.Delivered, OrderDelivered, delivered_at=RECORDED_AT)
_order_event(
    Order.Flagged, OrderFlagged, "stage stage_entered_at deadline_at", flagged_at=RECORDED_AT
)
for returned, public in (
    (Order.PartiallyReturned, OrderPartiallyReturned),
    (Order.Returned, OrderReturned),
):
    _order_event(
        returned,
        public,
        "refund_minor currency",
        lines=_returned_lines,
        returned_at=RECORDED_AT,
    )
