"""HTTP entrypoint: translates requests to stock commands and aggregates to views."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Strict, StringConstraints

from fulfilment_kit.contracts import StockLine as LineModel
from fulfilment_kit.contracts import StockShortage as ShortageModel
from fulfilment_kit.contracts.types import (
    InputReasonText,
    NoControlCharacters,
    Quantity,
    Sku,
    StockCount,
)
from fulfilment_kit.http.auth import AGENT, OPS, WAREHOUSE, Caller, IdempotencyKey, require
from fulfilment_kit.http.errors import problem_responses
from fulfilment_kit.http.pagination import (
    DEFAULT_PAGE_SIZE,
    LINK_HEADER,
    PageSize,
    page_after,
    set_next_link,
)
from fulfilment_kit.http.requests import answer_command, app_of, trace_of
from fulfilment_kit.http.views import view_of
from fulfilment_kit.idempotency import fingerprint
from inventory.application import (
    CountStock,
    Idempotency,
    InventoryApplication,
    ReceiveStock,
    SetThreshold,
    StockResult,
)
from inventory.domain import Reservation, StockItem

log = structlog.get_logger(__name__)
router = APIRouter(tags=["inventory"])

SkuPath = Annotated[Sku, Path(description="Stock keeping unit, e.g. MUG-BLUE")]
StockKeeper = Annotated[Caller, Depends(require(WAREHOUSE, OPS))]
StockReader = Annotated[Caller, Depends(require(WAREHOUSE, AGENT, OPS))]


class ReceiptRequest(BaseModel):
    """Units of a SKU that came in (a purchase delivery)."""

    model_config = ConfigDict(extra="forbid")

    quantity: Quantity
    reference: (
        Annotated[
            str, Strict(), StringConstraints(min_length=1, max_length=200), NoControlCharacters()
        ]
        | None
    ) = None


class AdjustmentRequest(BaseModel):
    """A cycle count: how many units are really on hand, and why it is recorded."""

    model_config = ConfigDict(extra="forbid")

    counted_on_hand: StockCount
    reason: InputReasonText


class ThresholdRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: StockCount


class StockView(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    available: int
    low_stock_threshold: int
    below_threshold: bool
    version: int

    @classmethod
    def of(cls, item: StockItem) -> StockView:
        return view_of(cls, item)


class ReservationView(BaseModel):
    order_id: uuid.UUID
    status: str
    lines: list[LineModel]
    shortages: list[ShortageModel]

    @classmethod
    def of(cls, reservation: Reservation) -> ReservationView:
        return view_of(cls, reservation)


def _idempotency(key: str | None, operation: str, sku: str, body: BaseModel) -> Idempotency | None:
    if key is None:
        return None
    return Idempotency(key, fingerprint(operation, sku, body))


async def _run(
    request: Request, response: Response, command: Callable[[InventoryApplication], StockResult]
) -> StockResult:
    """Run a stock command off the event loop (its errors are the kit's problems)."""
    result = await asyncio.to_thread(command, app_of(request, InventoryApplication))
    answer_command(request, response, applied=not result.replayed)
    return result


@router.post(
    "/stock/{sku}/receipts",
    response_model=StockView,
    responses=problem_responses(409, s409="Idempotency-Key reused with a different body"),
)
async def receive_stock(
    sku: SkuPath,
    body: ReceiptRequest,
    request: Request,
    response: Response,
    caller: StockKeeper,
    idempotency_key: IdempotencyKey = None,
) -> StockView:
    """Add received units; a new SKU is created. A repeated Idempotency-Key adds nothing."""
    idempotency_key = caller.idempotency_key(idempotency_key)
    command = ReceiveStock(
        sku=sku,
        quantity=body.quantity,
        reference=body.reference,
        trace=trace_of(request, key=idempotency_key),
        idempotency=_idempotency(idempotency_key, "receipt", sku, body),
    )
    result = await _run(request, response, lambda app: app.receive_stock(command))
    log.info("stock received", sku=sku, quantity=body.quantity, replayed=result.replayed)
    return StockView.of(result.item)


@router.post(
    "/stock/{sku}/adjustments",
    response_model=StockView,
    responses=problem_responses(
        404,
        409,
        s404="Unknown SKU",
        s409="Count below the reserved units, or Idempotency-Key reused",
    ),
)
async def adjust_stock(
    sku: SkuPath,
    body: AdjustmentRequest,
    request: Request,
    response: Response,
    caller: StockKeeper,
    idempotency_key: IdempotencyKey = None,
) -> StockView:
    """Record a cycle count: on hand becomes the counted figure (never below reserved)."""
    idempotency_key = caller.idempotency_key(idempotency_key)
    command = CountStock(
        sku=sku,
        counted_on_hand=body.counted_on_hand,
        reason=body.reason,
        trace=trace_of(request, key=idempotency_key),
        idempotency=_idempotency(idempotency_key, "adjustment", sku, body),
    )
    result = await _run(request, response, lambda app: app.count_stock(command))
    log.info("stock counted", sku=sku, replayed=result.replayed)
    return StockView.of(result.item)


@router.put(
    "/stock/{sku}/threshold",
    response_model=StockView,
    responses=problem_responses(404, 409, s404="Unknown SKU"),
)
async def set_threshold(
    sku: SkuPath, body: ThresholdRequest, request: Request, response: Response, _: StockKeeper
) -> StockView:
    """Set the SKU's low-stock threshold."""
    command = SetThreshold(sku=sku, threshold=body.threshold, trace=trace_of(request))
    result = await _run(request, response, lambda app: app.set_threshold(command))
    return StockView.of(result.item)


@router.get(
    "/stock/{sku}", response_model=StockView, responses=problem_responses(404, s404="Unknown SKU")
)
async def get_stock(sku: SkuPath, request: Request, _: StockReader) -> StockView:
    item = await asyncio.to_thread(app_of(request, InventoryApplication).get_stock, sku)
    return StockView.of(item)


@router.get(
    "/stock",
    response_model=list[StockView],
    responses={200: {"description": "A page of SKUs", "headers": LINK_HEADER}},
)
async def list_stock(
    request: Request,
    response: Response,
    _: StockReader,
    below_threshold: Annotated[
        bool | None, Query(description="only SKUs below (true) or not below (false) threshold")
    ] = None,
    after: Annotated[Sku | None, Query(description="the last SKU of the previous page")] = None,
    limit: PageSize = DEFAULT_PAGE_SIZE,
) -> list[StockView]:
    """Known SKUs sorted by SKU, a page at a time (follow `Link: rel="next"`)."""
    items = await asyncio.to_thread(
        lambda: app_of(request, InventoryApplication).list_stock(
            below_threshold, after=after, limit=limit
        )
    )
    page, next_after = page_after(items, lambda item: item.sku, after, limit)
    set_next_link(request, response, None if next_after is None else {"after": next_after})
    return [StockView.of(item) for item in page]


@router.get(
    "/reservations/{order_id}",
    response_model=ReservationView,
    responses=problem_responses(404, s404="No reservation for this order"),
)
async def get_reservation(order_id: uuid.UUID, request: Request, _: StockReader) -> ReservationView:
    reservation = await asyncio.to_thread(
        app_of(request, InventoryApplication).get_reservation, order_id
    )
    return ReservationView.of(reservation)
