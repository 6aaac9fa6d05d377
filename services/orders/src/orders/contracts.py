"""Maps the Order's private domain events to public integration events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import singledispatch
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
from fulfilment_kit.messaging.relay import EventToPublish
from fulfilment_kit.privacy import is_sealed
from orders.domain import CustomerErasure, Order

PAYMENT_METHOD_NAMESPACE = uuid.UUID("2f7c9a41-3e6b-4d85-a1c0-9b8e7d6f5a43")


@singledispatch
def to_public(domain_event: Any) -> Sequence[EventToPublish]:
    """Domain events not listed below stay private."""
    return ()


def _out(e: Any, public: IntegrationEvent) -> Sequence[EventToPublish]:
    return (EventToPublish(public, e.trace.correlation_id, e.trace.causation_id),)


@to_public.register(Order.Placed)
def _placed(e: Any) -> Sequence[EventToPublish]:
    lines = [
        PublicLine(sku=x.sku, quantity=x.quantity, unit_price_minor=x.unit_price_minor)
        for x in e.lines
    ]
    return _out(
        e,
        OrderPlaced(
            order_id=e.originator_id,
            customer_id=e.customer_id,
            lines=lines,
            currency=e.currency,
            total_minor=sum(x.quantity * x.unit_price_minor for x in e.lines),
            shipping_address=ShippingAddress(**e.shipping_address.__dict__),
            placed_at=e.timestamp,
            **_payment(e.originator_id, e.payment_token),
        ),
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


@to_public.register(CustomerErasure.Erased)
def _erased(e: Any) -> Sequence[EventToPublish]:
    return _out(e, CustomerErased(customer_id=e.customer_id, erased_at=e.timestamp))


def _shortage_text(e: Any) -> str:
    short = ", ".join(
        f"{x.sku} (requested {x.requested}, available {x.available})" for x in e.shortages
    )
    return f"out of stock: {short}"[:500]


@to_public.register(Order.StockLocked)
def _locked(e: Any) -> Sequence[EventToPublish]:
    return _out(
        e,
        OrderStockLocked(
            order_id=e.originator_id, customer_id=e.customer_id, locked_at=e.timestamp
        ),
    )


@to_public.register(Order.Rejected)
def _rejected(e: Any) -> Sequence[EventToPublish]:
    return _out(
        e,
        OrderRejected(
            order_id=e.originator_id,
            customer_id=e.customer_id,
            reason_code="out_of_stock",
            reason=_shortage_text(e),
            rejected_at=e.timestamp,
        ),
    )


@to_public.register(Order.Paid)
def _paid(e: Any) -> Sequence[EventToPublish]:
    return _out(
        e,
        OrderPaid(
            order_id=e.originator_id,
            customer_id=e.customer_id,
            amount_minor=e.amount_minor,
            currency=e.currency,
            paid_at=e.timestamp,
        ),
    )


@to_public.register(Order.Cancelled)
def _cancelled(e: Any) -> Sequence[EventToPublish]:
    return _out(
        e,
        OrderCancelled(
            order_id=e.originator_id,
            customer_id=e.customer_id,
            cancelled_by=e.cancelled_by,
            reason=e.reason,
            cancelled_at=e.timestamp,
        ),
    )


@to_public.register(Order.CancellationRequested)
def _cancellation_requested(e: Any) -> Sequence[EventToPublish]:
    return _out(
        e,
        OrderCancellationRequested(
            order_id=e.originator_id,
            customer_id=e.customer_id,
            requested_by=e.requested_by,
            reason=e.reason,
            requested_at=e.timestamp,
        ),
    )


@to_public.register(Order.Shipped)
def _shipped(e: Any) -> Sequence[EventToPublish]:
    return _out(
        e,
        OrderShipped(
            order_id=e.originator_id,
            customer_id=e.customer_id,
            carrier=e.carrier,
            tracking_number=e.tracking_number,
            shipped_at=e.timestamp,
        ),
    )


@to_public.register(Order.Delivered)
def _delivered(e: Any) -> Sequence[EventToPublish]:
    return _out(
        e,
        OrderDelivered(
            order_id=e.originator_id, customer_id=e.customer_id, delivered_at=e.timestamp
        ),
    )


@to_public.register(Order.Flagged)
def _flagged(e: Any) -> Sequence[EventToPublish]:
    return _out(
        e,
        OrderFlagged(
            order_id=e.originator_id,
            customer_id=e.customer_id,
            stage=e.stage,
            stage_entered_at=e.stage_entered_at,
            deadline_at=e.deadline_at,
            flagged_at=e.timestamp,
        ),
    )


def _returned_lines(e: Any) -> list[ReturnedLine]:
    return [ReturnedLine(sku=x.sku, quantity=x.quantity) for x in e.lines]


@to_public.register(Order.PartiallyReturned)
def _partially_returned(e: Any) -> Sequence[EventToPublish]:
    return _out(
        e,
        OrderPartiallyReturned(
            order_id=e.originator_id,
            customer_id=e.customer_id,
            lines=_returned_lines(e),
            refund_minor=e.refund_minor,
            currency=e.currency,
            returned_at=e.timestamp,
        ),
    )


@to_public.register(Order.Returned)
def _returned(e: Any) -> Sequence[EventToPublish]:
    return _out(
        e,
        OrderReturned(
            order_id=e.originator_id,
            customer_id=e.customer_id,
            lines=_returned_lines(e),
            refund_minor=e.refund_minor,
            currency=e.currency,
            returned_at=e.timestamp,
        ),
    )
