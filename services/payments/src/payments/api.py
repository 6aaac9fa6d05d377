"""HTTP entrypoint: the payment of an order, and goodwill refunds."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict

from fulfilment_kit.contracts.types import PositiveMinorAmount
from fulfilment_kit.http.auth import AGENT, FINANCE, OPS, Caller, IdempotencyKey, require
from fulfilment_kit.http.errors import problem_responses
from fulfilment_kit.http.requests import answer_command, app_of, trace_of
from fulfilment_kit.http.views import view_of
from payments.application import PaymentsApplication, RequestRefund
from payments.domain import Payment, Refund

log = structlog.get_logger(__name__)
router = APIRouter(tags=["payments"])

PaymentStatusName = Literal[
    "awaiting_order",
    "awaiting_stock",
    "authorising",
    "unknown",
    "captured",
    "failed",
    "cancelled",
    "voided",
    "refunded",
    "partially_refunded",
]


class RefundRequest(BaseModel):
    """A goodwill refund of part (or all) of what was captured and not yet refunded."""

    model_config = ConfigDict(extra="forbid")

    amount_minor: PositiveMinorAmount
    reason: Literal["goodwill"]


class RefundView(BaseModel):
    refund_id: uuid.UUID
    amount_minor: int
    reason: str
    refunded_at: datetime

    @classmethod
    def of(cls, refund: Refund) -> RefundView:
        return view_of(cls, refund)


class PaymentView(BaseModel):
    """The payment of an order. Never includes the payment token."""

    order_id: uuid.UUID
    payment_id: uuid.UUID
    status: PaymentStatusName
    amount_minor: int | None
    currency: str | None
    captured_minor: int
    refunded_minor: int
    refunds: list[RefundView]
    failure_reason: str | None
    pending_refund_minor: int = 0
    """Refunds requested and not confirmed by the provider yet."""

    @classmethod
    def of(cls, payment: Payment) -> PaymentView:
        return view_of(cls, payment, payment_id=payment.id, status=payment.status.value)


class RefundCreated(RefundView):
    order_id: uuid.UUID
    payment_id: uuid.UUID
    refunded_minor: int
    refundable_minor: int


PaymentReader = Annotated[Caller, Depends(require(FINANCE, AGENT, OPS))]
Refunder = Annotated[Caller, Depends(require(FINANCE))]


@router.get(
    "/payments/{order_id}",
    response_model=PaymentView,
    responses=problem_responses(404, s404="No payment for this order"),
)
async def get_payment(order_id: uuid.UUID, request: Request, _: PaymentReader) -> PaymentView:
    payment = await asyncio.to_thread(app_of(request, PaymentsApplication).get_payment, order_id)
    return PaymentView.of(payment)


@router.post(
    "/payments/{order_id}/refunds",
    status_code=status.HTTP_201_CREATED,
    response_model=RefundCreated,
    responses=problem_responses(
        404,
        409,
        502,
        503,
        s404="No payment for this order",
        s409="Not captured, more than refundable, or Idempotency-Key reused",
        s502="The payment provider refused the refund",
        s503="Payment provider or database unavailable: a refund is recorded and will be made; "
        "retry with the same key to see it",
    ),
)
async def refund(
    order_id: uuid.UUID,
    body: RefundRequest,
    request: Request,
    response: Response,
    caller: Refunder,
    idempotency_key: IdempotencyKey = None,
) -> RefundCreated:
    """Refund money of a captured payment. The same Idempotency-Key returns the same refund."""
    idempotency_key = caller.idempotency_key(idempotency_key)
    command = RequestRefund(
        order_id=order_id,
        amount_minor=body.amount_minor,
        reason=body.reason,
        idempotency_key=idempotency_key,
        trace=trace_of(request, key=idempotency_key),
    )
    issued = await asyncio.to_thread(app_of(request, PaymentsApplication).refund, command)
    location = f"/payments/{order_id}"
    if answer_command(request, response, applied=issued.created, location=location):
        log.info("refund issued", order_id=str(order_id), amount_minor=body.amount_minor)
    payment = issued.payment
    return RefundCreated(
        **RefundView.of(issued.refund).model_dump(),
        order_id=payment.order_id,
        payment_id=payment.id,
        refunded_minor=payment.refunded_minor,
        refundable_minor=payment.refundable_minor,
    )
