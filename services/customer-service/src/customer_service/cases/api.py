"""HTTP routes of support cases for agents: open, assign, comment, resolve, close, read."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Strict, StringConstraints

from customer_service.cases.application import OpenCase
from customer_service.cases.domain import Case
from customer_service.web import app_of, trace_of
from fulfilment_kit.contracts.customer_service import CaseKind, CasePriority
from fulfilment_kit.contracts.types import InputName, InputReasonText, NoControlCharacters
from fulfilment_kit.http.auth import AGENT, OPS, Caller, IdempotencyKey, require
from fulfilment_kit.http.errors import problem_responses
from fulfilment_kit.http.pagination import (
    DEFAULT_PAGE_SIZE,
    LINK_HEADER,
    PageSize,
    set_next_link,
)
from fulfilment_kit.http.requests import answer_command, wake_relay
from fulfilment_kit.http.views import view_of
from fulfilment_kit.idempotency import fingerprint
from fulfilment_kit.tracing import Trace

router = APIRouter(tags=["cases"])

CaseWorker = Annotated[Caller, Depends(require(AGENT, OPS))]
Name = InputName

# --- requests ---------------------------------------------------------------------------------


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


# --- views ------------------------------------------------------------------------------------


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
        return view_of(
            cls, case, case_id=case.id, status=case.status.value, sla_breached=list(case.breached)
        )


# --- routes -----------------------------------------------------------------------------------


@router.get(
    "/cases",
    response_model=list[CaseView],
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
        app_of(request).list_cases, status=status, kind=kind, assignee=assignee, order_id=order_id
    )
    page = cases[offset : offset + limit]
    more = len(cases) > offset + limit
    set_next_link(request, response, {"offset": offset + limit} if more else None)
    return [CaseView.of(c) for c in page]


@router.get("/cases/{case_id}", response_model=CaseView, responses=problem_responses(404))
async def get_case(case_id: uuid.UUID, request: Request, _: CaseWorker) -> CaseView:
    case = await asyncio.to_thread(app_of(request).get_case, case_id)
    return CaseView.of(case)


@router.post(
    "/cases",
    status_code=status.HTTP_201_CREATED,
    response_model=CaseView,
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
        trace=trace_of(
            request,
            f"http:case:{idempotency_key or uuid.uuid4()}",
            str(body.order_id) if body.order_id else None,
        ),
    )
    done = await asyncio.to_thread(app_of(request).open_case, command)
    answer_command(request, response, applied=done.created, location=f"/cases/{done.aggregate.id}")
    return CaseView.of(done.aggregate)


def _case_trace(request: Request, case_id: uuid.UUID, action: str) -> Trace:
    return trace_of(request, f"http:{action}:{case_id}:{uuid.uuid4()}")


@router.post(
    "/cases/{case_id}/assign",
    response_model=CaseView,
    responses=problem_responses(404, 409),
)
async def assign_case(
    case_id: uuid.UUID, body: AssignBody, request: Request, _: CaseWorker
) -> CaseView:
    trace = _case_trace(request, case_id, "assign")
    case = await asyncio.to_thread(app_of(request).assign_case, case_id, body.assignee, trace)
    return CaseView.of(case)


@router.post(
    "/cases/{case_id}/comments",
    response_model=CaseView,
    responses=problem_responses(404, 409),
)
async def comment_case(
    case_id: uuid.UUID, body: CommentBody, request: Request, _: CaseWorker
) -> CaseView:
    """An agent's note; the first one is the case's first response."""
    trace = _case_trace(request, case_id, "comment")
    case = await asyncio.to_thread(
        app_of(request).comment_case, case_id, body.author, body.text, trace
    )
    return CaseView.of(case)


@router.post(
    "/cases/{case_id}/resolve",
    response_model=CaseView,
    responses=problem_responses(404, 409),
)
async def resolve_case(
    case_id: uuid.UUID, body: ResolveBody, request: Request, _: CaseWorker
) -> CaseView:
    trace = _case_trace(request, case_id, "resolve")
    case = await asyncio.to_thread(
        app_of(request).resolve_case, case_id, body.outcome, body.note, trace
    )
    wake_relay(request)
    return CaseView.of(case)


@router.post(
    "/cases/{case_id}/close",
    response_model=CaseView,
    responses=problem_responses(404, 409),
)
async def close_case(case_id: uuid.UUID, request: Request, _: CaseWorker) -> CaseView:
    trace = _case_trace(request, case_id, "close")
    case = await asyncio.to_thread(app_of(request).close_case, case_id, trace)
    return CaseView.of(case)
