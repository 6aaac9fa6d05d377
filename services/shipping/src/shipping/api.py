"""HTTP entrypoint: dispatch, carrier webhooks and the shipment view."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Depends, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, model_validator

from fulfilment_kit.contracts.shipping import ShipmentExceptionCode
from fulfilment_kit.contracts.types import InputReasonText, Sku, TrackingNumber
from fulfilment_kit.http import webhooks
from fulfilment_kit.http.auth import AGENT, OPS, WAREHOUSE, Caller, IdempotencyKey, require
from fulfilment_kit.http.errors import ProblemError, problem_responses
from fulfilment_kit.http.requests import answer_command, app_of, trace_of, wake_relay
from fulfilment_kit.http.views import view_of
from shipping.application import CarrierUpdate, Delivery, ShippingApplication
from shipping.domain import Shipment

log = structlog.get_logger(__name__)
router = APIRouter(tags=["shipping"])

WEBHOOK_PATH = "/carrier/webhooks"
ShipmentReader = Depends(require(WAREHOUSE, AGENT, OPS))
Dispatcher = Depends(require(WAREHOUSE, OPS))


class LineView(BaseModel):
    sku: Sku
    quantity: int


class ExceptionView(BaseModel):
    reason_code: ShipmentExceptionCode
    reason: str
    occurred_at: datetime


class ShipmentView(BaseModel):
    """A shipment as the warehouse and customer service see it (no address: personal data)."""

    order_id: uuid.UUID
    shipment_id: uuid.UUID
    status: str
    carrier: str | None
    tracking_number: str | None
    lines: list[LineView]
    shipped_at: datetime | None
    delivered_at: datetime | None
    exception: ExceptionView | None

    @classmethod
    def of(cls, shipment: Shipment) -> ShipmentView:
        return view_of(cls, shipment, shipment_id=shipment.id, exception=shipment.problem)


class CarrierWebhook(BaseModel):
    """A carrier's status report for one parcel."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"status": {"const": "exception"}}, "required": ["status"]},
            "then": {
                "required": ["reason_code"],
                "properties": {"reason_code": {"type": "string"}},
            },
        },
    )

    tracking_number: TrackingNumber
    status: Literal["in_transit", "delivered", "exception"]
    reason_code: ShipmentExceptionCode | None = None
    reason: InputReasonText | None = None
    occurred_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _exception_has_a_code(self) -> CarrierWebhook:
        if self.status == "exception" and self.reason_code is None:
            raise ValueError("an exception needs a reason_code")
        return self


class CarrierSignature:
    """A dependency: the webhook is signed by a known carrier, now (else 401, nothing read)."""

    openapi_security_schemes = {
        "carrierSignature": {
            "type": "apiKey",
            "in": "header",
            "name": webhooks.SIGNATURE_HEADER,
            "description": (
                "Standard Webhooks signature: `v1,<base64 HMAC-SHA256>` with the carrier's "
                f"shared secret over `<{webhooks.ID_HEADER}>.<{webhooks.TIMESTAMP_HEADER}>."
                f"<body>`; `{webhooks.SENDER_HEADER}` names the carrier. Stale timestamps "
                "(outside the window) are refused; a delivery id is applied once."
            ),
        }
    }

    async def __call__(self, request: Request) -> Delivery:
        secrets: Mapping[str, bytes] = getattr(request.app.state, "carrier_webhook_secrets", {})
        tolerance: float = getattr(
            request.app.state, "carrier_webhook_tolerance_s", webhooks.DEFAULT_TOLERANCE_S
        )
        try:
            verified = webhooks.verify(
                request.headers, await request.body(), secrets, tolerance_s=tolerance
            )
        except webhooks.InvalidWebhook as exc:
            raise ProblemError(401, "Unauthorized", str(exc)) from exc
        return Delivery(carrier=verified.sender, delivery_id=verified.delivery_id)


@router.get(
    "/shipments/{order_id}",
    response_model=ShipmentView,
    dependencies=[ShipmentReader],
    responses=problem_responses(404, s404="No shipment for this order"),
)
async def get_shipment(order_id: uuid.UUID, request: Request) -> ShipmentView:
    shipment = await asyncio.to_thread(app_of(request, ShippingApplication).get_shipment, order_id)
    return ShipmentView.of(shipment)


@router.post(
    "/shipments/{order_id}/dispatch",
    response_model=ShipmentView,
    responses=problem_responses(
        404,
        409,
        502,
        503,
        s404="No shipment for this order",
        s409="Awaiting payment, cancelled or already shipped",
        s502="The carrier refused the booking",
        s503="The carrier or the database is unavailable; the shipment stays packing",
    ),
)
async def dispatch(
    order_id: uuid.UUID,
    request: Request,
    response: Response,
    caller: Annotated[Caller, Dispatcher],
    idempotency_key: IdempotencyKey = None,
) -> ShipmentView:
    """Hand the parcel to the carrier. Repeating it with the same Idempotency-Key replays."""
    idempotency_key = caller.idempotency_key(idempotency_key)
    trace = trace_of(request, f"http:dispatch:{idempotency_key or uuid.uuid4()}")
    done = await asyncio.to_thread(
        app_of(request, ShippingApplication).dispatch, order_id, trace, idempotency_key
    )
    answer_command(request, response, applied=not done.replayed)
    return ShipmentView.of(done.shipment)


@router.post(
    WEBHOOK_PATH,
    response_model=ShipmentView,
    responses=problem_responses(
        401,
        404,
        409,
        s401="Unsigned, wrongly signed, unknown carrier or stale timestamp",
        s404="Unknown tracking number (for this carrier)",
        s409="The update does not fit the shipment's status, or this delivery id was "
        "received before (nothing is done again)",
        s422="Invalid report, or an event time before the shipment or in the future",
    ),
)
async def carrier_webhook(
    body: CarrierWebhook,
    request: Request,
    delivery: Annotated[Delivery, Depends(CarrierSignature())],
) -> ShipmentView:
    """A carrier reports progress; a repeated report is answered without a second effect."""
    update = CarrierUpdate(
        tracking_number=body.tracking_number,
        status=body.status,
        reason_code=body.reason_code,
        reason=body.reason,
        occurred_at=body.occurred_at,
        trace=trace_of(request, f"carrier:{body.tracking_number}:{body.status}"),
        delivery=delivery,
    )
    result = await asyncio.to_thread(app_of(request, ShippingApplication).carrier_update, update)
    if result.changed:
        wake_relay(request)
    return ShipmentView.of(result.shipment)
