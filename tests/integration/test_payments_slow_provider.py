"""Issue 7, defect 6 (payments): a slow provider never holds the consumer's batch. The
consumer records "capture requested" and moves on; the provider worker calls the (slow,
loopback HTTP) provider outside the transaction, each call with its own timeout."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.test_payments_service import locked, placed, produce
from tests.support.card_provider import CardProvider, card_provider
from tests.support.polling import eventually
from tests.support.processes import started_service

ORDERS = 12


@pytest.fixture
def slow_provider() -> Iterator[CardProvider]:
    with card_provider() as running:
        running.ledger.charge_delay_s = 1.5
        yield running


async def applied(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    pattern = r'^fulfil_inbox_applied_total\{consumer="payments",topic="[^"]+"\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


async def test_a_slow_provider_does_not_hold_the_consumer(
    database: str, slow_provider: CardProvider
) -> None:
    async with started_service(
        "payments",
        database,
        FULFIL_PAYMENTS_GATEWAY="http",
        FULFIL_PAYMENTS_PROVIDER_URL=slow_provider.url,
        FULFIL_PAYMENTS_PROVIDER_KEY=slow_provider.key,
        FULFIL_PAYMENTS_PROVIDER_TIMEOUT_S="5",
    ) as (_, client):
        order_ids = [uuid.uuid4() for _ in range(ORDERS)]
        await produce(*(placed(o, "tok_visa") for o in order_ids))
        await produce(*(locked(o) for o in order_ids))
        # Every record is applied (tracked) while the provider has answered only a few
        # charges: the batch never waited for it (before: one charge after another inside
        # the batch, 1.5 s each).
        await eventually(lambda: applied(client), until=lambda n: n == 2 * ORDERS, what="applied")
        assert slow_provider.ledger.answered_charges < ORDERS // 2
        statuses = {(await client.get(f"/payments/{o}")).json()["status"] for o in order_ids}
        assert "authorising" in statuses  # intents recorded, calls still under way

        async def captured() -> int:
            views = [(await client.get(f"/payments/{o}")).json() for o in order_ids]
            return sum(v["status"] == "captured" for v in views)

        await eventually(captured, until=lambda n: n == ORDERS, timeout=60, what="all captured")
        assert slow_provider.ledger.money_moves == ORDERS
