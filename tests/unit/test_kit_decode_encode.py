"""The relay's and the followers' cheaper decode/encode give exactly what the slower code
gave: events decoded by the orjson transcoder equal the stdlib transcoder's, ce_ids and
traceparents equal the uuid module's, and private events pass the relay undecoded."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import (
    JSONTranscoder,
    StoredEvent,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from eventsourcing.utils import get_topic

from customer_service.application import CustomerServiceApplication
from fulfilment_kit.contracts import OrderDelivered, OrderStockLocked
from fulfilment_kit.messaging import cloudevents
from fulfilment_kit.messaging.relay import public_records
from fulfilment_kit.observability.business import EventMeter
from fulfilment_kit.persistence.transcodings import FastJSONTranscoder
from inventory.application import InventoryApplication
from orders.application import OrdersApplication
from orders.contracts import to_public
from orders.domain import Order
from payments.application import PaymentsApplication

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
ORDER_ID = uuid.UUID("11111111-1111-4111-8111-111111111111")
FIXTURES = Path(__file__).parent
APPS: list[tuple[type[Any], str]] = [
    (OrdersApplication, "orders_stored_events.json"),
    (InventoryApplication, "inventory_stored_events.json"),
    (PaymentsApplication, "payments_stored_events.json"),
    (CustomerServiceApplication, "customer_service_stored_events.json"),
]


def _stdlib(app: Any) -> JSONTranscoder:
    transcoder = JSONTranscoder()
    app.register_transcodings(transcoder)
    return transcoder


@pytest.mark.parametrize(("app_class", "fixture"), APPS)
def test_the_services_decode_every_stored_event_as_the_stdlib_transcoder_does(
    app_class: type[Any], fixture: str
) -> None:
    app = app_class(env=POPO)
    assert type(app.mapper.transcoder) is FastJSONTranscoder
    stdlib = _stdlib(app)
    states = [state.encode() for *_, state in json.loads((FIXTURES / fixture).read_text())]
    assert states
    for state in states:
        decoded = app.mapper.transcoder.decode(state)
        assert decoded == stdlib.decode(state)
        assert _types(decoded) == _types(stdlib.decode(state))


def _types(value: Any) -> Any:
    """The value's structure with each leaf's type (equal values of other types differ)."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value)


def test_what_orjson_refuses_is_decoded_by_the_stdlib_and_unknown_types_still_fail() -> None:
    fast = FastJSONTranscoder()
    big = b'{"amount": 123456789012345678901234567890, "ratio": NaN}'
    decoded = fast.decode(big)
    assert decoded["amount"] == 123456789012345678901234567890
    assert math.isnan(decoded["ratio"])
    nested = b'{"a": [{"_type_": "uuid_hex", "_data_": "%s"}], "b": {"_type_": "x"}}'
    fast.register(UUIDAsHex())
    an_id = uuid.uuid4()
    assert fast.decode(nested % an_id.hex.encode()) == {"a": [an_id], "b": {"_type_": "x"}}
    with pytest.raises(TranscodingNotRegisteredError):
        fast.decode(b'{"_type_": "not_registered", "_data_": 1}')
    assert fast.decode(b"[1, 2]") == [1, 2]
    assert fast.decode(b"3") == 3


def test_event_ids_and_traceparents_are_the_uuid_modules() -> None:
    for aggregate_id in [uuid.uuid4() for _ in range(200)] + ["sku:Käse-1", "x"]:
        for version, index in [(1, 0), (7, 0), (3, 1), (123456, 9)]:
            name = f"{aggregate_id}:{version}" + (f":{index}" if index else "")
            expected = str(uuid.uuid5(cloudevents.CE_ID_NAMESPACE, name))
            ce_id = cloudevents.event_id(aggregate_id, version, index)
            assert ce_id == expected
            span = uuid.UUID(ce_id).hex[:16]
            assert cloudevents.traceparent("corr", ce_id).split("-")[2] == span
    other = "{12345678-ABCD-5678-1234-567812345678}"  # not event_id's form: parsed
    assert cloudevents.traceparent("corr", other).split("-")[2] == "12345678abcd5678"


def test_the_relay_passes_private_events_undecoded_and_maps_public_ones() -> None:
    app = OrdersApplication(env=POPO)
    private = get_topic(Order.CancellationRefused)
    assert not to_public.may_publish(private)
    assert to_public.may_publish(get_topic(Order.Placed))
    assert to_public.may_publish("no.such.module:Event")  # decoding it fails: quarantined
    app.recorder.insert_events(
        [StoredEvent(uuid.uuid4(), 1, private, b"not even json")]  # never decoded
    )
    (notification,) = app.recorder.select_notifications(1, 10)
    assert public_records(app, to_public, "/fulfilment/orders", notification) == []


def test_encoded_headers_are_the_attributes_in_their_order_as_utf8() -> None:
    at = datetime(2025, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    event = OrderStockLocked(order_id=ORDER_ID, customer_id=ORDER_ID, locked_at=at)
    ce_id = cloudevents.event_id(ORDER_ID, 2)
    key, value, headers = cloudevents.encode(
        event,
        ce_id=ce_id,
        source="/fulfilment/orders",
        time=at,
        correlation_id="corr-ü",
        causation_id="cause",
        sequence=42,
    )
    assert key == str(ORDER_ID).encode()
    assert value == event.model_dump_json().encode()
    assert headers == [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id.encode()),
        ("ce_type", event.ce_type.encode()),
        ("ce_source", b"/fulfilment/orders"),
        ("ce_time", b"2025-05-01T10:30:00Z"),
        ("ce_subject", str(ORDER_ID).encode()),
        ("content-type", b"application/json"),
        ("ce_correlationid", "corr-ü".encode()),
        ("ce_causationid", b"cause"),
        ("traceparent", cloudevents.traceparent("corr-ü", ce_id).encode()),
        ("ce_sequence", b"42"),
    ]
    assert ("ce_sequence", b"42") not in cloudevents.encode(
        event, ce_id=ce_id, source="s", time=at, correlation_id="c", causation_id="c"
    )[2]


def test_the_business_meter_observes_the_published_events_by_type_and_never_raises() -> None:
    meter = EventMeter()
    seen: list[Any] = []
    meter.on(OrderStockLocked, seen.append)
    meter.on(OrderDelivered, lambda _: 1 / 0)  # a broken observer: logged, not raised
    at = datetime(2025, 5, 1, tzinfo=UTC)
    locked = OrderStockLocked(order_id=ORDER_ID, customer_id=ORDER_ID, locked_at=at)
    delivered = OrderDelivered(order_id=ORDER_ID, customer_id=ORDER_ID, delivered_at=at)
    meter.observe([delivered, locked])
    assert seen == [locked]
