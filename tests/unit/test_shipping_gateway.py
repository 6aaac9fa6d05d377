"""Carrier gateways: the deterministic sandbox, the HTTP adapter (MockTransport) and retries."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from shipping.domain import Address, ShipmentLine
from shipping.gateway import (
    Booking,
    CarrierError,
    HttpCarrierGateway,
    RetryingCarrier,
    SandboxCarrier,
    TransientCarrierError,
    booking_key,
)

ADDRESS = Address("Ada Example", "1 Sample Street", None, "Berlin", "10115", "DE")
LINES = [ShipmentLine("MUG", 2)]


def book(gateway: object, shipment_id: uuid.UUID | None = None) -> Booking:
    sid = shipment_id or uuid.uuid4()
    return gateway.book(  # type: ignore[attr-defined,no-any-return]
        idempotency_key=booking_key(sid), shipment_id=sid, address=ADDRESS, lines=LINES
    )


def test_sandbox_is_deterministic_per_shipment() -> None:
    sid = uuid.uuid4()
    first = book(SandboxCarrier(), sid)
    assert first.carrier == "sandbox-post"
    assert re.fullmatch(r"SBX[0-9A-F]{12}", first.tracking_number)
    assert book(SandboxCarrier(), sid) == first  # even in another process
    assert book(SandboxCarrier(), uuid.uuid4()) != first


def test_sandbox_can_simulate_an_outage() -> None:
    carrier = SandboxCarrier(fail_next=1)
    with pytest.raises(TransientCarrierError):
        book(carrier)
    assert book(carrier).carrier == "sandbox-post"


def http_gateway(handler: object) -> HttpCarrierGateway:
    return HttpCarrierGateway(
        base_url="https://carrier.example",
        api_key="secret-key",
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
    )


def test_http_books_with_key_and_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"carrier": "dhl", "tracking_number": "JD0001-42"})

    sid = uuid.uuid4()
    assert book(http_gateway(handler), sid) == Booking("dhl", "JD0001-42")
    (request,) = seen
    assert request.method == "POST"
    assert request.url == "https://carrier.example/v1/shipments"
    assert request.headers["authorization"] == "Bearer secret-key"
    assert request.headers["idempotency-key"] == booking_key(sid)
    body = json.loads(request.content)
    assert body["reference"] == str(sid)
    assert body["address"]["city"] == "Berlin"
    assert body["parcels"] == [{"sku": "MUG", "quantity": 2}]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_http_overload_and_server_errors_are_transient(status: int) -> None:
    gateway = http_gateway(lambda _: httpx.Response(status))
    with pytest.raises(TransientCarrierError, match=str(status)):
        book(gateway)


def test_http_connection_errors_are_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TransientCarrierError, match="unreachable"):
        book(http_gateway(handler))


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(400, json={"error": "bad address"}),
        httpx.Response(200, content=b"not json"),
        httpx.Response(200, json={"carrier": "dhl"}),
        httpx.Response(200, json={"carrier": "dhl", "tracking_number": "has spaces"}),
        httpx.Response(200, json={"carrier": "", "tracking_number": "T1"}),
    ],
)
def test_http_refusals_and_bad_answers_are_permanent(response: httpx.Response) -> None:
    with pytest.raises(CarrierError):
        book(http_gateway(lambda _: response))


def test_retrying_carrier_backs_off_then_succeeds() -> None:
    sleeps: list[float] = []
    inner = SandboxCarrier(fail_next=2)
    carrier = RetryingCarrier(inner, attempts=3, backoff_s=0.05, sleep=sleeps.append)
    assert book(carrier).carrier == "sandbox-post"
    assert inner.calls == 3
    assert sleeps == [0.05, 0.1]


def test_retrying_carrier_gives_up_after_its_attempts() -> None:
    sleeps: list[float] = []
    inner = SandboxCarrier(fail_next=5)
    carrier = RetryingCarrier(inner, sleep=sleeps.append)
    with pytest.raises(TransientCarrierError):
        book(carrier)
    assert inner.calls == 3
    assert len(sleeps) == 2


def test_retrying_carrier_does_not_retry_refusals() -> None:
    calls: list[int] = []

    def handler(_: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(422)

    with pytest.raises(CarrierError):
        book(RetryingCarrier(http_gateway(handler), sleep=lambda _: None))
    assert len(calls) == 1
