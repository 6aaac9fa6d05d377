"""Issue 7, defect 2 on the real broker, PostgreSQL and an HTTP card provider on loopback:
the provider takes the capture and drops the response; the payment is `unknown`, then
captured after reconciliation (a lookup), and the order ships. A definite decline (402)
still cancels the order and releases its stock."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.card_provider import CardProvider, card_provider
from tests.support.polling import eventually
from tests.support.processes import started_service
from tests.support.stack import create_database, drop_database

SERVICES = ("orders", "inventory", "payments", "shipping")


@pytest.fixture
def provider() -> Iterator[CardProvider]:
    with card_provider() as running:
        yield running


@dataclass
class Services:
    clients: dict[str, httpx.AsyncClient]

    def __getitem__(self, name: str) -> httpx.AsyncClient:
        return self.clients[name]


@pytest.fixture
async def services(provider: CardProvider) -> AsyncIterator[Services]:
    databases = {name: create_database(f"fulfil_recon_{name}") for name in SERVICES}
    env: dict[str, dict[str, str]] = {
        "orders": {},
        "inventory": {},
        "payments": {
            "FULFIL_PAYMENTS_GATEWAY": "http",
            "FULFIL_PAYMENTS_PROVIDER_URL": provider.url,
            "FULFIL_PAYMENTS_PROVIDER_KEY": provider.key,
            "FULFIL_PAYMENTS_PROVIDER_TIMEOUT_S": "2",
            "FULFIL_PAYMENTS_GATEWAY_BACKOFF_S": "0.01",
            "FULFIL_PAYMENTS_RECONCILE_FIRST_S": "0.2",
        },
        "shipping": {"FULFIL_SHIPPING_AUTO_DISPATCH_S": "0.2"},
    }
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = {}
            for name in SERVICES:
                _, client = await stack.enter_async_context(
                    started_service(
                        name,
                        databases[name],
                        FULFIL_CONSUMER_BACKOFF_S="0.05",
                        log_name=f"recon-{name}-{databases[name]}",
                        **env[name],
                    )
                )
                clients[name] = client
            yield Services(clients)
    finally:
        for database in databases.values():
            drop_database(database)


async def place(services: Services, sku: str, token: str) -> str:
    body = {
        "customer_id": str(uuid.uuid4()),
        "lines": [{"sku": sku, "quantity": 2, "unit_price_minor": 1250}],
        "currency": "EUR",
        "payment_token": token,
        "shipping_address": {
            "recipient_name": "Ada Example",
            "line1": "1 Sample Street",
            "city": "Berlin",
            "postal_code": "10115",
            "country_code": "DE",
        },
    }
    reply = await services["orders"].post(
        "/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["order_id"])


async def order_reaches(services: Services, order_id: str, status: str) -> dict[str, Any]:
    async def probe() -> Any:
        reply = await services["orders"].get(f"/orders/{order_id}")
        return reply.json() if reply.status_code == 200 else None

    order: dict[str, Any] = await eventually(
        probe,
        until=lambda o: o is not None and o["status"] == status,
        timeout=60,
        what=f"order {status}",
    )
    return order


async def test_a_lost_capture_response_is_reconciled_and_the_order_ships(
    services: Services, provider: CardProvider
) -> None:
    sku = f"RECON-{uuid.uuid4().hex[:6].upper()}"
    receipt = await services["inventory"].post(f"/stock/{sku}/receipts", json={"quantity": 5})
    assert receipt.status_code in (200, 201), receipt.text

    order_id = await place(services, sku, "tok_lost_response")
    shipped = await order_reaches(services, order_id, "shipped")
    assert shipped["paid_minor"] == 2500

    payment = (await services["payments"].get(f"/payments/{order_id}")).json()
    assert (payment["status"], payment["captured_minor"]) == ("captured", 2500)
    ledger = provider.ledger
    assert ledger.dropped_responses >= 1  # the capture's answer was lost ...
    assert ledger.lookups >= 1  # ... and found by looking it up
    assert ledger.money_moves == 1  # charged once, never refunded
    assert ledger.refunds == {}

    async def stock() -> Any:
        return (await services["inventory"].get(f"/stock/{sku}")).json()

    await eventually(stock, until=lambda s: s["on_hand"] == 3, what="2 units committed")


async def test_a_definite_decline_still_cancels_and_releases(
    services: Services, provider: CardProvider
) -> None:
    sku = f"DECL-{uuid.uuid4().hex[:6].upper()}"
    receipt = await services["inventory"].post(f"/stock/{sku}/receipts", json={"quantity": 5})
    assert receipt.status_code in (200, 201), receipt.text

    order_id = await place(services, sku, "tok_insufficient_funds")
    cancelled = await order_reaches(services, order_id, "cancelled")
    assert cancelled["cancelled_by"] == "system"
    assert "insufficient_funds" in cancelled["cancel_reason"]
    payment = (await services["payments"].get(f"/payments/{order_id}")).json()
    assert (payment["status"], payment["failure_reason"]) == ("failed", "insufficient_funds")

    async def available() -> Any:
        return (await services["inventory"].get(f"/stock/{sku}")).json()

    await eventually(available, until=lambda s: s["available"] == 5, what="stock released")
    assert provider.ledger.money_moves == 0
