"""The customer-service process as a black box on the real Kafka and PostgreSQL: order events
in on the orders topic, return requests over HTTP, return events out on its own topic."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from fulfilment_kit.contracts import (
    IntegrationEvent,
    OrderDelivered,
    OrderLine,
    OrderPlaced,
    ShippingAddress,
    topics,
)
from tests.support.polling import eventually
from tests.support.processes import running_service
from tests.support.stack import Record, publish, read_topic

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "shared/src/fulfilment_kit/contracts/schemas"
CORRELATION = "corr-cs-it"


# a clock the tests move (POST /_test/clock) and a brisk SLA watch
CUSTOMER_SERVICE_ENV = {"FULFIL_TEST_CLOCK": "1", "FULFIL_CASE_SLA_POLL_S": "0.2"}


@pytest.fixture
async def service(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(
        "customer-service", database, ready_timeout=90, **CUSTOMER_SERVICE_ENV
    ) as client:
        yield client


async def produce(*events: IntegrationEvent, ce_id: str | None = None) -> None:
    """Publish upstream events as their relays do: CloudEvents records keyed by order id."""
    await publish(*events, ce_id=ce_id, correlation_id=CORRELATION, source="/fulfilment/test")


def order_events(
    lines: list[tuple[str, int, int]], order_id: uuid.UUID | None = None
) -> tuple[OrderPlaced, OrderDelivered]:
    order_id = order_id or uuid.uuid4()
    customer_id = uuid.uuid4()
    placed = OrderPlaced(
        order_id=order_id,
        customer_id=customer_id,
        lines=[OrderLine(sku=s, quantity=q, unit_price_minor=p) for s, q, p in lines],
        currency="EUR",
        total_minor=sum(q * p for _, q, p in lines),
        shipping_address=ShippingAddress(
            recipient_name="Ada Example",
            line1="1 Sample Street",
            city="Berlin",
            postal_code="10115",
            country_code="DE",
        ),
        placed_at=datetime.now(UTC),
    )
    delivered = OrderDelivered(
        order_id=order_id, customer_id=customer_id, delivered_at=datetime.now(UTC)
    )
    return placed, delivered


async def cs_records(key: uuid.UUID) -> list[Record]:
    return [
        r
        for r in await read_topic(topics.physical(topics.CUSTOMER_SERVICE))
        if r.key == str(key).encode()
    ]


def of_types(*ce_types: str) -> Callable[[list[Record]], bool]:
    return lambda records: [r.headers["ce_type"] for r in records] == list(ce_types)


def validate(record: Record) -> dict[str, Any]:
    assert record.value is not None
    payload: dict[str, Any] = json.loads(record.value)
    schema = json.loads((SCHEMAS / f"{record.headers['ce_type']}.json").read_text())
    jsonschema.validate(payload, schema)
    return payload


async def returns_of(client: httpx.AsyncClient, order_id: uuid.UUID) -> Any:
    return (await client.get("/returns", params={"order_id": str(order_id)})).json()


async def request_return(
    client: httpx.AsyncClient,
    order_id: uuid.UUID,
    lines: list[tuple[str, int]],
    reason: str = "damaged",
    key: str | None = None,
) -> httpx.Response:
    body = {
        "order_id": str(order_id),
        "lines": [{"sku": s, "quantity": q} for s, q in lines],
        "reason_code": reason,
    }
    return await client.post(
        "/returns", json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())}
    )


async def replica_delivered(client: httpx.AsyncClient, order_id: uuid.UUID) -> None:
    """Wait until the service has seen the delivery (a return is accepted or refused for
    another reason than 'not delivered' / 'unknown')."""

    async def probe() -> int:
        reply = await request_return(client, order_id, [("NO-SUCH-SKU", 1)])
        return reply.status_code

    await eventually(probe, until=lambda s: s == 422, timeout=60, what="order replica delivered")


async def test_return_request_authorise_receive_publishes_in_order(
    service: httpx.AsyncClient,
) -> None:
    placed, delivered = order_events([("MUG", 2, 1299), ("TEE", 1, 2499)])
    order_id = placed.order_id
    await produce(placed, delivered)
    await replica_delivered(service, order_id)

    reply = await request_return(service, order_id, [("MUG", 2), ("TEE", 1)], "damaged", "rk-1")
    assert reply.status_code == 201, reply.text
    ret = reply.json()
    assert ret["status"] == "authorised"
    again = await request_return(service, order_id, [("MUG", 2), ("TEE", 1)], "damaged", "rk-1")
    assert again.json()["return_id"] == ret["return_id"]
    assert again.headers["Idempotent-Replayed"] == "true"

    receipt = {
        "lines": [
            {"sku": "MUG", "quantity": 2, "result": "restockable"},
            {"sku": "TEE", "quantity": 1, "result": "damaged"},
        ]
    }
    received = await service.post(f"/returns/{ret['return_id']}/receipt", json=receipt)
    assert received.status_code == 200, received.text
    assert received.json()["refund_minor"] == 2 * 1299 + 2499  # damaged on arrival: our fault

    records = await eventually(
        lambda: cs_records(order_id),
        until=of_types(
            "fulfilment.return.requested.v1",
            "fulfilment.return.authorised.v1",
            "fulfilment.return.received.v1",
        ),
        timeout=30,
        what="return events on the customer-service topic",
    )
    payloads = [validate(r) for r in records]
    assert {p["return_id"] for p in payloads} == {ret["return_id"]}
    assert payloads[0]["reason_code"] == "damaged"
    assert payloads[1]["rma_number"] == ret["rma_number"]
    assert payloads[2]["refund_minor"] == 2 * 1299 + 2499
    assert payloads[2]["customer_id"] == str(placed.customer_id)
    for record in records:
        assert record.headers["ce_correlationid"] == str(order_id)
        assert record.headers["ce_subject"] == str(order_id)


async def test_refused_returns_publish_nothing(service: httpx.AsyncClient) -> None:
    placed, delivered = order_events([("MUG", 1, 1299)])
    undelivered, _ = order_events([("MUG", 1, 1299)])
    await produce(placed, delivered, undelivered)
    await replica_delivered(service, placed.order_id)

    async def status_of_undelivered() -> int:
        return (await request_return(service, undelivered.order_id, [("MUG", 1)])).status_code

    # 404 until the replica has it, then 409 (not delivered)
    await eventually(status_of_undelivered, until=lambda s: s == 409, what="replica placed")
    too_many = await request_return(service, placed.order_id, [("MUG", 2)])
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "lines[0]"
    unknown = await request_return(service, uuid.uuid4(), [("MUG", 1)])
    assert unknown.status_code == 404

    moved = await service.post("/_test/clock", json={"advance_s": 31 * 86400})
    assert moved.status_code == 200
    late = await request_return(service, placed.order_id, [("MUG", 1)])
    assert late.status_code == 409
    assert "return window" in late.json()["detail"]

    assert await returns_of(service, placed.order_id) == []
    for order in (placed, undelivered):
        assert await cs_records(order.order_id) == []
