"""HTTP entrypoint: translates requests to commands and aggregates to views."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

import orjson
import structlog
from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from fulfilment_kit.contracts import OrderLine as LineModel
from fulfilment_kit.contracts import ShippingAddress
from fulfilment_kit.contracts.types import (
    InputCountryCode,
    InputCurrencyCode,
    InputReasonText,
    NoControlCharacters,
    PaymentToken,
)
from fulfilment_kit.http.auth import AGENT, CUSTOMER, OPS, Caller, IdempotencyKey, require
from fulfilment_kit.http.batching import GroupCommit
from fulfilment_kit.http.errors import ProblemError, not_found, problem_responses
from fulfilment_kit.http.hot import serve_hot
from fulfilment_kit.http.requests import answer_command, app_of, trace_of, wake_relay
from fulfilment_kit.http.views import view_of
from fulfilment_kit.idempotency import fingerprint
from fulfilment_kit.privacy import PersonalDataVault
from fulfilment_kit.tracing import Trace
from orders.application import OrdersApplication, Placed, PlaceOrder
from orders.domain import MAX_LINES, Address, Order, OrderLine, OrderStatus

log = structlog.get_logger(__name__)
router = APIRouter(tags=["orders"])

MAX_ORDER_TOTAL_MINOR = 10**12


def _line(max_length: int, min_length: int = 1) -> object:
    return StringConstraints(min_length=min_length, max_length=max_length)


Phone = Annotated[str, Strict(), StringConstraints(pattern=r"^\+?[0-9 ()/-]{4,32}$")]
Email = Annotated[str, Strict(), StringConstraints(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}$")]


class ShippingAddressInput(BaseModel):
    """Where the order is delivered: one line per field, no control characters."""

    model_config = ConfigDict(extra="forbid")

    recipient_name: Annotated[str, Strict(), _line(200), NoControlCharacters()]
    line1: Annotated[str, Strict(), _line(200), NoControlCharacters()]
    line2: Annotated[str, Strict(), _line(200, 0), NoControlCharacters(blank=True)] | None = None
    city: Annotated[str, Strict(), _line(100), NoControlCharacters()]
    postal_code: Annotated[str, Strict(), _line(20), NoControlCharacters()]
    country_code: InputCountryCode
    phone: Phone | None = None
    """For the carrier's delivery notice; personal data (sealed, erasable)."""
    email: Email | None = None
    """For the carrier's delivery notice; personal data (sealed, erasable)."""


class PlaceOrderRequest(BaseModel):
    """A new order: who, what, in which currency, shipped where."""

    model_config = ConfigDict(extra="forbid")

    customer_id: uuid.UUID
    lines: list[LineModel] = Field(min_length=1, max_length=MAX_LINES)
    currency: InputCurrencyCode
    shipping_address: ShippingAddressInput
    payment_token: PaymentToken

    @field_validator("lines")
    @classmethod
    def _lines_are_consistent(cls, lines: list[LineModel]) -> list[LineModel]:
        skus = [line.sku for line in lines]
        duplicates = sorted({s for s in skus if skus.count(s) > 1})
        if duplicates:
            raise ValueError(
                f"each SKU may appear in one line only; repeated: {', '.join(duplicates)}"
            )
        total = sum(line.quantity * line.unit_price_minor for line in lines)
        if total > MAX_ORDER_TOTAL_MINOR:
            raise ValueError(f"the order total {total} exceeds {MAX_ORDER_TOTAL_MINOR} minor units")
        return lines


class OrderView(BaseModel):
    order_id: uuid.UUID
    status: str
    customer_id: uuid.UUID
    lines: list[LineModel]
    currency: str
    total_minor: int
    shipping_address: ShippingAddress
    placed_at: datetime
    updated_at: datetime
    version: int
    stage_entered_at: datetime
    flagged_stages: list[str]
    paid_minor: int
    carrier: str | None
    tracking_number: str | None
    cancelled_by: str | None
    cancel_reason: str | None
    shortages: list[dict[str, object]]
    returned: dict[str, int] = {}
    """Units received back per SKU, over all returns."""
    returned_refund_minor: int = 0

    @classmethod
    def of(
        cls, order: Order, vault: PersonalDataVault, address: Address | None = None
    ) -> OrderView:
        """The view; `address`: the plaintext of the order's sealed one when the caller has it
        (they just sent it), else it is opened through the vault."""
        return view_of(
            cls,
            order,
            order_id=order.id,
            shipping_address=address or vault.reveal_fields(order.shipping_address),
            placed_at=order.created_on,
            updated_at=order.modified_on,
            shortages=[s.__dict__ for s in order.shortages],
            returned=dict(order.returned),
        )


