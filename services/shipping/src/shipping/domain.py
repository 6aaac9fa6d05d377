"""The Shipment aggregate (one per order) and the tracking-number index. Pure: no I/O.

Status machine::

    awaiting_payment --paid--> packing --dispatch--> shipped --> in_transit --> delivered
           |                      |                     \\            |          ^
           +------cancel----------+--> cancelled          +--> exception ------+
    (an order's cancellation request: held = cancelled before dispatch; once dispatched it is
    refused, recorded once, and the parcel goes on)
                                                               (carrier problem; the carrier
                                                                may still move or deliver it)

Public methods check the invariants first and raise `InvalidTransition` before any event;
a repeat of a change that already happened (redelivery, a carrier resending a webhook)
returns False and records nothing, so every caller is idempotent by construction.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from eventsourcing.domain import Aggregate, event

from fulfilment_kit.commands import StateConflict

SHIPPING_NAMESPACE = uuid.UUID("3a8e6c1d-2b4f-4e9a-8c7d-5f1e0b2a9d64")

ExceptionCode = Literal[
    "address_not_found",
    "recipient_absent",
    "refused",
    "damaged_in_transit",
    "lost",
    "carrier_delay",
]
"""Mirrors `fulfilment_kit.contracts.shipping.ShipmentExceptionCode` (the domain imports no
pydantic contracts; tests check the two stay equal)."""


@functools.lru_cache(maxsize=8192)  # asked for by every record of an order; uuid5 hashes
def shipment_id_for(order_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(SHIPPING_NAMESPACE, f"shipment:{order_id}")


def tracking_index_id_for(tracking_number: str) -> uuid.UUID:
    return uuid.uuid5(SHIPPING_NAMESPACE, f"tracking:{tracking_number}")


def webhook_delivery_id_for(carrier: str, delivery_id: str) -> uuid.UUID:
    return uuid.uuid5(SHIPPING_NAMESPACE, f"webhook-delivery:{carrier}:{delivery_id}")


class ShipmentStatus(StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"
    PACKING = "packing"
    SHIPPED = "shipped"
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"
    EXCEPTION = "exception"
    CANCELLED = "cancelled"


# Statuses of a parcel that is with the carrier.
WITH_CARRIER = frozenset(
    {ShipmentStatus.SHIPPED, ShipmentStatus.IN_TRANSIT, ShipmentStatus.EXCEPTION}
)
DISPATCHED = WITH_CARRIER | {ShipmentStatus.DELIVERED}


@dataclass(frozen=True)
class ShipmentLine:
    sku: str
    quantity: int


@dataclass(frozen=True)
class Address:
    """Where the parcel goes. Personal data: never logged, never in a view or a metric; stored
    sealed (as on the orders topic), opened through the kit only to book the carrier."""

    recipient_name: str
    line1: str
    line2: str | None
    city: str
    postal_code: str
    country_code: str
    phone: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class DeliveryProblem:
    reason_code: ExceptionCode
    reason: str
    occurred_at: datetime


class InvalidShipment(ValueError):
    """A shipment that breaks a domain invariant."""


class InvalidTransition(StateConflict):
    """The shipment's status does not allow this change (an HTTP 409)."""

    def __init__(self, status: ShipmentStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Shipment(Aggregate):
    """The parcel of one order, from packing to the customer's door."""

    # The events, declared by the `@event` methods below (their arguments are the fields).
    Created: ClassVar[type[Aggregate.Created]]
    PackingStarted: ClassVar[type[Aggregate.Event]]
    Shipped: ClassVar[type[Aggregate.Event]]
    InTransit: ClassVar[type[Aggregate.Event]]
    Delivered: ClassVar[type[Aggregate.Event]]
    ExceptionReported: ClassVar[type[Aggregate.Event]]
    CancellationRefused: ClassVar[type[Aggregate.Event]]
    """A cancellation request arrived after the parcel had left."""

    class Cancelled(Aggregate.Event):
        """Declared as a class for its default: events stored before the cancellation
        protocol have no order id."""

        order_id: uuid.UUID | None = None

    @classmethod
    def create(
        cls,
        *,
        order_id: uuid.UUID,
        lines: list[ShipmentLine],
        address: Address,
    ) -> Shipment:
        """A shipment awaiting payment for a placed order."""
        if not lines:
            raise InvalidShipment("a shipment needs at least one line")
        if any(line.quantity <= 0 for line in lines):
            raise InvalidShipment("quantities must be positive")
        skus = [line.sku for line in lines]
        if len(set(skus)) != len(skus):
            raise InvalidShipment("each SKU may appear in one line only")
        return cls(
            id=shipment_id_for(order_id),
            order_id=order_id,
            lines=lines,
            address=address,
        )

    @event("Created")
    def __init__(
        self,
        id: uuid.UUID,
        order_id: uuid.UUID,
        lines: list[ShipmentLine],
        address: Address,
    ) -> None:
        self.order_id = order_id
        self.lines = list(lines)
        self.address = address
        self.status = ShipmentStatus.AWAITING_PAYMENT
        self.carrier: str | None = None
        self.tracking_number: str | None = None
        self.shipped_at: datetime | None = None
        self.dispatch_key: str | None = None
        self.delivered_at: datetime | None = None
        self.problem: DeliveryProblem | None = None
        self.cancellation_refused = False

    # -- payment and cancellation (policies) ---------------------------------------------

    def start_packing(self) -> bool:
        """The order is paid: pack it. False when packing started already or it cannot."""
        if self.status is not ShipmentStatus.AWAITING_PAYMENT:
            return False  # a repeat, or paid after a cancellation: nothing to pack
        self._packing_started()
        return True

    @event("PackingStarted")
    def _packing_started(self) -> None:
        self.status = ShipmentStatus.PACKING

    def cancel(self) -> bool:
        """Hold the parcel for good unless it has left. False: no change. Shipping is the
        authority on whether goods left: once cancelled, dispatch refuses it."""
        if self.status not in (ShipmentStatus.AWAITING_PAYMENT, ShipmentStatus.PACKING):
            return False  # already cancelled, or shipped (too late: returns handle that)
        self._cancelled(order_id=self.order_id)
        return True

    @event(Cancelled)
    def _cancelled(self, order_id: uuid.UUID | None) -> None:
        self.status = ShipmentStatus.CANCELLED

    def answer_cancellation(self) -> bool:
        """A cancellation request: hold the parcel if it has not left (cancelled), else
        refuse once (the order goes on). False: answered before, nothing recorded."""
        if self.cancel():
            return True
        if self.status not in DISPATCHED or self.cancellation_refused:
            return False  # cancelled already (held): the answer stands
        self._cancellation_refused(order_id=self.order_id, status=str(self.status))
        return True

    @event("CancellationRefused")
    def _cancellation_refused(self, order_id: uuid.UUID, status: str) -> None:
        self.cancellation_refused = True

    # -- dispatch -------------------------------------------------------------------------

    def check_dispatchable(self) -> None:
        """Raise InvalidTransition unless the shipment is packed and may leave now."""
        if self.status is ShipmentStatus.PACKING:
            return
        if self.status is ShipmentStatus.AWAITING_PAYMENT:
            raise InvalidTransition(self.status, "cannot dispatch: the order is awaiting payment")
        if self.status is ShipmentStatus.CANCELLED:
            raise InvalidTransition(self.status, "cannot dispatch: the shipment was cancelled")
        raise InvalidTransition(
            self.status, f"cannot dispatch: the shipment was already shipped (status {self.status})"
        )

    def dispatch(
        self,
        *,
        carrier: str,
        tracking_number: str,
        shipped_at: datetime,
        dispatch_key: str | None,
    ) -> None:
        """The carrier took the parcel."""
        self.check_dispatchable()
        if not carrier or not tracking_number:
            raise InvalidShipment("a shipped parcel needs a carrier and a tracking number")
        self._shipped(
            order_id=self.order_id,
            carrier=carrier,
            tracking_number=tracking_number,
            shipped_at=shipped_at,
            dispatch_key=dispatch_key,
        )

    @event("Shipped")
    def _shipped(
        self,
        order_id: uuid.UUID,
        carrier: str,
        tracking_number: str,
        shipped_at: datetime,
        dispatch_key: str | None,
    ) -> None:
        self.status = ShipmentStatus.SHIPPED
        self.carrier = carrier
        self.tracking_number = tracking_number
        self.shipped_at = shipped_at
        self.dispatch_key = dispatch_key

    # -- carrier updates ------------------------------------------------------------------

    def report_in_transit(self, *, occurred_at: datetime) -> bool:
        """The carrier is moving the parcel (private: no public event)."""
        if self.status is ShipmentStatus.IN_TRANSIT:
            return False
        if self.status not in (ShipmentStatus.SHIPPED, ShipmentStatus.EXCEPTION):
            raise InvalidTransition(
                self.status, f"a shipment that is {self.status} cannot be in transit"
            )
        self._in_transit(occurred_at=occurred_at)
        return True

    @event("InTransit")
    def _in_transit(self, occurred_at: datetime) -> None:
        self.status = ShipmentStatus.IN_TRANSIT

    def deliver(self, *, delivered_at: datetime) -> bool:
        """The carrier delivered the parcel. False when it was delivered already."""
        if self.status is ShipmentStatus.DELIVERED:
            return False
        if self.status not in WITH_CARRIER:
            raise InvalidTransition(
                self.status, f"a shipment that is {self.status} cannot be delivered"
            )
        self._delivered(order_id=self.order_id, delivered_at=delivered_at)
        return True

    @event("Delivered")
    def _delivered(self, order_id: uuid.UUID, delivered_at: datetime) -> None:
        self.status = ShipmentStatus.DELIVERED
        self.delivered_at = delivered_at

    def report_exception(
        self, *, reason_code: ExceptionCode, reason: str, occurred_at: datetime
    ) -> bool:
        """The carrier reports a delivery problem. False for a repeat of the current one."""
        if not reason:
            raise InvalidShipment("a delivery exception needs a reason")
        if self.status not in WITH_CARRIER:
            raise InvalidTransition(
                self.status, f"a shipment that is {self.status} cannot have a delivery exception"
            )
        if (
            self.status is ShipmentStatus.EXCEPTION
            and self.problem is not None
            and (self.problem.reason_code, self.problem.reason) == (reason_code, reason)
        ):
            return False
        self._exception_reported(
            order_id=self.order_id,
            reason_code=reason_code,
            reason=reason,
            occurred_at=occurred_at,
        )
        return True

    @event("ExceptionReported")
    def _exception_reported(
        self,
        order_id: uuid.UUID,
        reason_code: ExceptionCode,
        reason: str,
        occurred_at: datetime,
    ) -> None:
        self.status = ShipmentStatus.EXCEPTION
        self.problem = DeliveryProblem(reason_code, reason, occurred_at)


class TrackingIndex(Aggregate):
    """Finds the shipment of a tracking number (carrier webhooks know only that)."""

    Created: ClassVar[type[Aggregate.Created]]

    @classmethod
    def create(cls, shipment: Shipment) -> TrackingIndex:
        if shipment.tracking_number is None:
            raise InvalidShipment("only a shipped shipment has a tracking number")
        return cls(
            id=tracking_index_id_for(shipment.tracking_number),
            tracking_number=shipment.tracking_number,
            order_id=shipment.order_id,
            shipment_id=shipment.id,
        )

    @event("Created")
    def __init__(
        self,
        id: uuid.UUID,
        tracking_number: str,
        order_id: uuid.UUID,
        shipment_id: uuid.UUID,
    ) -> None:
        self.tracking_number = tracking_number
        self.order_id = order_id
        self.shipment_id = shipment_id


class WebhookDelivery(Aggregate):
    """A carrier's webhook delivery that was applied: a replay of its id is ignored."""

    Received: ClassVar[type[Aggregate.Created]]

    @classmethod
    def receive(cls, carrier: str, delivery_id: str, tracking_number: str) -> WebhookDelivery:
        return cls(
            id=webhook_delivery_id_for(carrier, delivery_id),
            carrier=carrier,
            delivery_id=delivery_id,
            tracking_number=tracking_number,
        )

    @event("Received")
    def __init__(self, id: uuid.UUID, carrier: str, delivery_id: str, tracking_number: str) -> None:
        self.carrier = carrier
        self.delivery_id = delivery_id
        self.tracking_number = tracking_number
