"""The orders service as a black box: HTTP in, CloudEvents records on the real Kafka topic out."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import cloudevents
from tests.support.polling import eventually
from tests.support.processes import running_service
from tests.support.stack import Record, end_offsets, read_topic, relay_published_all

REPO = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((REPO / "deploy/local/sample-order.json").read_text())
SCHEMA = json.loads(
    (
        REPO / "shared/src/fulfilment_kit/contracts/schemas/fulfilment.order.placed.v1.json"
    ).read_text()
)
CE_HEADERS = (
    "ce_specversion",
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_time",
    "ce_subject",
    "content-type",
    "ce_correlationid",
    "ce_causationid",
    "traceparent",
)


@pytest.fixture
async def orders(database: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service("orders", database) as client:
        yield client


async def records_for(order_id: str) -> list[Record]:
    return [
        r for r in await read_topic(topics.physical(topics.ORDERS)) if r.key == order_id.encode()
    ]


async def test_post_order_publishes_exactly_one_order_placed(
    orders: httpx.AsyncClient, database: str
) -> None:
    reply = await orders.post(
        "/orders",
        json=SAMPLE,
        headers={"Idempotency-Key": str(uuid.uuid4()), "X-Correlation-ID": "corr-it-1"},
    )
    assert reply.status_code == 201, reply.text
    order_id = reply.json()["order_id"]

    found = await eventually(lambda: records_for(order_id), what="order placed on the topic")
    await eventually(lambda: relay_published_all(database, "orders"), what="relay caught up")
    found = await records_for(order_id)
    assert len(found) == 1, found
    record = found[0]

    assert record.key == order_id.encode()
    for header in CE_HEADERS:
        assert record.headers.get(header), f"missing {header}"
    assert record.headers["ce_specversion"] == "1.0"
    assert record.headers["ce_type"] == "fulfilment.order.placed.v1"
    assert record.headers["ce_source"] == "/fulfilment/orders"
    assert record.headers["ce_subject"] == order_id
    assert record.headers["content-type"] == "application/json"
    assert record.headers["ce_correlationid"] == "corr-it-1"
    assert record.headers["ce_id"] == cloudevents.event_id(uuid.UUID(order_id), 1)
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", record.headers["traceparent"])

    payload = json.loads(record.value or b"")
    jsonschema.validate(payload, SCHEMA)
    assert payload["order_id"] == order_id
    assert payload["total_minor"] == sum(
        x["quantity"] * x["unit_price_minor"] for x in SAMPLE["lines"]
    )
    assert payload["lines"] == SAMPLE["lines"]


async def test_idempotency_key_replays_and_conflicts(
    orders: httpx.AsyncClient, database: str
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await orders.post("/orders", json=SAMPLE, headers=key)
    again = await orders.post("/orders", json=SAMPLE, headers=key)
    assert first.status_code == again.status_code == 201
    assert first.json()["order_id"] == again.json()["order_id"]
    changed = copy.deepcopy(SAMPLE)
    changed["lines"][0]["quantity"] += 1
    clash = await orders.post("/orders", json=changed, headers=key)
    assert clash.status_code == 409
    assert "already used" in clash.json()["detail"]

    order_id = first.json()["order_id"]
    await eventually(lambda: records_for(order_id), what="order placed on the topic")
    await eventually(lambda: relay_published_all(database, "orders"), what="relay caught up")
    assert len(await records_for(order_id)) == 1
    assert (await orders.get(f"/orders/{order_id}")).json()["lines"] == SAMPLE["lines"]


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({**SAMPLE, "lines": []}, "lines"),
    ({**SAMPLE, "lines": [{**SAMPLE["lines"][0], "quantity": 0}]}, "lines[0].quantity"),
    (
        {**SAMPLE, "lines": [{**SAMPLE["lines"][0], "unit_price_minor": -1}]},
        "lines[0].unit_price_minor",
    ),
    ({**SAMPLE, "currency": "XXY"}, "currency"),
    (
        {**SAMPLE, "shipping_address": {**SAMPLE["shipping_address"], "country_code": "QQ"}},
        "shipping_address.country_code",
    ),
    ({k: v for k, v in SAMPLE.items() if k != "customer_id"}, "customer_id"),
]


async def test_bad_bodies_get_422_and_nothing_is_stored_or_published(
    orders: httpx.AsyncClient, database: str
) -> None:
    topic = topics.physical(topics.ORDERS)
    before = await end_offsets([topic])
    for body, field in BAD_BODIES:
        reply = await orders.post(
            "/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert reply.status_code == 422, reply.text
        problem = reply.json()
        assert field in [e["field"] for e in problem["errors"]], problem
        assert field in problem["detail"]
    not_json = await orders.post(
        "/orders", content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    # Nothing stored: a valid order placed now is the first event in this service's log.
    ok = await orders.post("/orders", json=SAMPLE)
    order_id = ok.json()["order_id"]
    assert ok.json()["version"] == 1
    await eventually(lambda: records_for(order_id), what="the valid order on the topic")
    await eventually(lambda: relay_published_all(database, "orders"), what="relay caught up")
    after = await end_offsets([topic])
    published = [
        r for r in await read_topic(topic) if r.offset >= before.get((r.topic, r.partition), 0)
    ]
    assert [r.key for r in published] == [order_id.encode()]
    assert published[0].headers["ce_sequence"] == "1"
    assert sum(after.values()) > sum(before.values())


async def test_unknown_order_is_404(orders: httpx.AsyncClient) -> None:
    reply = await orders.get(f"/orders/{uuid.uuid4()}")
    assert reply.status_code == 404
    assert "does not exist" in reply.json()["detail"]