async def _view(request: Request, order: Order) -> OrderView:
    """The order as its customer or staff see it: the address opened through the kit."""
    return await asyncio.to_thread(OrderView.of, order, app_of(request, OrdersApplication).vault)


PLACER = require(CUSTOMER, OPS)
Placer = Annotated[Caller, Depends(PLACER)]
Reader = Annotated[Caller, Depends(require(CUSTOMER, AGENT, OPS))]
Canceller = Annotated[Caller, Depends(require(CUSTOMER, OPS))]


@router.post(
    "/orders",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderView,
    responses=problem_responses(
        403,
        409,
        s403="A customer placing an order for another customer",
        s409="Idempotency-Key reused with a different body",
        s422="Invalid order",
    ),
)
async def place_order(
    body: PlaceOrderRequest,
    request: Request,
    response: Response,
    caller: Placer,
    idempotency_key: IdempotencyKey = None,
) -> OrderView:
    """Place an order. Repeating a request with the same Idempotency-Key returns the same order
    (keys are the caller's own: another caller's same key is another order)."""
    if not caller.owns(body.customer_id):
        raise ProblemError(
            403, "Forbidden", "a customer places orders for themselves only (customer_id)"
        )
    idempotency_key = caller.idempotency_key(idempotency_key)
    command = PlaceOrder(
        customer_id=body.customer_id,
        lines=[OrderLine(**line.model_dump()) for line in body.lines],
        currency=body.currency,
        shipping_address=Address(**body.shipping_address.model_dump()),
        payment_token=body.payment_token,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint(body),
        trace=trace_of(request, key=idempotency_key),
    )
    placed, view = await _placements(request)(command)
    location = f"/orders/{placed.order.id}"
    if answer_command(request, response, applied=placed.created, location=location):
        log.info("order placed", order_id=str(placed.order.id), lines=len(command.lines))
    return view


_ORDER_JSON = TypeAdapter(OrderView)
"""How FastAPI writes the route's response model (`dump_json`, by alias)."""
MAX_IDEMPOTENCY_KEY = 200
"""The Idempotency-Key header's length limit (`fulfilment_kit.http.auth.IdempotencyKey`)."""


@serve_hot(router, "POST", "/orders")
async def place_order_hot(request: Request, body: bytes) -> Response | None:
    """`place_order` without FastAPI's per-request work (the busiest operation). Only a JSON
    order that validates is served here, in FastAPI's order (JSON, roles, body); anything
    else (None) goes to the FastAPI route, so every refusal reads as FastAPI writes it."""
    content_type = request.headers.get("content-type", "")
    if not body or content_type.split(";", 1)[0].strip().lower() != "application/json":
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    caller = await PLACER(request)  # 403 as the route's dependency answers it
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        return None
    try:
        order = PlaceOrderRequest.model_validate(document)
    except ValidationError:
        return None
    headers = Response()
    del headers.headers["content-length"]
    view = await place_order(order, request, headers, caller, key)
    response = Response(
        _ORDER_JSON.dump_json(view), status.HTTP_201_CREATED, media_type="application/json"
    )
    response.raw_headers.extend(headers.raw_headers)
    return response


Placement = tuple[Placed, OrderView]


def _placements(request: Request) -> GroupCommit[PlaceOrder, Placement]:
    """Concurrent placements go together: one thread hop and one transaction (group commit)."""
    state = request.app.state
    group: GroupCommit[PlaceOrder, Placement] | None = getattr(state, "placements", None)
    if group is None:
        runtime = getattr(state, "runtime", None)
        group = state.placements = GroupCommit(
            functools.partial(_place_all, app_of(request, OrdersApplication)),
            linger_s=runtime.settings.http_group_commit_linger_s if runtime else 0.0,
        )
    return group


