"""The orders application: commands, queries and reactions over the Order aggregate."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import IntegrityError, JSONTranscoder

from fulfilment_kit.commands import NotFound, execute
from fulfilment_kit.contracts import (
    PaymentCaptured,
    PaymentFailed,
    ReturnReceived,
    ShipmentCancellationRefused,
    ShipmentCancelled,
    ShipmentDelivered,
    ShipmentShipped,
    StockLocked,
    StockRejected,
)
from fulfilment_kit.idempotency import key_id, recorded, run_idempotently
from fulfilment_kit.messaging.inbox import InboundMessage, ProcessApplication
from fulfilment_kit.messaging.policy import by_order, policy
from fulfilment_kit.persistence.availability import DATABASE_UNAVAILABLE
from fulfilment_kit.persistence.transcodings import register_dataclasses
from fulfilment_kit.privacy import PersonalDataVault, in_process_vault
from fulfilment_kit.privacy.vault import Sealer
from fulfilment_kit.tracing import Trace, stamp
from orders.domain import (
    Address,
    CustomerErasure,
    Order,
    OrderLine,
    ReturnedLine,
    Shortage,
    erasure_id_for,
)

# Namespace of order ids derived from an Idempotency-Key.
IDEMPOTENCY_NAMESPACE = uuid.UUID("0b7d3f2a-5c1e-4d8b-9f6a-2e4c8a1b3d5f")


class OrderNotFound(NotFound, what="order"): ...


@dataclass(frozen=True)
class PlaceOrder:
    customer_id: uuid.UUID
    lines: list[OrderLine]
    currency: str
    shipping_address: Address
    payment_token: str | None
    idempotency_key: str | None
    fingerprint: str
    trace: Trace


@dataclass(frozen=True)
class Erased:
    erasure: CustomerErasure
    created: bool
    keys_destroyed: int


@dataclass(frozen=True)
class Placed:
    order: Order
    created: bool


def _order_id(command: PlaceOrder) -> uuid.UUID:
    """The id of the order `command` places: derived from its Idempotency-Key, else new."""
    return key_id(command.idempotency_key, lambda k: uuid.uuid5(IDEMPOTENCY_NAMESPACE, k))


def _new_order(
    order_id: uuid.UUID, command: PlaceOrder, sealed: tuple[Address, str | None]
) -> Order:
    address, token = sealed
    return Order.place(
        order_id=order_id,
        customer_id=command.customer_id,
        lines=command.lines,
        currency=command.currency,
        shipping_address=address,
        payment_token=token,
        request_fingerprint=command.fingerprint,
    )


def _sealed(sealer: Sealer, command: PlaceOrder) -> tuple[Address, str | None]:
    """The command's address and payment token sealed under the customer's key."""
    address = sealer.seal_fields("contact", command.shipping_address, keep=("country_code",))
    return address, sealer.seal_optional("payment", command.payment_token)


def _outcome(place: Callable[[PlaceOrder], Placed], command: PlaceOrder) -> Placed | Exception:
    try:
        return place(command)
    except Exception as exc:
        return exc


class OrdersApplication(ProcessApplication):
    name = "orders"
    prefetch = by_order()

    def __init__(
        self, env: Mapping[str, str] | None = None, *, vault: PersonalDataVault | None = None
    ) -> None:
        super().__init__(env)
        self.vault = vault or in_process_vault(("contact",))
        """Seals what a customer gives at placement; opens contact data for the order's views."""

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_dataclasses(transcoder, OrderLine, Address, Shortage, ReturnedLine)

    # --- commands ---

    def place_order(self, command: PlaceOrder) -> Placed:
        """Place an order once per Idempotency-Key: a replay returns the first order."""
        order_id = _order_id(command)
        sealed = self._sealed(command)

        def attempt() -> Order:
            order = _new_order(order_id, command, sealed)
            # IntegrityError: the same key was placed concurrently
            self.save(order, trace=command.trace)
            return order

        # The attempt creates the order the key names, so it goes first: a repeated key
        # fails on the order's id and is then replayed; a new order costs no read.
        outcome = run_idempotently(
            replay=lambda: recorded(self.find(order_id, Order), command.fingerprint),
            attempt=attempt,
            replay_first=False,
        )
        return Placed(outcome.result, created=outcome.applied)

    def place_orders(self, commands: Sequence[PlaceOrder]) -> list[Placed | Exception]:
        """Place concurrent requests' orders in one transaction (group commit), their
        customers' keys in one key-store round trip, each as `place_order` would; the
        outcome of each (its Placed, or what it raised).

        A batch saves only new orders: when any of them cannot be saved as new (a repeated
        or concurrently placed key: IntegrityError), each is placed on its own, so every
        replay and conflict is answered as `place_order` answers it. A database that does
        not answer is every command's answer (each would have waited for it in turn)."""
        if len(commands) == 1:
            return [_outcome(self.place_order, commands[0])]
        orders: list[Order] = []
        try:
            try:  # the batch's keys in one key-store round trip
                sealers = self.vault.sealers(command.customer_id for command in commands)
            except DATABASE_UNAVAILABLE:
                raise
            except Exception:  # one customer's own trouble (erased meanwhile): each alone
                return [_outcome(self.place_order, command) for command in commands]
            for command in commands:
                sealed = _sealed(sealers[command.customer_id], command)
                order = _new_order(_order_id(command), command, sealed)
                stamp(command.trace, order.pending_events)
                orders.append(order)
            self.save(*orders)
        except IntegrityError:
            return [_outcome(self.place_order, command) for command in commands]
        except Exception as exc:
            return [exc for _ in commands]
        return [Placed(order, created=True) for order in orders]

    def _sealed(self, command: PlaceOrder) -> tuple[Address, str | None]:
        """The command's personal data sealed before anything stores or publishes it."""
        return _sealed(self.vault.sealer(command.customer_id), command)  # one key-store trip

    def erase_customer(
        self, customer_id: uuid.UUID, requested_by: str, requested_role: str, trace: Trace
    ) -> Erased:
        """Destroy the customer's data keys, then record (and publish) the erasure once."""
        destroyed = self.vault.erase(customer_id)
        recorded = self.find(erasure_id_for(customer_id), CustomerErasure)
        if recorded is not None:
            return Erased(recorded, created=False, keys_destroyed=destroyed)
        erasure = CustomerErasure(customer_id, requested_by, requested_role)
        try:
            self.save(erasure, trace=trace)
        except IntegrityError:  # a concurrent twin recorded it first
            twin = self.find(erasure.id, CustomerErasure)
            assert twin is not None
            return Erased(twin, created=False, keys_destroyed=destroyed)
        return Erased(erasure, created=True, keys_destroyed=destroyed)

    def cancel_order(self, order_id: uuid.UUID, reason: str, trace: Trace) -> tuple[Order, bool]:
        """The customer's cancellation: cancelled at once before payment, requested from
        shipping once paid; (order, whether this call changed it)."""

        def cancel() -> tuple[Order, bool]:
            order = self.get_order(order_id)
            changed = order.cancel(reason)
            if changed:  # IntegrityError: a reaction changed it (e.g. paid): decide again
                self.save(order, trace=trace)
            return order, changed

        return execute(cancel, what=f"order {order_id}")

    def flag_overdue(self, order_id: uuid.UUID, stage: str, deadline_at: datetime) -> bool:
        """Flag an order stuck in `stage` past its deadline; False if it moved on meanwhile."""
        order = self.get_order(order_id)
        if not order.flag_overdue(stage, deadline_at):
            return False
        with suppress(IntegrityError):  # else the order changed meanwhile: the watch looks again
            self.save(order, trace=Trace(str(order_id), f"deadline:{stage}"))
            return True
        return False

    # --- queries ---

    def get_order(self, order_id: uuid.UUID) -> Order:
        order = self.find(order_id, Order)
        if order is None:
            raise OrderNotFound(order_id)
        return order

    # --- reactions ---

    def _order(self, processing: ProcessingEvent[uuid.UUID], order_id: uuid.UUID) -> Order | None:
        return self.get_for_update(processing, order_id, Order)

    @policy(StockLocked)
    def _locked(self, event: StockLocked, message: InboundMessage, processing: Any) -> None:
        if order := self._order(processing, event.order_id):
            order.stock_locked()
            processing.collect_events(order)

    @policy(StockRejected)
    def _rejected(self, event: StockRejected, message: InboundMessage, processing: Any) -> None:
        if order := self._order(processing, event.order_id):
            shortages = [Shortage(s.sku, s.requested, s.available) for s in event.shortages]
            order.stock_rejected(shortages)
            processing.collect_events(order)

    @policy(PaymentCaptured)
    def _captured(self, event: PaymentCaptured, message: InboundMessage, processing: Any) -> None:
        if order := self._order(processing, event.order_id):
            order.payment_captured(event.amount_minor)
            processing.collect_events(order)

    @policy(PaymentFailed)
    def _failed(self, event: PaymentFailed, message: InboundMessage, processing: Any) -> None:
        if order := self._order(processing, event.order_id):
            order.payment_failed(event.reason_code)
            processing.collect_events(order)

    @policy(ShipmentShipped)
    def _shipped(self, event: ShipmentShipped, message: InboundMessage, processing: Any) -> None:
        if order := self._order(processing, event.order_id):
            order.shipment_shipped(event.carrier, event.tracking_number)
            processing.collect_events(order)

    @policy(ShipmentCancelled)
    def _held(self, event: ShipmentCancelled, message: InboundMessage, processing: Any) -> None:
        if order := self._order(processing, event.order_id):
            order.shipment_cancelled()
            processing.collect_events(order)

    @policy(ShipmentCancellationRefused)
    def _refused(
        self, event: ShipmentCancellationRefused, message: InboundMessage, processing: Any
    ) -> None:
        if order := self._order(processing, event.order_id):
            order.cancellation_refused()
            processing.collect_events(order)

    @policy(ShipmentDelivered)
    def _delivered(
        self, event: ShipmentDelivered, message: InboundMessage, processing: Any
    ) -> None:
        if order := self._order(processing, event.order_id):
            order.shipment_delivered()
            processing.collect_events(order)

    @policy(ReturnReceived)
    def _returned(self, event: ReturnReceived, message: InboundMessage, processing: Any) -> None:
        if order := self._order(processing, event.order_id):
            back: dict[str, int] = {}
            for line in event.lines:  # restockable and damaged units alike came back
                back[line.sku] = back.get(line.sku, 0) + line.quantity
            lines = [ReturnedLine(sku, quantity) for sku, quantity in back.items()]
            if order.return_received(event.return_id, lines, event.refund_minor):
                processing.collect_events(order)
