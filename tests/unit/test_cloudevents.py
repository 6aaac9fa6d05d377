"""CloudEvents binary-mode encoding and decoding of Kafka records."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from fulfilment_kit.contracts import OrderLine, OrderPlaced, ShippingAddress
from fulfilment_kit.messaging import cloudevents

ORDER_ID = uuid.uuid4()
EVENT = OrderPlaced(
    order_id=ORDER_ID,
    customer_id=uuid.uuid4(),
    lines=[OrderLine(sku="MUG", quantity=2, unit_price_minor=1299)],
    currency="EUR",
    total_minor=2598,
    shipping_address=ShippingAddress(
        recipient_name="A", line1="1 St", city="Berlin", postal_code="10115", country_code="DE"
    ),
    placed_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
)


def encode() -> tuple[bytes, bytes, cloudevents.Headers]:
    return cloudevents.encode(
        EVENT,
        ce_id=cloudevents.event_id(ORDER_ID, 1),
        source="/fulfilment/orders",
        time=EVENT.placed_at,
        correlation_id="corr",
        causation_id="cause",
        sequence=42,
    )


def test_round_trip_keeps_every_attribute() -> None:
    key, value, headers = encode()
    envelope = cloudevents.decode(value, headers)
    assert key == str(ORDER_ID).encode()
    assert envelope.event == EVENT
    assert envelope.type == "fulfilment.order.placed.v1"
    assert envelope.subject == str(ORDER_ID)
    assert (envelope.correlation_id, envelope.causation_id, envelope.sequence) == (
        "corr",
        "cause",
        42,
    )
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", envelope.traceparent or "")


def test_event_id_is_deterministic_and_distinct_per_version() -> None:
    assert cloudevents.event_id(ORDER_ID, 1) == cloudevents.event_id(ORDER_ID, 1)
    assert cloudevents.event_id(ORDER_ID, 1) != cloudevents.event_id(ORDER_ID, 2)
    assert cloudevents.event_id(ORDER_ID, 1) != cloudevents.event_id(ORDER_ID, 1, 1)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda v, h: (v, [x for x in h if x[0] != "ce_type"]), "missing CloudEvents headers"),
        (lambda v, h: (b"{not json", h), "payload is not a valid"),
        (lambda v, h: (v, [(k, b"x.y" if k == "ce_type" else b) for k, b in h]), "unknown ce_type"),
        (
            lambda v, h: (v, [(k, b"text/plain" if k == "content-type" else b) for k, b in h]),
            "content-type",
        ),
        (lambda v, h: (None, h), "no value"),
        (lambda v, h: (v, [*h, ("ce_source", b"\xff")]), "not UTF-8"),
    ],
)
def test_bad_records_raise_decode_error_with_reason(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    _, value, headers = encode()
    bad_value, bad_headers = mutate(value, headers)
    with pytest.raises(cloudevents.DecodeError, match=reason):
        cloudevents.decode(bad_value, bad_headers)


def test_the_wire_format_is_what_readers_always_got() -> None:
    """The value is pydantic's JSON of the event, byte for byte; the traceparent hashes the
    correlation (cached per correlation id) and takes the span from the ce_id."""
    _, value, headers = encode()
    assert value == EVENT.model_dump_json().encode()
    attrs = dict(headers)
    trace = uuid.uuid5(cloudevents.CE_ID_NAMESPACE, "trace:corr").hex
    span = uuid.UUID(attrs["ce_id"].decode()).hex[:16]
    assert attrs["traceparent"] == f"00-{trace}-{span}-01".encode()
    assert encode()[2] == headers  # the second encoding (cached trace) is the same


def test_header_values_that_are_not_bytes_are_ignored() -> None:
    _, value, headers = encode()
    envelope = cloudevents.decode(value, [*headers, ("x-empty", None)])
    assert envelope.id == cloudevents.event_id(ORDER_ID, 1)
    assert "x-empty" not in cloudevents.header_map([*headers, ("x-empty", None)])
