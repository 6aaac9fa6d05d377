"""Maps the Order's private domain events to public integration events."""

from __future__ import annotations

from collections.abc import Sequence
from functools import singledispatch
from typing import Any

from fulfilment_kit.contracts import OrderLine as PublicLine
from fulfilment_kit.contracts import OrderPlaced, ShippingAddress
from fulfilment_kit.messaging.relay import Outbound
from orders.domain import Order


@singledispatch
def to_public(domain_event: Any) -> Sequence[Outbound]:
    """Domain events not listed below stay private."""
    return ()


@to_public.register(Order.Placed)
def _placed(e: Any) -> Sequence[Outbound]:
    lines = [
        PublicLine(sku=x.sku, quantity=x.quantity, unit_price_minor=x.unit_price_minor)
        for x in e.lines
    ]
    placed = OrderPlaced(
        order_id=e.originator_id,
        customer_id=e.customer_id,
        lines=lines,
        currency=e.currency,
        total_minor=sum(x.quantity * x.unit_price_minor for x in e.lines),
        shipping_address=ShippingAddress(**e.shipping_address.__dict__),
        placed_at=e.timestamp,
    )
    return (Outbound(placed, e.trace.correlation_id, e.trace.causation_id),)
