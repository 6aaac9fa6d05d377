"""The shipping application: the policy over order events, dispatch and carrier updates."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import structlog
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import JSONTranscoder
from prometheus_client import Counter

from fulfilment_kit.commands import (
    DependencyFailed,
    DependencyUnavailable,
    InvalidCommand,
    NotFound,
    StateConflict,
    execute,
)
from fulfilment_kit.contracts import (
    OrderCancellationRequested,
    OrderCancelled,
    OrderPaid,
    OrderPlaced,
    OrderRejected,
)
from fulfilment_kit.messaging.inbox import InboundMessage, ProcessApplication, Processing
from fulfilment_kit.messaging.policy import by_order, policy
from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.persistence.batch_load import load_aggregates
from fulfilment_kit.persistence.transcodings import register_dataclasses
from fulfilment_kit.privacy import PersonalDataVault, in_process_vault
from fulfilment_kit.tracing import Trace, stamp
from shipping.domain import (
    Address,
    DeliveryProblem,
    ExceptionCode,
    InvalidTransition,
    Shipment,
    ShipmentLine,
    ShipmentStatus,
    TrackingIndex,
    WebhookDelivery,
    shipment_id_for,
    tracking_index_id_for,
    webhook_delivery_id_for,
)
from shipping.gateway import (
    CarrierError,
    CarrierGateway,
    SandboxCarrier,
    TransientCarrierError,
    booking_key,
)

log = structlog.get_logger(__name__)

SHIPMENTS = Counter(
    "fulfil_shipments_total",
    "Shipments that reached an outcome: shipped, delivered, a delivery exception, or a "
    "cancellation request held or refused",
    ["outcome"],
    registry=REGISTRY,
)

CARRIER_CLOCK_SKEW = timedelta(minutes=5)
"""How far a carrier's event time may be ahead of ours, or before the parcel shipped."""

TAggregate = TypeVar("TAggregate", bound=Aggregate)


class ShipmentNotFound(NotFound, what="shipment of order"): ...


class UnknownTrackingNumber(NotFound, what="tracking number"): ...


class CarrierUnavailable(DependencyUnavailable):
    """The carrier kept failing transiently; the shipment stays packing (retry later): 503."""

    title = "Carrier unavailable"
    detail_format = "the carrier is unavailable, try again later: {}"


class CarrierRefused(DependencyFailed):
    """The carrier refused the booking; the shipment stays packing (needs a human): 502."""

    title = "Carrier refused"


class InvalidEventTime(InvalidCommand):
    """A carrier reported a time before the parcel shipped or in the future: 422."""

    title = "Request validation failed"
    detail_format = "invalid fields: occurred_at: {}"

    @property
    def extra(self) -> dict[str, object]:
        return {"errors": [{"field": "occurred_at", "message": str(self), "type": "event_time"}]}


class DeliveryReplayed(StateConflict):
    """This webhook delivery id was applied before: nothing is done again (409)."""

    detail_format = "webhook delivery {} was received before; nothing was done"


@dataclass(frozen=True)
class Delivery:
    """Which carrier sent a webhook (verified by its signature) and its delivery id."""

    carrier: str
    delivery_id: str


@dataclass(frozen=True)
class CarrierUpdate:
    """A status report from the carrier about one parcel."""

    tracking_number: str
    status: Literal["in_transit", "delivered", "exception"]
    reason_code: ExceptionCode | None
    reason: str | None
    occurred_at: datetime | None
    trace: Trace
    delivery: Delivery | None = None
    """The signed webhook delivery this update came in (recorded with its effect)."""


@dataclass(frozen=True)
class Dispatched:
    shipment: Shipment
    replayed: bool


@dataclass(frozen=True)
class Updated:
    shipment: Shipment
    changed: bool


