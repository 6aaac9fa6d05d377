"""The Shipment aggregate: its status machine, invariants and idempotent repeats."""

from __future__ import annotations

import typing
import uuid
from datetime import UTC, datetime

import pytest

from fulfilment_kit.contracts.shipping import ShipmentExceptionCode
from fulfilment_kit.tracing import Trace, stamp
from shipping.domain import (
    Address,
    ExceptionCode,
    InvalidShipment,
    InvalidTransition,
    Shipment,
    ShipmentLine,
    ShipmentStatus,
    TrackingIndex,
    shipment_id_for,
    tracking_index_id_for,
)

ADDRESS = Address("Ada Example", "1 Sample Street", None, "Berlin", "10115", "DE")
TRACE = Trace("corr-1", "cause-1")
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def new(order_id: uuid.UUID | None = None) -> Shipment:
    shipment = Shipment.create(
        order_id=order_id or uuid.uuid4(),
        lines=[ShipmentLine("MUG", 2), ShipmentLine("TEE", 1)],
        address=ADDRESS,
    )
    stamp(TRACE, shipment.pending_events)  # as the application layer does
    return shipment


def packing() -> Shipment:
    shipment = new()
    assert shipment.start_packing()
    return shipment


def shipped() -> Shipment:
    shipment = packing()
    shipment.dispatch(
        carrier="sandbox-post",
        tracking_number="SBX000000000001",
        shipped_at=NOW,
        dispatch_key=None,
    )
    return shipment


def names(shipment: Shipment) -> list[str]:
    return [type(e).__name__ for e in shipment.collect_events()]


def test_created_awaiting_payment_with_a_deterministic_id() -> None:
    order_id = uuid.uuid4()
    shipment = new(order_id)
    assert shipment.id == shipment_id_for(order_id) == shipment_id_for(order_id)
    assert shipment.status is ShipmentStatus.AWAITING_PAYMENT
    events = shipment.collect_events()
    assert [type(e).__name__ for e in events] == ["Created"]
    assert all(e.trace == TRACE for e in events)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "at least one line"),
        ([ShipmentLine("MUG", 0)], "positive"),
        ([ShipmentLine("MUG", 1), ShipmentLine("MUG", 1)], "one line only"),
    ],
)
def test_invalid_shipments_are_refused(lines: list[ShipmentLine], message: str) -> None:
    with pytest.raises(InvalidShipment, match=message):
        Shipment.create(order_id=uuid.uuid4(), lines=lines, address=ADDRESS)


def test_paid_starts_packing_once() -> None:
    shipment = new()
    shipment.collect_events()
    assert shipment.start_packing() is True
    assert shipment.start_packing() is False
    assert shipment.status is ShipmentStatus.PACKING
    assert names(shipment) == ["PackingStarted"]


def test_dispatch_ships_with_carrier_and_tracking_number() -> None:
    shipment = shipped()
    assert shipment.status is ShipmentStatus.SHIPPED
    assert (shipment.carrier, shipment.tracking_number) == ("sandbox-post", "SBX000000000001")
    assert shipment.shipped_at == NOW
    events = shipment.collect_events()
    assert [type(e).__name__ for e in events][-1] == "Shipped"
    assert events[-1].order_id == shipment.order_id  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (new, "awaiting payment"),
        (shipped, "already shipped"),
    ],
)
def test_dispatch_is_refused_unless_packing(make: typing.Any, message: str) -> None:
    shipment = make()
    before = shipment.version
    with pytest.raises(InvalidTransition, match=message):
        shipment.dispatch(carrier="c", tracking_number="T1", shipped_at=NOW, dispatch_key=None)
    assert shipment.version == before


def test_cancelled_shipment_is_never_dispatched_and_stays_cancelled_when_paid() -> None:
    shipment = new()
    assert shipment.cancel() is True
    assert shipment.cancel() is False
    assert shipment.start_packing() is False
    assert shipment.status is ShipmentStatus.CANCELLED
    with pytest.raises(InvalidTransition, match="cancelled"):
        shipment.check_dispatchable()


def test_packing_shipment_can_be_cancelled() -> None:
    shipment = packing()
    assert shipment.cancel() is True
    assert shipment.status is ShipmentStatus.CANCELLED


def test_cancel_after_shipping_changes_nothing() -> None:
    shipment = shipped()
    shipment.collect_events()
    assert shipment.cancel() is False
    assert shipment.status is ShipmentStatus.SHIPPED
    assert names(shipment) == []


def test_carrier_progress_to_delivered_and_a_repeat_is_a_no_op() -> None:
    shipment = shipped()
    shipment.collect_events()
    assert shipment.report_in_transit(occurred_at=NOW) is True
    assert shipment.report_in_transit(occurred_at=NOW) is False
    assert shipment.deliver(delivered_at=NOW) is True
    assert shipment.deliver(delivered_at=NOW) is False
    assert shipment.status is ShipmentStatus.DELIVERED
    assert shipment.delivered_at == NOW
    assert names(shipment) == ["InTransit", "Delivered"]


def test_exception_then_redelivery_attempt_then_delivered() -> None:
    shipment = shipped()
    shipment.collect_events()
    kwargs: dict[str, typing.Any] = {"occurred_at": NOW}
    assert shipment.report_exception(reason_code="recipient_absent", reason="out", **kwargs)
    assert not shipment.report_exception(reason_code="recipient_absent", reason="out", **kwargs)
    assert shipment.problem is not None
    assert shipment.problem.reason_code == "recipient_absent"
    assert shipment.report_in_transit(**kwargs)
    assert shipment.deliver(delivered_at=NOW)
    assert names(shipment) == ["ExceptionReported", "InTransit", "Delivered"]


@pytest.mark.parametrize("status", ["awaiting", "packing", "cancelled", "delivered"])
def test_carrier_updates_out_of_turn_are_invalid(status: str) -> None:
    shipment = {"awaiting": new, "packing": packing, "delivered": shipped}.get(status, new)()
    if status == "cancelled":
        shipment.cancel()
    if status == "delivered":
        shipment.deliver(delivered_at=NOW)
    before = shipment.version
    with pytest.raises(InvalidTransition):
        shipment.report_exception(reason_code="lost", reason="gone", occurred_at=NOW)
    with pytest.raises(InvalidTransition):
        shipment.report_in_transit(occurred_at=NOW)
    if status != "delivered":
        with pytest.raises(InvalidTransition):
            shipment.deliver(delivered_at=NOW)
    assert shipment.version == before


def test_tracking_index_points_at_the_shipment() -> None:
    shipment = shipped()
    index = TrackingIndex.create(shipment)
    assert index.id == tracking_index_id_for("SBX000000000001")
    assert (index.order_id, index.shipment_id) == (shipment.order_id, shipment.id)
    with pytest.raises(InvalidShipment):
        TrackingIndex.create(packing())


def test_domain_exception_codes_mirror_the_public_contract() -> None:
    assert typing.get_args(ExceptionCode) == typing.get_args(ShipmentExceptionCode)
