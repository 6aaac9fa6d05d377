"""HTTP over the read models; `wait_for=<ce_id>` gives read-your-own-write."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Query

from customer_service.projections.queries import ReadModels
from fulfilment_kit.http.errors import ProblemError, not_found

MAX_WAIT_S = 10.0
POLL_S = 0.05

WaitFor = Query(
    None,
    min_length=1,
    max_length=200,
    description="ce_id of an event: answer only once the read models have applied it",
)
TimeoutS = Query(5.0, gt=0, le=MAX_WAIT_S, description="how long to wait for `wait_for`")


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

    @router.get("/timeline/{order_id}")
    async def timeline(
        order_id: UUID, wait_for: str | None = WaitFor, timeout_s: float = TimeoutS
    ) -> dict[str, Any]:
        """Every public event of an order from all services, causally ordered."""
        await wait_until_applied(models, wait_for, timeout_s)
        events = await asyncio.to_thread(models.timeline, order_id)
        if not events:
            raise not_found("order", order_id)
        return {"order_id": str(order_id), "events": events}

    @router.get("/customers/{customer_id}")
    async def customer(
        customer_id: UUID, wait_for: str | None = WaitFor, timeout_s: float = TimeoutS
    ) -> dict[str, Any]:
        """Customer 360: orders, lifetime spend and refunds per currency, returns, open cases."""
        await wait_until_applied(models, wait_for, timeout_s)
        found = await asyncio.to_thread(models.customer, customer_id)
        if found is None:
            raise not_found("customer", customer_id)
        return found

    @router.get("/kpis")
    async def kpis(wait_for: str | None = WaitFor, timeout_s: float = TimeoutS) -> dict[str, Any]:
        """Operations KPIs computed from the per-order and per-SKU facts at read time."""
        await wait_until_applied(models, wait_for, timeout_s)
        return await asyncio.to_thread(models.kpis)

    return router


def unavailable_router(reason: str) -> APIRouter:
    """The same routes answering 503 (e.g. the read models need PostgreSQL)."""
    router = APIRouter(tags=["read models"])

    @router.get("/timeline/{order_id}")
    @router.get("/customers/{customer_id}")
    @router.get("/kpis")
    async def unavailable() -> None:
        raise ProblemError(503, "Read models unavailable", reason)

    return router
