"""Maps customer service's private domain events to public integration events."""

from __future__ import annotations

from collections.abc import Sequence
from functools import singledispatch
from typing import Any

from customer_service.cases.domain import Case
from customer_service.returns.domain import ReturnRequest, reason_text
from fulfilment_kit.contracts import (
    CaseOpened,
    CaseResolved,
    CaseSlaBreached,
    InspectedLine,
    IntegrationEvent,
    ReturnAuthorised,
    ReturnLine,
    ReturnReceived,
    ReturnRejected,
    ReturnRequested,
)
from fulfilment_kit.messaging.relay import EventToPublish


@singledispatch
def to_public(domain_event: Any) -> Sequence[EventToPublish]:
    """Domain events not listed below stay private (the order replica, assignments, notes)."""
    return ()


def _out(public: IntegrationEvent, e: Any) -> Sequence[EventToPublish]:
    return (EventToPublish(public, e.trace.correlation_id, e.trace.causation_id),)


@to_public.register(ReturnRequest.Requested)
def _requested(e: Any) -> Sequence[EventToPublish]:
    requested = ReturnRequested(
        order_id=e.order_id,
        customer_id=e.customer_id,
        return_id=e.originator_id,
        lines=[ReturnLine(sku=x.sku, quantity=x.quantity) for x in e.lines],
        reason=reason_text(e.reason_code, e.comment),
        reason_code=e.reason_code,
        requested_at=e.timestamp,
    )
    return _out(requested, e)


@to_public.register(ReturnRequest.Authorised)
def _authorised(e: Any) -> Sequence[EventToPublish]:
    authorised = ReturnAuthorised(
        order_id=e.order_id,
        customer_id=e.customer_id,
        return_id=e.originator_id,
        rma_number=e.rma_number,
        authorised_at=e.timestamp,
    )
    return _out(authorised, e)


@to_public.register(ReturnRequest.Rejected)
def _rejected(e: Any) -> Sequence[EventToPublish]:
    rejected = ReturnRejected(
        order_id=e.order_id,
        customer_id=e.customer_id,
        return_id=e.originator_id,
        reason=e.reason,
        rejected_at=e.timestamp,
    )
    return _out(rejected, e)


@to_public.register(ReturnRequest.Received)
def _received(e: Any) -> Sequence[EventToPublish]:
    received = ReturnReceived(
        order_id=e.order_id,
        customer_id=e.customer_id,
        return_id=e.originator_id,
        rma_number=e.rma_number,
        lines=[InspectedLine(sku=x.sku, quantity=x.quantity, result=x.result) for x in e.lines],
        refund_minor=e.refund_minor,
        currency=e.currency,
        received_at=e.timestamp,
    )
    return _out(received, e)


@to_public.register(Case.Opened)
def _opened(e: Any) -> Sequence[EventToPublish]:
    opened = CaseOpened(
        case_id=e.originator_id,
        order_id=e.order_id,
        customer_id=e.customer_id,
        kind=e.kind,
        priority=e.priority,
        summary=e.summary,
        opened_at=e.opened_at,
        first_response_due_at=e.first_response_due_at,
        resolution_due_at=e.resolution_due_at,
    )
    return _out(opened, e)


@to_public.register(Case.Resolved)
def _resolved(e: Any) -> Sequence[EventToPublish]:
    resolved = CaseResolved(
        case_id=e.originator_id,
        order_id=e.order_id,
        customer_id=e.customer_id,
        outcome=e.outcome,
        note=e.note,
        resolved_at=e.resolved_at,
    )
    return _out(resolved, e)


@to_public.register(Case.SlaBreached)
def _breached(e: Any) -> Sequence[EventToPublish]:
    breached = CaseSlaBreached(
        case_id=e.originator_id,
        order_id=e.order_id,
        customer_id=e.customer_id,
        kind=e.kind,
        priority=e.priority,
        sla=e.sla,
        due_at=e.due_at,
        breached_at=e.breached_at,
    )
    return _out(breached, e)
