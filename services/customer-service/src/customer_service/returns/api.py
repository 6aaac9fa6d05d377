"""HTTP routes of returns: request, decide (authorise, reject), receive, read."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from customer_service.returns.application import RequestReturn
from customer_service.returns.domain import InspectedItem, ReturnRequest
from customer_service.web import app_of, trace_of
from fulfilment_kit.contracts import InspectedLine, ReturnLine
from fulfilment_kit.contracts.customer_service import ReturnReasonCode
from fulfilment_kit.contracts.types import InputName, InputReasonText, Sku
from fulfilment_kit.http.auth import (
    AGENT,
    CUSTOMER,
    OPS,
    WAREHOUSE,
    Caller,
    IdempotencyKey,
    require,
)
from fulfilment_kit.http.errors import not_found, problem_responses
from fulfilment_kit.http.requests import answer_command, wake_relay
from fulfilment_kit.http.views import view_of
from fulfilment_kit.idempotency import fingerprint

log = structlog.get_logger(__name__)
router = APIRouter(tags=["returns"])

ReturnRequester = Annotated[Caller, Depends(require(CUSTOMER, AGENT, OPS))]
ReturnReader = Annotated[Caller, Depends(require(CUSTOMER, AGENT, WAREHOUSE, OPS))]
ReturnDecider = Depends(require(AGENT, OPS))
ReturnReceiver = Depends(require(WAREHOUSE, OPS))
Name = InputName

# --- requests ---------------------------------------------------------------------------------


class ReturnRequestBody(BaseModel):
    """A customer's return: which units of a delivered order, and why."""

    model_config = ConfigDict(extra="forbid")

    order_id: uuid.UUID
    lines: list[ReturnLine] = Field(min_length=1, max_length=100)
    reason_code: ReturnReasonCode
    comment: InputReasonText | None = None

    @field_validator("lines")
    @classmethod
    def _one_line_per_sku(cls, lines: list[ReturnLine]) -> list[ReturnLine]:
        skus = [line.sku for line in lines]
        repeated = sorted({s for s in skus if skus.count(s) > 1})
        if repeated:
            raise ValueError(
                f"each SKU may appear in one line only; repeated: {', '.join(repeated)}"
            )
        return lines


class AuthoriseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: Name = "agent"


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: InputReasonText
    agent: Name = "agent"


class ReceiptBody(BaseModel):
    """What the warehouse found in the parcel: per SKU, units restockable and damaged."""

    model_config = ConfigDict(extra="forbid")

    lines: list[InspectedLine] = Field(min_length=1, max_length=100)

    @field_validator("lines")
    @classmethod
    def _one_line_per_sku_and_result(cls, lines: list[InspectedLine]) -> list[InspectedLine]:
        keys = [(line.sku, line.result) for line in lines]
        repeated = sorted({f"{s} {r}" for s, r in keys if keys.count((s, r)) > 1})
        if repeated:
            raise ValueError(f"one line per SKU and result; repeated: {', '.join(repeated)}")
        return lines


# --- views ------------------------------------------------------------------------------------


class ReturnLineView(BaseModel):
    sku: Sku
    quantity: int
    unit_price_minor: int


class LabelView(BaseModel):
    label_id: str
    url: str


class ReturnView(BaseModel):
    return_id: uuid.UUID
    order_id: uuid.UUID
    customer_id: uuid.UUID
    status: Literal["requested", "authorised", "rejected", "received"]
    reason_code: str
    reason: str
    lines: list[ReturnLineView]
    currency: str
    rma_number: str | None
    label: LabelView | None
    authorised_by: str | None
    rejection_reason: str | None
    inspected: list[InspectedLine]
    refund_minor: int | None
    requested_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def of(cls, ret: ReturnRequest) -> ReturnView:
        return view_of(
            cls,
            ret,
            return_id=ret.id,
            status=ret.status.value,
            requested_at=ret.created_on,
            updated_at=ret.modified_on,
        )


# --- routes -----------------------------------------------------------------------------------


