"""The kit's declared mapper from domain events to public events (`PublicEvents`): fields by
name, checked when declared; the trace of the domain event goes with each public event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from eventsourcing.domain import Aggregate, event

from fulfilment_kit.contracts import ShipmentCancelled, ShipmentDelivered
from fulfilment_kit.messaging.public import AGGREGATE_ID, RECORDED_AT, PublicEvents
from fulfilment_kit.tracing import Trace, stamp

ORDER_ID = uuid.UUID("11111111-1111-4111-8111-111111111111")
AT = datetime(2025, 5, 1, 12, tzinfo=UTC)


class Parcel(Aggregate):
    Created: ClassVar[type[Aggregate.Created]]
    Delivered: ClassVar[type[Aggregate.Event]]
    Held: ClassVar[type[Aggregate.Event]]

    @event("Created")
    def __init__(self) -> None:
        pass

    @event("Delivered")
    def deliver(self, order_id: uuid.UUID, delivered_at: datetime) -> None:
        pass

    @event("Held")
    def hold(self, order_id: uuid.UUID | None) -> None:
        pass


def recorded(change: Any) -> list[Any]:
    parcel = Parcel()
    change(parcel)
    events = parcel.collect_events()
    stamp(Trace("corr", "cause"), events)
    return events


def test_mapped_events_are_published_with_their_trace_and_the_others_stay_private() -> None:
    mapper = PublicEvents()
    mapper.copy(
        Parcel.Delivered, ShipmentDelivered, "order_id delivered_at", shipment_id=AGGREGATE_ID
    )
    created, delivered = recorded(lambda p: p.deliver(ORDER_ID, AT))
    assert mapper(created) == ()
    [outbound] = mapper(delivered)
    assert outbound.event == ShipmentDelivered(
        order_id=ORDER_ID, shipment_id=delivered.originator_id, delivered_at=AT
    )
    assert (outbound.correlation_id, outbound.causation_id) == ("corr", "cause")


def test_a_mapping_may_keep_some_events_private_and_compute_fields() -> None:
    mapper = PublicEvents()
    mapper.copy(
        Parcel.Held,
        ShipmentCancelled,
        when=lambda e: e.order_id is not None,
        order_id=lambda e: e.order_id,
        shipment_id=AGGREGATE_ID,
        cancelled_at=RECORDED_AT,
    )
    _, old = recorded(lambda p: p.hold(None))
    _, new = recorded(lambda p: p.hold(ORDER_ID))
    assert mapper(old) == ()
    [outbound] = mapper(new)
    assert isinstance(outbound.event, ShipmentCancelled)
    assert outbound.event.cancelled_at == new.timestamp


def test_a_mapping_naming_unknown_fields_or_missing_required_ones_fails_when_declared() -> None:
    mapper = PublicEvents()
    with pytest.raises(TypeError, match=r"unknown fields \['colour'\]"):
        mapper.copy(Parcel.Delivered, ShipmentDelivered, "order_id delivered_at colour")
    with pytest.raises(TypeError, match=r"required fields not given \['shipment_id'\]"):
        mapper.copy(Parcel.Delivered, ShipmentDelivered, "order_id delivered_at")
    mapper.copy(Parcel.Delivered, ShipmentDelivered, "order_id delivered_at", shipment_id="id")
    with pytest.raises(TypeError, match="mapped twice"):
        mapper.register(Parcel.Delivered)(lambda e: None)
