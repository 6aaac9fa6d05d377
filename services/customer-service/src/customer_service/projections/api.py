"""HTTP over the read models; `wait_for=<ce_id>` gives read-your-own-write."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from customer_service.projections.queries import ReadModels
from fulfilment_kit.http.auth import AGENT, CUSTOMER, OPS, Caller, require
from fulfilment_kit.http.errors import ProblemError, not_found, problem_responses

MAX_WAIT_S = 10.0
POLL_S = 0.05

WaitFor = Query(
    None,
    min_length=1,
    max_length=200,
    description="ce_id of an event: answer only once the read models have applied it",
)
TimeoutS = Query(5.0, gt=0, le=MAX_WAIT_S, description="how long to wait for `wait_for`")
TimelineReader = Depends(require(AGENT, OPS))
CustomerReader = Depends(require(CUSTOMER, AGENT, OPS))
KpiReader = Depends(require(OPS, AGENT))


class TimelineEvent(BaseModel):
    """One public event of the order, as the timeline keeps it (no personal data)."""

    ce_id: str
    ce_type: str
    source: str
    ce_time: datetime
    sequence: int | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    summary: dict[str, Any]


class TimelineView(BaseModel):
    order_id: UUID
    events: list[TimelineEvent]


class Customer360View(BaseModel):
    """A customer's orders, lifetime spend and refunds per currency, returns and open cases."""

    model_config = ConfigDict(extra="allow")

    customer_id: UUID
    orders_count: int
    lifetime_spend: dict[str, int]
    refunds_total: dict[str, int]
    returns_count: int
    open_cases: int
    first_order_at: datetime | None
    last_order_at: datetime | None


class LeadTimeView(BaseModel):
    orders: int
    p50: float | None
    p95: float | None


class LowStockView(BaseModel):
    sku: str
    available: int | None
    threshold: int | None
    since: datetime | None


class KpisView(BaseModel):
    """Operations KPIs; rates are None while undefined (nothing delivered yet, ...)."""

    orders: int
    orders_by_status: dict[str, int]
    gmv_minor: dict[str, int]
    paid_orders: dict[str, int]
    average_order_value_minor: dict[str, float]
    return_rate: float | None
    repurchase_rate: float | None
    fulfilment_lead_time_s: LeadTimeView
    refunds_total_minor: dict[str, int]
    sla_breaches: dict[str, int]
    low_stock_skus: list[LowStockView]


READ_PROBLEMS = problem_responses(
    504, s503="Read models or their database unavailable", s504="Not caught up with `wait_for`"
)


async def wait_until_applied(models: ReadModels, ce_id: str | None, timeout_s: float) -> None:
    """Return once `ce_id` is applied; 504 problem after `timeout_s` (polling, bounded)."""
    if ce_id is None:
        return
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(models.has_applied, ce_id):
        if time.monotonic() >= deadline:
            raise ProblemError(
                504,
                "Read model not caught up",
                f"the read models have not applied event {ce_id} within {timeout_s:g}s; "
                "the event may not be published yet: retry later",
                wait_for=ce_id,
                timeout_s=timeout_s,
            )
        await asyncio.sleep(POLL_S)


def projections_router(models: ReadModels) -> APIRouter:
    router = APIRouter(tags=["read models"])

    @router.get(
        "/timeline/{order_id}",
        response_model=TimelineView,
        dependencies=[TimelineReader],
        responses={**READ_PROBLEMS, **problem_responses(404, s404="No event of this order")},
    )
    async def timeline(
        order_id: UUID, wait_for: str | None = WaitFor, timeout_s: float = TimeoutS
    ) -> dict[str, Any]:
        """Every public event of an order from all services, causally ordered."""
        await wait_until_applied(models, wait_for, timeout_s)
        events = await asyncio.to_thread(models.timeline, order_id)
        if not events:
            raise not_found("order", order_id)
        return {"order_id": str(order_id), "events": events}

    @router.get(
        "/customers/{customer_id}",
        response_model=Customer360View,
        responses={**READ_PROBLEMS, **problem_responses(404, s404="No event of this customer")},
    )
    async def customer(
        customer_id: UUID,
        wait_for: str | None = WaitFor,
        timeout_s: float = TimeoutS,
        caller: Caller = CustomerReader,
    ) -> dict[str, Any]:
        """Customer 360: orders, lifetime spend and refunds per currency, returns, open cases.
        A customer reads their own (another customer's is not found)."""
        if not caller.owns(customer_id):
            raise not_found("customer", customer_id)
        await wait_until_applied(models, wait_for, timeout_s)
        found = await asyncio.to_thread(models.customer, customer_id)
        if found is None:
            raise not_found("customer", customer_id)
        return found

    @router.get("/kpis", response_model=KpisView, dependencies=[KpiReader], responses=READ_PROBLEMS)
    async def kpis(wait_for: str | None = WaitFor, timeout_s: float = TimeoutS) -> dict[str, Any]:
        """Operations KPIs computed from the per-order and per-SKU facts at read time."""
        await wait_until_applied(models, wait_for, timeout_s)
        return await asyncio.to_thread(models.kpis)

    return router


def unavailable_router(reason: str) -> APIRouter:
    """The same routes answering 503 (e.g. the read models need PostgreSQL)."""
    router = APIRouter(tags=["read models"])

    @router.get("/timeline/{order_id}", dependencies=[TimelineReader])
    @router.get("/customers/{customer_id}", dependencies=[CustomerReader])
    @router.get("/kpis", dependencies=[KpiReader])
    async def unavailable() -> None:
        raise ProblemError(503, "Read models unavailable", reason)

    return router
