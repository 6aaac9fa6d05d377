"""Start, stop and talk to the five services and the read models the way `make run` runs them."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from fulfilment_kit.contracts import topics
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.settings import PostgresSettings, ServiceSettings
from inventory.application import InventoryApplication
from inventory.domain import stock_item_id
from tests.support.auth import staff_headers
from tests.support.polling import eventually
from tests.support.processes import (
    ServiceProcess,
    free_port,
    service_process,
    wait_ready,
)
from tests.support.stack import Record, create_database, drop_database, read_topic

SERVICES = ("orders", "inventory", "payments", "shipping", "customer-service")
READ_MODELS = "read-models"
"""The read-models process (`fulfil-read-models`): writes the tables in customer-service's
database that customer-service's `/timeline`, `/customers`, `/kpis` read."""
PROCESSES = (*SERVICES, READ_MODELS)

# Short stage deadlines so a stuck order is flagged within the test's patience.
E2E_SETTINGS = {
    "FULFIL_ORDERS_DEADLINE_PLACED_S": "8",
    "FULFIL_ORDERS_DEADLINE_STOCK_LOCKED_S": "8",
    "FULFIL_CONSUMER_BACKOFF_S": "0.05",
    # customer-service: a clock the tests move (POST /_test/clock) and a brisk SLA watch
    "FULFIL_TEST_CLOCK": "1",
    "FULFIL_CASE_SLA_POLL_S": "0.2",
}


@dataclass
class Service:
    name: str
    database: str
    port: int
    process: ServiceProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        """A client of the service's API calling as staff, or with `headers`' token."""
        return httpx.AsyncClient(base_url=self.url, timeout=30, headers=headers or staff_headers())


@dataclass
class Platform:
    services: dict[str, Service] = field(default_factory=dict)
    """The five services (each with its database and `GET /events`)."""
    read_models: Service | None = None
    keys_database: str = ""
    """The key store every service shares (per-customer data keys of personal data)."""

    @classmethod
    def create(cls) -> Platform:
        platform = cls()
        platform.keys_database = create_database("fulfil_e2e_keys")
        settings = platform.settings()
        for name in SERVICES:
            database = create_database(f"fulfil_e2e_{name.replace('-', '_')}")
            port = free_port()
            process = service_process(
                name, database, port, log_name=f"e2e-{name}-{database}", **settings
            )
            platform.services[name] = Service(name, database, port, process)
        database, port = platform.services["customer-service"].database, free_port()
        process = service_process(
            READ_MODELS, database, port, log_name=f"e2e-{READ_MODELS}-{database}", **settings
        )
        platform.read_models = Service(READ_MODELS, database, port, process)
        return platform

    async def start(self, *names: str) -> None:
        """Start `names` (default: every process) and wait until each is ready."""
        chosen = [self[n] for n in names or PROCESSES]
        for service in chosen:
            service.process.start()
        await asyncio.gather(*(wait_ready(s.url, s.process, timeout=90) for s in chosen))

    def stop(self, *names: str) -> None:
        for name in names or PROCESSES:
            self[name].process.stop()

    def settings(self) -> dict[str, str]:
        """What every process of this platform runs with (a restarted one too): the e2e
        settings and the key store they all share."""
        return {**E2E_SETTINGS, "FULFIL_PRIVACY_KEYSTORE_DBNAME": self.keys_database}

    def drop_databases(self) -> None:
        for service in self.services.values():
            drop_database(service.database)
        if self.keys_database:
            drop_database(self.keys_database)

    def __getitem__(self, name: str) -> Service:
        if name == READ_MODELS and self.read_models is not None:
            return self.read_models
        return self.services[name]

    # --- conveniences over the public APIs ---

    async def get(self, service: str, path: str) -> Any:
        async with self[service].client() as client:
            reply = await client.get(path)
            return reply.json() if reply.status_code == 200 else None

    async def receive_stock(self, sku: str, quantity: int) -> dict[str, Any]:
        async with self["inventory"].client() as client:
            reply = await client.post(f"/stock/{sku}/receipts", json={"quantity": quantity})
            assert reply.status_code in (200, 201), reply.text
            return dict(reply.json())

    async def place_order(
        self,
        lines: list[tuple[str, int, int]],
        token: str = "tok_visa",
        address: dict[str, str] | None = None,
        customer_id: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "customer_id": customer_id or str(uuid.uuid4()),
            "lines": [{"sku": s, "quantity": q, "unit_price_minor": p} for s, q, p in lines],
            "currency": "EUR",
            "payment_token": token,
            "shipping_address": {
                "recipient_name": "Ada Example",
                "line1": "1 Sample Street",
                "city": "Berlin",
                "postal_code": "10115",
                "country_code": "DE",
                **(address or {}),
            },
        }
        async with self["orders"].client() as client:
            reply = await client.post(
                "/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
            )
            assert reply.status_code == 201, reply.text
            return dict(reply.json())

    async def order_reaches(
        self, order_id: str, status: str, timeout: float = 60
    ) -> dict[str, Any]:
        async def probe() -> Any:
            return await self.get("orders", f"/orders/{order_id}")

        order: dict[str, Any] = await eventually(
            probe,
            until=lambda o: o is not None and o["status"] == status,
            timeout=timeout,
            what=f"order {order_id} {status}",
        )
        return order

    async def stock_history(self, sku: str) -> list[int]:
        """Available units of `sku` after each event in the inventory's event store."""

        def replay() -> list[int]:
            env = eventsourcing_env(
                "inventory", ServiceSettings(), PostgresSettings(dbname=self["inventory"].database)
            )
            app = InventoryApplication(env=env)
            try:
                item: Any = None
                history = []
                for domain_event in app.events.get(stock_item_id(sku)):
                    item = domain_event.mutate(item)
                    history.append(item.available)
                return history
            finally:
                app.close()

        return await asyncio.to_thread(replay)

    async def shipment_reaches(
        self, order_id: str, status: str, timeout: float = 60
    ) -> dict[str, Any]:
        async def probe() -> Any:
            return await self.get("shipping", f"/shipments/{order_id}")

        shipment: dict[str, Any] = await eventually(
            probe,
            until=lambda s: s is not None and s["status"] == status,
            timeout=timeout,
            what=f"shipment {order_id} {status}",
        )
        return shipment


def new_sku(prefix: str = "E2E") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8].upper()}"


async def events_of(topic: str, order_id: str) -> list[Record]:
    """The records of one order on a topic, in partition order (one partition per key)."""
    records = await read_topic(topics.physical(topic))
    return sorted((r for r in records if r.key == order_id.encode()), key=lambda r: r.offset)


def types_of(records: list[Record]) -> list[str]:
    return [r.headers["ce_type"] for r in records]