@router.post(
    "/returns",
    status_code=status.HTTP_201_CREATED,
    response_model=ReturnView,
    responses=problem_responses(
        404,
        409,
        502,
        503,
        s404="Unknown order",
        s409="Not delivered, window closed, or key reused with another body",
        s422="A line names a SKU not in the order or too many units",
        s502="The label service refused the label of an authorised return",
    ),
)
async def request_return(
    body: ReturnRequestBody,
    request: Request,
    response: Response,
    caller: ReturnRequester,
    idempotency_key: IdempotencyKey = None,
) -> ReturnView:
    """Request a return of delivered units; authorised at once when the policy allows.
    A customer returns their own orders only (another customer's order is not found)."""
    if caller.own_only:
        record = await asyncio.to_thread(app_of(request).get_order_record, body.order_id)
        if not caller.owns(record.customer_id):
            raise not_found("order", body.order_id)
    idempotency_key = caller.idempotency_key(idempotency_key)
    command = RequestReturn(
        order_id=body.order_id,
        lines=[(line.sku, line.quantity) for line in body.lines],
        reason_code=body.reason_code,
        comment=body.comment,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint(body),
        trace=trace_of(
            request, f"http:return:{idempotency_key or uuid.uuid4()}", str(body.order_id)
        ),
    )
    done = await asyncio.to_thread(app_of(request).request_return, command)
    ret = done.aggregate
    answer_command(request, response, applied=done.created, location=f"/returns/{ret.id}")
    return ReturnView.of(ret)


@router.get("/returns", response_model=list[ReturnView])
async def list_returns(
    request: Request, caller: ReturnReader, order_id: Annotated[uuid.UUID, Query()]
) -> list[ReturnView]:
    """The returns of one order, oldest first (a customer sees their own only)."""
    returns = await asyncio.to_thread(app_of(request).list_returns, order_id)
    return [ReturnView.of(r) for r in returns if caller.owns(r.customer_id)]


@router.get(
    "/returns/{return_id}",
    response_model=ReturnView,
    responses=problem_responses(404),
)
async def get_return(return_id: uuid.UUID, request: Request, caller: ReturnReader) -> ReturnView:
    ret = await asyncio.to_thread(app_of(request).get_return, return_id)
    if not caller.owns(ret.customer_id):
        raise not_found("return", return_id)
    return ReturnView.of(ret)


@router.post(
    "/returns/{return_id}/authorise",
    response_model=ReturnView,
    dependencies=[ReturnDecider],
    responses=problem_responses(
        404,
        409,
        502,
        503,
        s409="The return is no longer waiting for a decision",
        s502="The label service refused the label",
    ),
)
async def authorise_return(
    return_id: uuid.UUID, request: Request, body: AuthoriseBody | None = None
) -> ReturnView:
    """An agent accepts a return: it gets an RMA number and a prepaid label."""
    body = body or AuthoriseBody()
    trace = trace_of(request, f"http:authorise:{return_id}")
    ret = await asyncio.to_thread(app_of(request).authorise_return, return_id, body.agent, trace)
    wake_relay(request)
    log.info("return authorised", return_id=str(return_id), order_id=str(ret.order_id))
    return ReturnView.of(ret)


@router.post(
    "/returns/{return_id}/reject",
    response_model=ReturnView,
    dependencies=[ReturnDecider],
    responses=problem_responses(404, 409, s409="The return is no longer waiting for a decision"),
)
async def reject_return(return_id: uuid.UUID, body: RejectBody, request: Request) -> ReturnView:
    """An agent refuses a return, with the reason the customer is told."""
    trace = trace_of(request, f"http:reject:{return_id}")
    ret = await asyncio.to_thread(
        app_of(request).reject_return, return_id, body.reason, body.agent, trace
    )
    wake_relay(request)
    log.info("return rejected", return_id=str(return_id), order_id=str(ret.order_id))
    return ReturnView.of(ret)


@router.post(
    "/returns/{return_id}/receipt",
    response_model=ReturnView,
    dependencies=[ReturnReceiver],
    responses=problem_responses(
        404,
        409,
        s409="The return is not authorised, or was received already",
        s422="The inspected units differ from the authorised ones",
    ),
)
async def receive_return(return_id: uuid.UUID, body: ReceiptBody, request: Request) -> ReturnView:
    """The warehouse received the parcel: restockable units go back to stock, money back."""
    inspected = [InspectedItem(x.sku, x.quantity, x.result) for x in body.lines]
    trace = trace_of(request, f"http:receipt:{return_id}")
    ret = await asyncio.to_thread(app_of(request).receive_return, return_id, inspected, trace)
    wake_relay(request)
    log.info("return received", return_id=str(return_id), refund_minor=ret.refund_minor)
    return ReturnView.of(ret)
