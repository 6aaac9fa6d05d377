"""HTTP entrypoint: returns (request, decide, receive) and support cases for agents."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal, TypeVar

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, field_validator

from customer_service.application import (
    CaseNotFound,
    CustomerServiceApplication,
    OpenCase,
    OrderNotFound,
    RequestReturn,
    ReturnNotFound,
)
from customer_service.clock import ServiceClock
from customer_service.domain import (
    Case,
    InspectedItem,
    InvalidCase,
    InvalidReturn,
    InvalidTransition,
    ReturnNotAllowed,
    ReturnRequest,
)
from customer_service.gateway import LabelError, TransientLabelError
from fulfilment_kit.contracts import InspectedLine, ReturnLine
from fulfilment_kit.contracts.customer_service import CaseKind, CasePriority, ReturnReasonCode
from fulfilment_kit.contracts.types import InputName, InputReasonText, NoControlCharacters, Sku
from fulfilment_kit.http.auth import AGENT, CUSTOMER, OPS, WAREHOUSE, Caller, require
from fulfilment_kit.http.errors import ProblemError, conflict, not_found, problem_responses
from fulfilment_kit.http.pagination import (
    DEFAULT_PAGE_SIZE,
    LINK_HEADER,
    PageSize,
    set_next_link,
)
from fulfilment_kit.idempotency import ConcurrentUpdate, IdempotencyConflict, fingerprint
from fulfilment_kit.tracing import Trace

log = structlog.get_logger(__name__)
router = APIRouter()
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


async def loopback_only(request: Request) -> None:
    """The test clock answers only callers on this machine (it is for tests, never exposed)."""
    client = request.client.host if request.client else None
    if client not in LOOPBACK:
        raise not_found("route", request.url.path)


clock_router = APIRouter(
    tags=["test clock"], dependencies=[Depends(loopback_only), Depends(require(OPS))]
)

ReturnRequester = Annotated[Caller, Depends(require(CUSTOMER, AGENT, OPS))]
ReturnReader = Annotated[Caller, Depends(require(CUSTOMER, AGENT, WAREHOUSE, OPS))]
ReturnDecider = Depends(require(AGENT, OPS))
ReturnReceiver = Depends(require(WAREHOUSE, OPS))
CaseWorker = Annotated[Caller, Depends(require(AGENT, OPS))]

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
]
Name = InputName
R = TypeVar("R")

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


class OpenCaseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: CaseKind
    priority: CasePriority = "normal"
    summary: InputReasonText
    order_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee: Name


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    author: Name
    text: Annotated[
        str,
        Strict(),
        StringConstraints(min_length=1, max_length=5000),
        NoControlCharacters(multiline=True),
    ]


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal["answered", "refunded", "replaced", "no_action", "duplicate"]
    note: InputReasonText | None = None


class AdvanceClockBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advance_s: Annotated[float, Field(gt=0, le=10 * 365 * 86400)]


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
        return cls(
            return_id=ret.id,
            order_id=ret.order_id,
            customer_id=ret.customer_id,
            status=ret.status.value,
            reason_code=ret.reason_code,
            reason=ret.reason,
            lines=[ReturnLineView(**item.__dict__) for item in ret.lines],
            currency=ret.currency,
            rma_number=ret.rma_number,
            label=LabelView(**ret.label.__dict__) if ret.label else None,
            authorised_by=ret.authorised_by,
            rejection_reason=ret.rejection_reason,
            inspected=[
                InspectedLine(sku=x.sku, quantity=x.quantity, result=x.result)  # type: ignore[arg-type]
                for x in ret.inspected
            ],
            refund_minor=ret.refund_minor,
            requested_at=ret.created_on,
            updated_at=ret.modified_on,
            version=ret.version,
        )


class NoteView(BaseModel):
    author: str
    text: str
    at: datetime


class CaseView(BaseModel):
    case_id: uuid.UUID
    kind: str
    priority: str
    status: Literal["open", "in_progress", "resolved", "closed"]
    summary: str
    order_id: uuid.UUID | None
    customer_id: uuid.UUID | None
    assignee: str | None
    notes: list[NoteView]
    opened_at: datetime
    first_response_due_at: datetime
    resolution_due_at: datetime
    first_response_at: datetime | None
    outcome: str | None
    resolution_note: str | None
    resolved_at: datetime | None
    closed_at: datetime | None
    sla_breached: list[str]
    version: int

    @classmethod
    def of(cls, case: Case) -> CaseView:
        return cls(
            case_id=case.id,
            kind=case.kind,
            priority=case.priority,
            status=case.status.value,
            summary=case.summary,
            order_id=case.order_id,
            customer_id=case.customer_id,
            assignee=case.assignee,
            notes=[NoteView(**note.__dict__) for note in case.notes],
            opened_at=case.opened_at,
            first_response_due_at=case.first_response_due_at,
            resolution_due_at=case.resolution_due_at,
            first_response_at=case.first_response_at,
            outcome=case.outcome,
            resolution_note=case.resolution_note,
            resolved_at=case.resolved_at,
            closed_at=case.closed_at,
            sla_breached=list(case.breached),
            version=case.version,
        )


class ClockView(BaseModel):
    now: datetime
    offset_s: float


# --- helpers ----------------------------------------------------------------------------------


def _app(request: Request) -> CustomerServiceApplication:
    app = request.app.state.runtime.app
    assert isinstance(app, CustomerServiceApplication)
    return app


def _trace(request: Request, cause: str, correlation_id: str | None = None) -> Trace:
    """The caller's X-Correlation-Id, else `correlation_id`; when both are missing the
    application correlates by the order (or case) the command is about."""
    return Trace(
        correlation_id=request.headers.get("x-correlation-id") or correlation_id or "",
        causation_id=cause,
    )


def _invalid_return(exc: InvalidReturn) -> ProblemError:
    field = f"lines[{exc.line}]" if exc.line is not None else "lines"
    return ProblemError(
        422,
        "Invalid return",
        str(exc),
        errors=[{"field": field, "message": str(exc), "type": "return_line"}],
    )


async def _run(request: Request, call: Callable[[], R], what: str, ident: object) -> R:
    """Run an application command off the event loop and translate its errors."""
    try:
        return await asyncio.to_thread(call)
    except (ReturnNotFound, CaseNotFound, OrderNotFound) as exc:
        raise not_found(what, ident) from exc
    except (InvalidTransition, ReturnNotAllowed, ConcurrentUpdate, IdempotencyConflict) as exc:
        raise conflict(str(exc)) from exc
    except InvalidReturn as exc:
        raise _invalid_return(exc) from exc
    except InvalidCase as exc:
        raise ProblemError(422, "Invalid case", str(exc)) from exc
    except TransientLabelError as exc:
        raise ProblemError(
            503, "Label service unavailable", f"no return label could be created, retry: {exc}"
        ) from exc
    except LabelError as exc:
        raise ProblemError(502, "Label refused", str(exc)) from exc


def _wake(request: Request) -> None:
    request.app.state.runtime.relay.wake()


# --- returns ----------------------------------------------------------------------------------


@router.post(
    "/returns",
    status_code=status.HTTP_201_CREATED,
    response_model=ReturnView,
    tags=["returns"],
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
        record = await _run(
            request, lambda: _app(request).get_order_record(body.order_id), "order", body.order_id
        )
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
        trace=_trace(request, f"http:return:{idempotency_key or uuid.uuid4()}", str(body.order_id)),
    )
    done = await _run(
        request, lambda: _app(request).request_return(command), "order", body.order_id
    )
    ret = done.aggregate
    if done.created:
        _wake(request)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/returns/{ret.id}"
    return ReturnView.of(ret)


@router.get("/returns", response_model=list[ReturnView], tags=["returns"])
async def list_returns(
    request: Request, caller: ReturnReader, order_id: Annotated[uuid.UUID, Query()]
) -> list[ReturnView]:
    """The returns of one order, oldest first (a customer sees their own only)."""
    returns = await asyncio.to_thread(_app(request).list_returns, order_id)
    return [ReturnView.of(r) for r in returns if caller.owns(r.customer_id)]


@router.get(
    "/returns/{return_id}",
    response_model=ReturnView,
    tags=["returns"],
    responses=problem_responses(404),
)
async def get_return(return_id: uuid.UUID, request: Request, caller: ReturnReader) -> ReturnView:
    ret = await _run(request, lambda: _app(request).get_return(return_id), "return", return_id)
    if not caller.owns(ret.customer_id):
        raise not_found("return", return_id)
    return ReturnView.of(ret)


@router.post(
    "/returns/{return_id}/authorise",
    response_model=ReturnView,
    tags=["returns"],
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
    trace = _trace(request, f"http:authorise:{return_id}")
    ret = await _run(
        request,
        lambda: _app(request).authorise_return(return_id, body.agent, trace),
        "return",
        return_id,
    )
    _wake(request)
    log.info("return authorised", return_id=str(return_id), order_id=str(ret.order_id))
    return ReturnView.of(ret)


@router.post(
    "/returns/{return_id}/reject",
    response_model=ReturnView,
    tags=["returns"],
    dependencies=[ReturnDecider],
    responses=problem_responses(404, 409, s409="The return is no longer waiting for a decision"),
)
async def reject_return(return_id: uuid.UUID, body: RejectBody, request: Request) -> ReturnView:
    """An agent refuses a return, with the reason the customer is told."""
    trace = _trace(request, f"http:reject:{return_id}")
    ret = await _run(
        request,
        lambda: _app(request).reject_return(return_id, body.reason, body.agent, trace),
        "return",
        return_id,
    )
    _wake(request)
    log.info("return rejected", return_id=str(return_id), order_id=str(ret.order_id))
    return ReturnView.of(ret)


@router.post(
    "/returns/{return_id}/receipt",
    response_model=ReturnView,
    tags=["returns"],
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
    trace = _trace(request, f"http:receipt:{return_id}")
    ret = await _run(
        request,
        lambda: _app(request).receive_return(return_id, inspected, trace),
        "return",
        return_id,
    )
    _wake(request)
    log.info("return received", return_id=str(return_id), refund_minor=ret.refund_minor)
    return ReturnView.of(ret)


# --- cases ------------------------------------------------------------------------------------


@router.get(
    "/cases",
    response_model=list[CaseView],
    tags=["cases"],
    responses={200: {"description": "A page of cases", "headers": LINK_HEADER}},
)
async def list_cases(
    request: Request,
    response: Response,
    _: CaseWorker,
    status: Annotated[Literal["open", "in_progress", "resolved", "closed"] | None, Query()] = None,
    kind: Annotated[CaseKind | None, Query()] = None,
    assignee: Annotated[InputName | None, Query()] = None,
    order_id: Annotated[uuid.UUID | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=10**9, description="cases to skip")] = 0,
    limit: PageSize = DEFAULT_PAGE_SIZE,
) -> list[CaseView]:
    """Cases, oldest first, filtered by status, kind, assignee and order; a page at a time
    (follow `Link: rel="next"`)."""
    cases = await asyncio.to_thread(
        lambda: _app(request).list_cases(
            status=status, kind=kind, assignee=assignee, order_id=order_id
        )
    )
    page = cases[offset : offset + limit]
    more = len(cases) > offset + limit
    set_next_link(request, response, {"offset": offset + limit} if more else None)
    return [CaseView.of(c) for c in page]


@router.get(
    "/cases/{case_id}", response_model=CaseView, tags=["cases"], responses=problem_responses(404)
)
async def get_case(case_id: uuid.UUID, request: Request, _: CaseWorker) -> CaseView:
    case = await _run(request, lambda: _app(request).get_case(case_id), "case", case_id)
    return CaseView.of(case)


@router.post(
    "/cases",
    status_code=status.HTTP_201_CREATED,
    response_model=CaseView,
    tags=["cases"],
    responses=problem_responses(
        404, 409, s409="Idempotency-Key reused with a different body", s422="Invalid case"
    ),
)
async def open_case(
    body: OpenCaseBody,
    request: Request,
    response: Response,
    caller: CaseWorker,
    idempotency_key: IdempotencyKey = None,
) -> CaseView:
    """Open a case by hand (an inquiry, a complaint, ...), with deadlines from its priority."""
    idempotency_key = caller.idempotency_key(idempotency_key)
    command = OpenCase(
        kind=body.kind,
        priority=body.priority,
        summary=body.summary,
        order_id=body.order_id,
        customer_id=body.customer_id,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint(body),
        trace=_trace(
            request,
            f"http:case:{idempotency_key or uuid.uuid4()}",
            str(body.order_id) if body.order_id else None,
        ),
    )
    done = await _run(request, lambda: _app(request).open_case(command), "case", "")
    if done.created:
        _wake(request)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/cases/{done.aggregate.id}"
    return CaseView.of(done.aggregate)


def _case_trace(request: Request, case_id: uuid.UUID, action: str) -> Trace:
    return _trace(request, f"http:{action}:{case_id}:{uuid.uuid4()}")


@router.post(
    "/cases/{case_id}/assign",
    response_model=CaseView,
    tags=["cases"],
    responses=problem_responses(404, 409),
)
async def assign_case(
    case_id: uuid.UUID, body: AssignBody, request: Request, _: CaseWorker
) -> CaseView:
    trace = _case_trace(request, case_id, "assign")
    case = await _run(
        request, lambda: _app(request).assign_case(case_id, body.assignee, trace), "case", case_id
    )
    return CaseView.of(case)


@router.post(
    "/cases/{case_id}/comments",
    response_model=CaseView,
    tags=["cases"],
    responses=problem_responses(404, 409),
)
async def comment_case(
    case_id: uuid.UUID, body: CommentBody, request: Request, _: CaseWorker
) -> CaseView:
    """An agent's note; the first one is the case's first response."""
    trace = _case_trace(request, case_id, "comment")
    case = await _run(
        request,
        lambda: _app(request).comment_case(case_id, body.author, body.text, trace),
        "case",
        case_id,
    )
    return CaseView.of(case)


@router.post(
    "/cases/{case_id}/resolve",
    response_model=CaseView,
    tags=["cases"],
    responses=problem_responses(404, 409),
)
async def resolve_case(
    case_id: uuid.UUID, body: ResolveBody, request: Request, _: CaseWorker
) -> CaseView:
    trace = _case_trace(request, case_id, "resolve")
    case = await _run(
        request,
        lambda: _app(request).resolve_case(case_id, body.outcome, body.note, trace),
        "case",
        case_id,
    )
    _wake(request)
    return CaseView.of(case)


@router.post(
    "/cases/{case_id}/close",
    response_model=CaseView,
    tags=["cases"],
    responses=problem_responses(404, 409),
)
async def close_case(case_id: uuid.UUID, request: Request, _: CaseWorker) -> CaseView:
    trace = _case_trace(request, case_id, "close")
    case = await _run(request, lambda: _app(request).close_case(case_id, trace), "case", case_id)
    return CaseView.of(case)


# --- the test clock (mounted only with FULFIL_TEST_CLOCK=1) ----------------------------------


def _clock(request: Request) -> ServiceClock:
    clock = request.app.state.clock
    assert isinstance(clock, ServiceClock)
    return clock


def _clock_view(clock: ServiceClock) -> ClockView:
    return ClockView(now=clock.now(), offset_s=clock.offset.total_seconds())


@clock_router.get("/_test/clock", response_model=ClockView)
async def read_clock(request: Request) -> ClockView:
    return _clock_view(_clock(request))


@clock_router.post("/_test/clock", response_model=ClockView)
async def advance_clock(body: AdvanceClockBody, request: Request) -> ClockView:
    """Let `advance_s` seconds pass for return windows and case deadlines (tests only)."""
    clock = _clock(request)
    clock.advance(body.advance_s)
    log.warning("test clock advanced", advance_s=body.advance_s)
    return _clock_view(clock)


@clock_router.post("/_test/clock/reset", response_model=ClockView)
async def reset_clock(request: Request) -> ClockView:
    clock = _clock(request)
    clock.reset()
    log.warning("test clock reset")
    return _clock_view(clock)
