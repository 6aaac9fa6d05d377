"""The customer-service application: returns and cases (commands, queries) and the policy
reacting to the other services' events.

Policy (runs in the inbox's worker thread, one transaction per batch with its tracking):
- OrderPlaced / OrderDelivered / OrderCancelled / OrderRejected keep the local `OrderRecord`
  replica that return requests are verified against.
- ShipmentException, OrderFlagged, PaymentFailed and PaymentUnresolved (a capture whose
  outcome stayed unknown past the deadline) open a case whose id is derived from the cause,
  the order id and how many such cases ended before: one active case per cause and order, a
  new one once it was resolved or closed, and a redelivered message opens none.
- The cancellation protocol's events (cancellation requested, shipment cancelled, refused)
  need no reaction here: the replica ends on OrderCancelled; the timeline shows them all.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import JSONTranscoder

from customer_service.cases.application import CaseCommands
from customer_service.cases.directory import CaseDirectory
from customer_service.cases.domain import Case, Note, SlaPolicy, case_id_for
from customer_service.returns.application import ReturnCommands
from customer_service.returns.domain import (
    InspectedItem,
    Label,
    OrderedLine,
    OrderRecord,
    ReturnItem,
    ReturnPolicy,
    ReturnRequest,
    order_record_id,
)
from customer_service.returns.labels import LabelGateway, SandboxLabels
from fulfilment_kit.contracts import (
    OrderCancelled,
    OrderDelivered,
    OrderFlagged,
    OrderPlaced,
    OrderRejected,
    PaymentFailed,
    PaymentUnresolved,
    ShipmentException,
)
from fulfilment_kit.messaging.inbox import InboundMessage
from fulfilment_kit.messaging.policy import by_order, policy
from fulfilment_kit.persistence.moved import moved_from
from fulfilment_kit.persistence.transcodings import register_dataclasses

log = structlog.get_logger(__name__)

# Events and values stored before returns and cases had their own packages name this module.
moved_from(
    "customer_service.domain",
    OrderRecord,
    ReturnRequest,
    Case,
    OrderedLine,
    ReturnItem,
    InspectedItem,
    Label,
    Note,
)


class CustomerServiceApplication(ReturnCommands, CaseCommands):
    name = "customer-service"
    prefetch = by_order(order_record_id)

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        return_policy: ReturnPolicy | None = None,
        sla: SlaPolicy | None = None,
        labels: LabelGateway | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(env)
        self.return_policy = return_policy or ReturnPolicy()
        self.sla = sla or SlaPolicy()
        self.labels: LabelGateway = labels if labels is not None else SandboxLabels()
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.cases = CaseDirectory(self)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_dataclasses(transcoder, OrderedLine, ReturnItem, InspectedItem, Label, Note)

    # -- policy (Kafka): every change goes on `processing`, saved with the tracking record --

    def _order(self, processing: ProcessingEvent[UUID], order_id: UUID) -> OrderRecord | None:
        return self.get_for_update(processing, order_record_id(order_id), OrderRecord)

    @policy(OrderPlaced)
    def _placed(self, event: OrderPlaced, message: InboundMessage, processing: Any) -> None:
        if self._order(processing, event.order_id) is not None:
            return  # known already (a redelivery at a new offset)
        record = OrderRecord.place(
            order_id=event.order_id,
            customer_id=event.customer_id,
            lines=[OrderedLine(x.sku, x.quantity, x.unit_price_minor) for x in event.lines],
            currency=event.currency,
        )
        processing.collect_events(record)

    @policy(OrderDelivered)
    def _delivered(self, event: OrderDelivered, message: InboundMessage, processing: Any) -> None:
        if (record := self._order(processing, event.order_id)) and record.deliver(
            event.delivered_at
        ):
            processing.collect_events(record)

    @policy(OrderCancelled)
    def _cancelled(self, event: OrderCancelled, message: InboundMessage, processing: Any) -> None:
        if (record := self._order(processing, event.order_id)) and record.end_undelivered(
            "cancelled"
        ):
            processing.collect_events(record)

    @policy(OrderRejected)
    def _rejected(self, event: OrderRejected, message: InboundMessage, processing: Any) -> None:
        if (record := self._order(processing, event.order_id)) and record.end_undelivered(
            "rejected"
        ):
            processing.collect_events(record)

    @policy(ShipmentException)
    def _delivery_exception(
        self, event: ShipmentException, message: InboundMessage, processing: Any
    ) -> None:
        summary = f"delivery exception ({event.reason_code}): {event.reason}"
        self._open_automatically("delivery_exception", "high", summary, event, message, processing)

    @policy(OrderFlagged)
    def _stuck(self, event: OrderFlagged, message: InboundMessage, processing: Any) -> None:
        summary = (
            f"order stuck in {event.stage} since {event.stage_entered_at.isoformat()} "
            f"(deadline {event.deadline_at.isoformat()})"
        )
        self._open_automatically("stuck_order", "high", summary, event, message, processing)

    @policy(PaymentFailed)
    def _failed(self, event: PaymentFailed, message: InboundMessage, processing: Any) -> None:
        summary = f"payment of {event.amount_minor} {event.currency} failed: {event.reason_code}"
        self._open_automatically("payment_problem", "normal", summary, event, message, processing)

    @policy(PaymentUnresolved)
    def _payment_unresolved(
        self, event: PaymentUnresolved, message: InboundMessage, processing: Any
    ) -> None:
        summary = (
            f"payment of {event.amount_minor} {event.currency}: the provider's answer is unknown "
            f"since {event.unknown_since.isoformat()} ({event.lookups} lookups); the card may "
            "have been charged"
        )
        self._open_automatically("payment_problem", "high", summary, event, message, processing)

    def _open_automatically(
        self,
        kind: str,
        priority: str,
        summary: str,
        event: ShipmentException | OrderFlagged | PaymentFailed | PaymentUnresolved,
        message: InboundMessage,
        processing: ProcessingEvent[UUID],
    ) -> None:
        """Open the case `event` calls for, of the event's order (and customer, else the one
        the order record names)."""
        order_id, customer_id = event.order_id, getattr(event, "customer_id", None)
        # One active case per cause and order; a new one once the previous one has ended.
        for generation in itertools.count():
            case_id = case_id_for(kind, order_id, generation)
            existing = self.get_for_update(processing, case_id, Case)
            if existing is None:
                break
            if existing.active or existing.opened_by == message.envelope.id:
                return  # the cause has its case (or this message opened one: a redelivery)
        if customer_id is None and (record := self._order(processing, order_id)):
            customer_id = record.customer_id
        case = Case.open(
            case_id=case_id,
            kind=kind,
            priority=priority,
            summary=summary[:500],
            order_id=order_id,
            customer_id=customer_id,
            opened_at=self.clock(),
            sla=self.sla,
            opened_by=message.envelope.id,
        )
        processing.collect_events(case)
        log.info("case opened", case_id=str(case_id), kind=kind, order_id=str(order_id))
