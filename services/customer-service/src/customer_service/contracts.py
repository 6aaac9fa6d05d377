"""Maps customer service's private domain events to public integration events; the others
(the order replica, assignments, notes) stay private."""

from __future__ import annotations

from typing import Any

from customer_service.cases.domain import Case
from customer_service.returns.domain import ReturnRequest, reason_text
from fulfilment_kit.contracts import (
    CaseOpened,
    CaseResolved,
    CaseSlaBreached,
    InspectedLine,
    ReturnAuthorised,
    ReturnLine,
    ReturnReceived,
    ReturnRejected,
    ReturnRequested,
)
from fulfilment_kit.messaging.public import AGGREGATE_ID, RECORDED_AT, PublicEvents

to_public = PublicEvents()
ORDER = "order_id customer_id"
"""Every return and case event names the order and its customer."""


def _reason(e: Any) -> str:
    return reason_text(e.reason_code, e.comment)


def _return_lines(e: Any) -> list[ReturnLine]:
    return [ReturnLine(sku=x.sku, quantity=x.quantity) for x in e.lines]


def _inspected_lines(e: Any) -> list[InspectedLine]:
    return [InspectedLine(sku=x.sku, quantity=x.quantity, result=x.result) for x in e.lines]


to_public.copy(
    ReturnRequest.Requested,
    ReturnRequested,
    f"{ORDER} reason_code",
    return_id=AGGREGATE_ID,
    lines=_return_lines,
    reason=_reason,
    requested_at=RECORDED_AT,
)
to_public.copy(
    ReturnRequest.Authorised,
    ReturnAuthorised,
    f"{ORDER} rma_number",
    return_id=AGGREGATE_ID,
    authorised_at=RECORDED_AT,
)
to_public.copy(
    ReturnRequest.Rejected,
    ReturnRejected,
    f"{ORDER} reason",
    return_id=AGGREGATE_ID,
    rejected_at=RECORDED_AT,
)
to_public.copy(
    ReturnRequest.Received,
    ReturnReceived,
    f"{ORDER} rma_number refund_minor currency",
    return_id=AGGREGATE_ID,
    lines=_inspected_lines,
    received_at=RECORDED_AT,
)
to_public.copy(
    Case.Opened,
    CaseOpened,
    f"{ORDER} kind priority summary opened_at first_response_due_at resolution_due_at",
    case_id=AGGREGATE_ID,
)
to_public.copy(
    Case.Resolved, CaseResolved, f"{ORDER} outcome note resolved_at", case_id=AGGREGATE_ID
)
to_public.copy(
    Case.SlaBreached,
    CaseSlaBreached,
    f"{ORDER} kind priority sla due_at breached_at",
    case_id=AGGREGATE_ID,
)