def _place_all(
    app: OrdersApplication, commands: Sequence[PlaceOrder]
) -> list[Placement | Exception]:
    """Place, and each order's view, in one thread hop: a new order shows the address its
    caller just sent (nothing to open); a replay opens the stored one."""
    outcomes: list[Placement | Exception] = []
    for command, placed in zip(commands, app.place_orders(commands), strict=True):
        if isinstance(placed, Exception):
            outcomes.append(placed)
            continue
        address = command.shipping_address if placed.created else None
        try:
            outcomes.append((placed, OrderView.of(placed.order, app.vault, address)))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


async def _own_order(request: Request, order_id: uuid.UUID, caller: Caller) -> Order:
    """The order, if the caller may see it (another customer's order is not found)."""
    order = await asyncio.to_thread(app_of(request, OrdersApplication).get_order, order_id)
    if not caller.owns(order.customer_id):
        raise not_found("order", order_id)
    return order


@router.get("/orders/{order_id}", response_model=OrderView, responses=problem_responses(404))
async def get_order(order_id: uuid.UUID, request: Request, caller: Reader) -> OrderView:
    return await _view(request, await _own_order(request, order_id, caller))


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: InputReasonText = "cancelled by the customer"


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderView,
    responses={
        202: {
            "description": "The order is paid: the cancellation is requested (status "
            "cancellation_requested); shipping answers: parcel held -> cancelled and refunded, "
            "parcel already left -> the order goes on (return it instead)",
            "model": OrderView,
        },
        **problem_responses(
            404, 409, s409="The order has shipped or ended and cannot be cancelled"
        ),
    },
)
async def cancel_order(
    order_id: uuid.UUID,
    request: Request,
    response: Response,
    caller: Canceller,
    body: CancelRequest | None = None,
) -> OrderView:
    """Cancel an order. Before payment: cancelled at once (200), stock released. A paid order:
    202, a cancellation request that shipping, the authority on whether goods left, answers."""
    await _own_order(request, order_id, caller)
    body = body or CancelRequest()
    trace = Trace(
        correlation_id=str(order_id),
        causation_id=f"http:cancel:{uuid.uuid4()}",
    )
    order, changed = await asyncio.to_thread(
        app_of(request, OrdersApplication).cancel_order, order_id, body.reason, trace
    )
    if changed:
        wake_relay(request)
        log.info("order cancellation", order_id=str(order_id), status=str(order.status))
    if order.status is OrderStatus.CANCELLATION_REQUESTED:
        response.status_code = status.HTTP_202_ACCEPTED
    return await _view(request, order)


class ErasureView(BaseModel):
    customer_id: uuid.UUID
    erased_at: datetime
    requested_role: str
    keys_destroyed: int
    """Data keys this request destroyed (0 when repeated: they were gone already)."""


Eraser = Annotated[Caller, Depends(require(OPS, AGENT))]


@router.post(
    "/customers/{customer_id}/erasure",
    response_model=ErasureView,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "Erased before: the same erasure", "model": ErasureView},
        **problem_responses(),
    },
    tags=["privacy"],
)
async def erase_customer(
    customer_id: uuid.UUID, request: Request, response: Response, caller: Eraser
) -> ErasureView:
    """Erase a customer's personal data (crypto-shredding): their data key is destroyed, so
    every sealed copy (events, topics, DLQs, read models, snapshots, backups) reads as
    `[erased]`; *customer erased* is published; orders, money and stock stay. Idempotent."""
    role = OPS if OPS in caller.principal.roles else AGENT
    trace = Trace(correlation_id=str(customer_id), causation_id=f"http:erasure:{customer_id}")
    erased = await asyncio.to_thread(
        app_of(request, OrdersApplication).erase_customer, customer_id, caller.subject, role, trace
    )
    if erased.created:
        wake_relay(request)
    else:
        response.status_code = status.HTTP_200_OK
    log.info(
        "customer erased",
        customer_id=str(customer_id),
        by=caller.subject,
        role=role,
        repeated=not erased.created,
        keys_destroyed=erased.keys_destroyed,
    )
    return ErasureView(
        customer_id=customer_id,
        erased_at=erased.erasure.created_on,
        requested_role=erased.erasure.requested_role,
        keys_destroyed=erased.keys_destroyed,
    )
