"""The parcel carrier behind a small protocol: a deterministic sandbox (default) and HTTP.

Booking is idempotent at the carrier: the idempotency key is derived from the shipment id,
so a retry after a crash (booked at the carrier, not yet saved here) gets the same parcel.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from fulfilment_kit.retry import RetryingGateway
from fulfilment_kit.sandbox import IdempotentSandbox
from shipping.domain import Address, ShipmentLine

SANDBOX_CARRIER = "sandbox-post"
_TRACKING_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class Booking:
    carrier: str
    tracking_number: str


class CarrierError(Exception):
    """The carrier refused the booking for good (e.g. a 4xx): retrying will not help."""


class TransientCarrierError(Exception):
    """The carrier is unreachable, slow or overloaded: worth retrying later."""


class CarrierGateway(Protocol):
    def book(
        self,
        *,
        idempotency_key: str,
        shipment_id: uuid.UUID,
        address: Address,
        lines: Sequence[ShipmentLine],
    ) -> Booking:
        """Hand the parcel to the carrier; the same key always returns the same booking."""
        ...


def webhook_secret_name(carrier: str) -> str:
    """The name of a carrier's dev webhook secret (`fulfilment_kit.devauth.dev_secret`)."""
    return f"webhook-{carrier}"


def booking_key(shipment_id: uuid.UUID) -> str:
    return f"shipment-{shipment_id}"


class SandboxCarrier(IdempotentSandbox[Booking]):
    """A carrier without a network: deterministic tracking numbers, never fails by itself.

    `fail_next` makes the next n bookings raise TransientCarrierError (for tests and demos).
    """

    def __init__(self, *, fail_next: int = 0) -> None:
        super().__init__(
            lambda: TransientCarrierError("sandbox carrier: simulated outage"), fail_next=fail_next
        )

    def book(
        self,
        *,
        idempotency_key: str,
        shipment_id: uuid.UUID,
        address: Address,
        lines: Sequence[ShipmentLine],
    ) -> Booking:
        return self.once(
            idempotency_key, lambda: Booking(SANDBOX_CARRIER, sandbox_tracking_number(shipment_id))
        )

    def close(self) -> None:
        pass


def sandbox_tracking_number(shipment_id: uuid.UUID) -> str:
    return "SBX" + hashlib.sha256(shipment_id.bytes).hexdigest()[:12].upper()


class HttpCarrierGateway:
    """A carrier's booking API over HTTP (sync httpx; called from a worker thread).

    POST {base_url}/v1/shipments with `Authorization: Bearer <key>` and `Idempotency-Key`;
    a 200/201 answer carries {"carrier": ..., "tracking_number": ...}. 408, 429, 5xx,
    timeouts and connection errors are transient; any other status is a refusal.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
            transport=transport,
        )

    def book(
        self,
        *,
        idempotency_key: str,
        shipment_id: uuid.UUID,
        address: Address,
        lines: Sequence[ShipmentLine],
    ) -> Booking:
        body = {
            "reference": str(shipment_id),
            "address": address.__dict__,
            "parcels": [{"sku": line.sku, "quantity": line.quantity} for line in lines],
        }
        try:
            reply = self._client.post(
                "/v1/shipments", json=body, headers={"Idempotency-Key": idempotency_key}
            )
        except httpx.TransportError as exc:  # connect/read timeouts, refused connections
            raise TransientCarrierError(f"carrier unreachable: {type(exc).__name__}") from exc
        if reply.status_code in (408, 425, 429) or reply.status_code >= 500:
            raise TransientCarrierError(f"carrier answered {reply.status_code}")
        if reply.status_code not in (200, 201):
            raise CarrierError(f"carrier refused the booking: {reply.status_code}")
        return _booking_from(reply)

    def close(self) -> None:
        self._client.close()


def _booking_from(reply: httpx.Response) -> Booking:
    try:
        data: Any = reply.json()
        carrier, tracking = data["carrier"], data["tracking_number"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CarrierError("carrier answered without carrier and tracking_number") from exc
    if not isinstance(carrier, str) or not 1 <= len(carrier) <= 50:
        raise CarrierError("carrier answered with an invalid carrier name")
    if not isinstance(tracking, str) or not _TRACKING_RE.fullmatch(tracking):
        raise CarrierError("carrier answered with an invalid tracking number")
    return Booking(carrier, tracking)


class RetryingCarrier(RetryingGateway[CarrierGateway]):
    """Retries transient failures with exponential backoff, then gives up (re-raises)."""

    transient = (TransientCarrierError,)

    def book(
        self,
        *,
        idempotency_key: str,
        shipment_id: uuid.UUID,
        address: Address,
        lines: Sequence[ShipmentLine],
    ) -> Booking:
        return self.retry(
            lambda: self.inner.book(
                idempotency_key=idempotency_key,
                shipment_id=shipment_id,
                address=address,
                lines=lines,
            ),
            "carrier booking failed, retrying",
        )

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
