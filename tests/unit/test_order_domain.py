"""The Order aggregate's invariants and its first event."""

from __future__ import annotations

import uuid

import pytest

from fulfilment_kit.tracing import Trace, stamp
from orders.domain import Address, InvalidOrder, Order, OrderLine, OrderStatus

ADDRESS = Address("Ada Example", "1 Sample Street", None, "Berlin", "10115", "DE")
TRACE = Trace("corr-1", "cause-1")


def place(lines: list[OrderLine]) -> Order:
    order = Order.place(
        order_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        lines=lines,
        currency="EUR",
        shipping_address=ADDRESS,
        payment_token="tok_visa",
        request_fingerprint=None,
    )
    stamp(TRACE, order.pending_events)  # as the application layer does
    return order


def test_placed_order_totals_its_lines_and_records_one_event() -> None:
    order = place([OrderLine("MUG", 2, 1299), OrderLine("TEE", 1, 2499)])
    assert order.status is OrderStatus.PLACED
    assert order.total_minor == 2 * 1299 + 2499
    events = order.collect_events()
    assert [type(e).__name__ for e in events] == ["Placed"]
    assert events[0].trace == TRACE


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "at least one line"),
        ([OrderLine("MUG", 1, 100), OrderLine("MUG", 2, 100)], "one line only"),
        ([OrderLine("MUG", 0, 100)], "positive"),
        ([OrderLine("MUG", 1, -5)], "positive"),
        ([OrderLine(f"SKU-{i}", 1, 1) for i in range(101)], "at most 100"),
    ],
)
def test_invalid_orders_are_refused_before_any_event(lines: list[OrderLine], message: str) -> None:
    with pytest.raises(InvalidOrder, match=message):
        place(lines)
