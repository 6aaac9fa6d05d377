"""The orders application: commands and queries over the Order aggregate."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from eventsourcing.persistence import IntegrityError, JSONTranscoder

from fulfilment_kit.messaging.inbox import InboxApplication
from fulfilment_kit.persistence.transcodings import register_dataclasses
from fulfilment_kit.tracing import Trace
from orders.domain import Address, Order, OrderLine

# Namespace of order ids derived from an Idempotency-Key.
IDEMPOTENCY_NAMESPACE = uuid.UUID("0b7d3f2a-5c1e-4d8b-9f6a-2e4c8a1b3d5f")


class OrderNotFound(LookupError):
    pass


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request."""


@dataclass(frozen=True)
class PlaceOrder:
    customer_id: uuid.UUID
    lines: list[OrderLine]
    currency: str
    shipping_address: Address
    idempotency_key: str | None
    fingerprint: str
    trace: Trace


@dataclass(frozen=True)
class Placed:
    order: Order
    created: bool


class OrdersApplication(InboxApplication):
    name = "orders"

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_dataclasses(transcoder, OrderLine, Address, Trace)

    def place_order(self, command: PlaceOrder) -> Placed:
        """Place an order once per Idempotency-Key: a replay returns the first order."""
        if command.idempotency_key is None:
            order_id = uuid.uuid4()
        else:
            order_id = uuid.uuid5(IDEMPOTENCY_NAMESPACE, command.idempotency_key)
            existing = self._replay(order_id, command)
            if existing is not None:
                return Placed(existing, created=False)
        order = Order.place(
            order_id=order_id,
            customer_id=command.customer_id,
            lines=command.lines,
            currency=command.currency,
            shipping_address=command.shipping_address,
            request_fingerprint=command.fingerprint,
            trace=command.trace,
        )
        try:
            self.save(order)
        except IntegrityError:
            # The same key was placed concurrently: the first one wins.
            existing = self._replay(order_id, command)
            if existing is None:
                raise
            return Placed(existing, created=False)
        return Placed(order, created=True)

    def _replay(self, order_id: uuid.UUID, command: PlaceOrder) -> Order | None:
        try:
            order = self.get_order(order_id)
        except OrderNotFound:
            return None
        if order.request_fingerprint != command.fingerprint:
            raise IdempotencyConflict(
                f"Idempotency-Key {command.idempotency_key!r} was already used "
                "for a different request"
            )
        return order

    def get_order(self, order_id: uuid.UUID) -> Order:
        try:
            order: Order = self.repository.get(order_id)
        except Exception as exc:
            if type(exc).__name__ == "AggregateNotFoundError":
                raise OrderNotFound(str(order_id)) from exc
            raise
        assert isinstance(order, Order)
        return order
