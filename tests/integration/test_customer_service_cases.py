"""Cases opened by upstream problems, agents working them, and the SLA watch, on the real
Kafka and PostgreSQL with the customer-service process as a black box."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fulfilment_kit.contracts import PaymentFailed, ShipmentException
from tests.integration.test_customer_service_returns import (
    CUSTOMER_SERVICE_ENV,
    cs_records,
    of_types,
    order_events,
    produce,
    validate,
)
from tests.support.polling import eventually
from tests.support.processes import running_service


@pytest.fixture
async def service(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(
        "customer-service", database, ready_timeout=90, **CUSTOMER_SERVICE_ENV
    ) as client:
        yield client


def exception_of(order_id: uuid.UUID) -> ShipmentException:
    return ShipmentException(
        order_id=order_id,
        shipment_id=uuid.uuid4(),
        reason_code="recipient_absent",
        reason="nobody at home",
        occurred_at=datetime.now(UTC),
    )


async def cases_of(client: httpx.AsyncClient, order_id: uuid.UUID) -> list[Any]:
    reply = await client.get("/cases", params={"order_id": str(order_id)})
    return list(reply.json())


async def test_a_delivery_exception_opens_one_case_and_its_sla_breaches_once(
    service: httpx.AsyncClient,
) -> None:
    placed, _ = order_events([("MUG", 1, 1299)])
    order_id = placed.order_id
    exception = exception_of(order_id)
    same_ce_id = str(uuid.uuid4())
    await produce(placed)
    await produce(exception, ce_id=same_ce_id)
    await produce(exception, ce_id=same_ce_id)  # a copy at another offset

    [case] = await eventually(
        lambda: cases_of(service, order_id), until=lambda c: len(c) == 1, what="case opened"
    )
    assert (case["kind"], case["priority"], case["status"]) == (
        "delivery_exception",
        "high",
        "open",
    )
    assert case["customer_id"] == str(placed.customer_id)
    opened_at = datetime.fromisoformat(case["opened_at"])
    assert datetime.fromisoformat(case["first_response_due_at"]) - opened_at == timedelta(hours=4)
    assert datetime.fromisoformat(case["resolution_due_at"]) - opened_at == timedelta(hours=24)

    await service.post("/_test/clock", json={"advance_s": 4 * 3600 + 60})
    records = await eventually(
        lambda: cs_records(order_id),
        until=of_types("fulfilment.case.opened.v1", "fulfilment.case.sla_breached.v1"),
        timeout=30,
        what="case opened and first response breached",
    )
    breached = validate(records[1])
    assert (breached["sla"], breached["case_id"]) == ("first_response", case["case_id"])
    assert breached["due_at"].startswith(case["first_response_due_at"][:19])
    assert records[1].headers["ce_subject"] == case["case_id"]

    fetched = (await service.get(f"/cases/{case['case_id']}")).json()
    assert fetched["sla_breached"] == ["first_response"]
    assert len(await cases_of(service, order_id)) == 1


async def test_agents_work_a_case_to_resolution(service: httpx.AsyncClient) -> None:
    placed, _ = order_events([("MUG", 1, 1299)])
    order_id = placed.order_id
    failed = PaymentFailed(
        order_id=order_id,
        payment_id=uuid.uuid4(),
        reason_code="card_declined",
        amount_minor=1299,
        currency="EUR",
        failed_at=datetime.now(UTC),
    )
    await produce(placed, failed)
    [case] = await eventually(
        lambda: cases_of(service, order_id), until=lambda c: len(c) == 1, what="case opened"
    )
    assert (case["kind"], case["priority"]) == ("payment_problem", "normal")
    case_id = case["case_id"]

    assert (await service.post(f"/cases/{case_id}/assign", json={"assignee": "ann"})).is_success
    comment = {"author": "ann", "text": "asked the customer for another card"}
    assert (await service.post(f"/cases/{case_id}/comments", json=comment)).is_success
    resolve = {"outcome": "answered", "note": "customer paid again"}
    resolved = await service.post(f"/cases/{case_id}/resolve", json=resolve)
    assert resolved.json()["status"] == "resolved"
    assert (await service.post(f"/cases/{case_id}/close")).json()["status"] == "closed"
    assert (await service.post(f"/cases/{case_id}/close")).status_code == 409

    # answered and resolved: moving time on breaches nothing
    await service.post("/_test/clock", json={"advance_s": 100 * 3600})
    records = await eventually(
        lambda: cs_records(order_id),
        until=of_types("fulfilment.case.opened.v1", "fulfilment.case.resolved.v1"),
        what="opened and resolved published",
    )
    assert validate(records[1])["note"] == "customer paid again"

    manual = await service.post(
        "/cases",
        json={"kind": "inquiry", "priority": "urgent", "summary": "where is my parcel?"},
        headers={"Idempotency-Key": "manual-1"},
    )
    assert manual.status_code == 201
    listed = (await service.get("/cases", params={"kind": "inquiry"})).json()
    assert [c["case_id"] for c in listed] == [manual.json()["case_id"]]
    assert (await service.get(f"/cases/{uuid.uuid4()}")).status_code == 404