class ShippingApplication(ProcessApplication):
    name = "shipping"
    prefetch = by_order(shipment_id_for)

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        carrier: CarrierGateway | None = None,
        clock: Callable[[], datetime] | None = None,
        vault: PersonalDataVault | None = None,
    ) -> None:
        super().__init__(env)
        self.vault = vault or in_process_vault(("contact",))
        """Opens the sealed address, only to hand it to the carrier."""
        self.carrier: CarrierGateway = carrier or SandboxCarrier()
        self.clock = clock or (lambda: datetime.now(UTC))

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_dataclasses(transcoder, ShipmentLine, Address, DeliveryProblem, Trace)

    def close(self) -> None:
        close = getattr(self.carrier, "close", None)
        if close is not None:
            close()
        super().close()

    # -- policy: every reaction is a no-op when its effect happened already -----------------

    @policy(OrderPlaced)
    def _on_placed(self, placed: OrderPlaced, _: InboundMessage, processing: Processing) -> None:
        sid = shipment_id_for(placed.order_id)
        if self.get_for_update(processing, sid, Shipment) is not None:
            return  # redelivered
        shipment = Shipment.create(
            order_id=placed.order_id,
            lines=[ShipmentLine(sku=x.sku, quantity=x.quantity) for x in placed.lines],
            address=Address(**placed.shipping_address.model_dump()),
        )
        processing.collect_events(shipment)
        log.info("shipment awaiting payment", order_id=str(placed.order_id))

    @policy(OrderPaid)
    def _on_paid(self, paid: OrderPaid, _: InboundMessage, processing: Processing) -> None:
        shipment = self.get_for_update(processing, shipment_id_for(paid.order_id), Shipment)
        if shipment is None:
            # OrderPlaced precedes OrderPaid on the same partition, so it was dead-lettered
            # or never published: fail loudly (to the DLQ) rather than drop the payment.
            raise ShipmentNotFound(f"order {paid.order_id} was paid but never seen placed")
        if shipment.start_packing():
            processing.collect_events(shipment)
            log.info("shipment packing", order_id=str(paid.order_id))

    @policy(OrderCancelled, OrderRejected)
    def _on_cancelled(
        self, event: OrderCancelled | OrderRejected, _: InboundMessage, processing: Processing
    ) -> None:
        order_id = event.order_id
        shipment = self.get_for_update(processing, shipment_id_for(order_id), Shipment)
        if shipment is None:
            log.warning("cancelled order has no shipment", order_id=str(order_id))
            return
        if shipment.cancel():
            processing.collect_events(shipment)
            log.info("shipment cancelled", order_id=str(order_id))
        else:
            log.info(
                "order cancelled, shipment unchanged",
                order_id=str(order_id),
                status=str(shipment.status),
            )

    @policy(OrderCancellationRequested)
    def _on_cancellation_requested(
        self, event: OrderCancellationRequested, _: InboundMessage, processing: Processing
    ) -> None:
        """Shipping answers: held (not dispatched: cancelled, then refund and release follow)
        or refused (already left). The shipment's version decides a race with dispatch."""
        order_id = event.order_id
        shipment = self.get_for_update(processing, shipment_id_for(order_id), Shipment)
        if shipment is None:
            # OrderPlaced precedes the request on the same partition: fail loudly (DLQ).
            raise ShipmentNotFound(f"cancellation of order {order_id} never seen placed")
        if shipment.answer_cancellation():
            processing.collect_events(shipment)
            answer = "held" if shipment.status is ShipmentStatus.CANCELLED else "refused"
            SHIPMENTS.labels(f"cancellation_{answer}").inc()
            log.info("cancellation answered", order_id=str(order_id), answer=answer)

    # -- commands -------------------------------------------------------------------------

    def dispatch(
        self, order_id: uuid.UUID, trace: Trace, dispatch_key: str | None = None
    ) -> Dispatched:
        """Book the parcel with the carrier and ship it."""
        self.get_shipment(order_id)  # ShipmentNotFound names the order
        return self.dispatch_shipment(shipment_id_for(order_id), trace, dispatch_key)

    def dispatch_shipment(
        self, shipment_id: uuid.UUID, trace: Trace, dispatch_key: str | None = None
    ) -> Dispatched:
        def attempt() -> Dispatched:
            shipment = self._shipment(shipment_id)
            if dispatch_key is not None and shipment.dispatch_key == dispatch_key:
                return Dispatched(shipment, replayed=True)
            shipment.check_dispatchable()
            try:
                booking = self.carrier.book(
                    idempotency_key=booking_key(shipment.id),
                    shipment_id=shipment.id,
                    address=self.vault.reveal_fields(shipment.address),
                    lines=shipment.lines,
                )
            except TransientCarrierError as exc:
                raise CarrierUnavailable(str(exc)) from exc
            except CarrierError as exc:
                raise CarrierRefused(str(exc)) from exc
            taken = self.find(tracking_index_id_for(booking.tracking_number), TrackingIndex)
            if taken is not None and taken.shipment_id != shipment.id:
                raise CarrierRefused(
                    f"the carrier returned tracking number {booking.tracking_number}, "
                    f"already used by the shipment of order {taken.order_id}"
                )
            shipment.dispatch(
                carrier=booking.carrier,
                tracking_number=booking.tracking_number,
                shipped_at=self.clock(),
                dispatch_key=dispatch_key,
            )
            # IntegrityError: changed meanwhile (e.g. cancelled while booking): look again.
            # The carrier booking is idempotent by shipment, so a retry books the same parcel.
            self.save(shipment, TrackingIndex.create(shipment), trace=trace)
            SHIPMENTS.labels("shipped").inc()
            log.info(
                "shipment shipped",
                order_id=str(shipment.order_id),
                carrier=booking.carrier,
                tracking_number=booking.tracking_number,
            )
            return Dispatched(shipment, replayed=False)

        return execute(attempt, what=f"cannot dispatch: shipment {shipment_id}")

    def dispatch_batch(self, traces: Mapping[uuid.UUID, Trace]) -> list[uuid.UUID]:
        """Dispatch many packing shipments in one transaction (auto-dispatch under load).

        Returns the ids shipped. Any refusal or conflict leaves the batch to
        `dispatch_shipment`, one by one, which reports each problem precisely.
        """
        # Taken from the cache (this call owns them), put back once saved.
        shipments = load_aggregates(self, list(traces), self.aggregate_cache)
        try:
            return self._dispatch_loaded(traces, shipments)
        except BaseException:
            self.aggregate_cache.evict(shipments)
            raise

    def _dispatch_loaded(
        self, traces: Mapping[uuid.UUID, Trace], shipments: dict[uuid.UUID, Any]
    ) -> list[uuid.UUID]:
        bookings = {}
        # The addresses' data keys in one key-store statement, not one per parcel. Only a
        # hint: a key store down fails each reveal below, as it would without it.
        try:
            self.vault.prefetch_fields(
                s.address for s in shipments.values() if isinstance(s, Shipment)
            )
        except Exception as exc:
            log.warning("address keys not prefetched", error=f"{type(exc).__name__}: {exc}")
        for shipment_id in traces:
            shipment = shipments.get(shipment_id)
            if not isinstance(shipment, Shipment):
                raise ShipmentNotFound(str(shipment_id))
            shipment.check_dispatchable()
            try:
                bookings[shipment_id] = self.carrier.book(
                    idempotency_key=booking_key(shipment.id),
                    shipment_id=shipment.id,
                    address=self.vault.reveal_fields(shipment.address),
                    lines=shipment.lines,
                )
            except TransientCarrierError as exc:
                raise CarrierUnavailable(str(exc)) from exc
        taken = load_aggregates(
            self, [tracking_index_id_for(b.tracking_number) for b in bookings.values()]
        )
        if taken:
            raise CarrierRefused("a tracking number is in use already")
        changed: list[Aggregate] = []
        for shipment_id, booking in bookings.items():
            shipment = shipments[shipment_id]
            shipment.dispatch(
                carrier=booking.carrier,
                tracking_number=booking.tracking_number,
                shipped_at=self.clock(),
                dispatch_key=None,
            )
            index = TrackingIndex.create(shipment)
            stamp(traces[shipment_id], [*shipment.pending_events, *index.pending_events])
            changed += [shipment, index]
        self.save(*changed)
        self.aggregate_cache.put(changed)
        SHIPMENTS.labels("shipped").inc(len(bookings))
        return list(bookings)

    def carrier_update(self, update: CarrierUpdate) -> Updated:
        """Apply a carrier's status report; a repeat changes nothing. With a delivery, only
        the carrier of the parcel may report on it, and a delivery id is applied once
        (DeliveryReplayed after that): it is recorded in the same transaction as its effect."""
        index_id = tracking_index_id_for(update.tracking_number)
        delivery = update.delivery

        def attempt() -> Updated:
            marker: list[WebhookDelivery] = []
            if delivery is not None:
                marker_id = webhook_delivery_id_for(delivery.carrier, delivery.delivery_id)
                if self.find(marker_id, WebhookDelivery) is not None:
                    raise DeliveryReplayed(delivery.delivery_id)
                marker.append(
                    WebhookDelivery.receive(
                        delivery.carrier, delivery.delivery_id, update.tracking_number
                    )
                )
            index = self.find(index_id, TrackingIndex)
            if index is None:
                raise UnknownTrackingNumber(update.tracking_number)
            shipment = self._shipment(index.shipment_id)
            if delivery is not None and shipment.carrier != delivery.carrier:
                raise UnknownTrackingNumber(update.tracking_number)  # not this carrier's
            at = update.occurred_at or self.clock()
            self._check_event_time(shipment, at)
            if update.status == "in_transit":
                changed = shipment.report_in_transit(occurred_at=at)
            elif update.status == "delivered":
                changed = shipment.deliver(delivered_at=at)
            else:
                if update.reason_code is None:
                    raise ValueError("a delivery exception needs a reason_code")
                changed = shipment.report_exception(
                    reason_code=update.reason_code,
                    reason=update.reason or f"carrier reported {update.reason_code}",
                    occurred_at=at,
                )
            if not changed:  # nothing to record: a replay of this delivery changes nothing too
                return Updated(shipment, changed=False)
            self.save(shipment, *marker, trace=update.trace)
            if update.status != "in_transit":
                SHIPMENTS.labels("delivered" if update.status == "delivered" else "exception").inc()
            log.info(
                "carrier update applied",
                order_id=str(shipment.order_id),
                status=str(shipment.status),
            )
            return Updated(shipment, changed=True)

        return execute(attempt, what=f"shipment of {update.tracking_number}")

    # -- queries --------------------------------------------------------------------------

    def get_shipment(self, order_id: uuid.UUID) -> Shipment:
        shipment = self.find(shipment_id_for(order_id), Shipment)
        if shipment is None:
            raise ShipmentNotFound(order_id)
        return shipment

    def _check_event_time(self, shipment: Shipment, at: datetime) -> None:
        now = self.clock()
        if at > now + CARRIER_CLOCK_SKEW:
            raise InvalidEventTime(
                f"occurred_at {at.isoformat()} is in the future (now {now.isoformat()})"
            )
        shipped_at = shipment.shipped_at
        if shipped_at is not None and at < shipped_at - CARRIER_CLOCK_SKEW:
            raise InvalidEventTime(
                f"occurred_at {at.isoformat()} is before the parcel shipped "
                f"({shipped_at.isoformat()})"
            )

    def _shipment(self, shipment_id: uuid.UUID) -> Shipment:
        shipment = self.find(shipment_id, Shipment)
        if shipment is None:
            raise ShipmentNotFound(str(shipment_id))
        return shipment


__all__ = [
    "SHIPMENTS",
    "CarrierRefused",
    "CarrierUnavailable",
    "CarrierUpdate",
    "Delivery",
    "DeliveryReplayed",
    "Dispatched",
    "InvalidEventTime",
    "InvalidTransition",
    "ShipmentNotFound",
    "ShippingApplication",
    "UnknownTrackingNumber",
    "Updated",
]
