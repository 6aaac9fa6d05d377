"""The platform as the chaos suite runs it: N replicas of each service and of the read models
against one database per service, the card provider on loopback, and an HTTP client that
spreads calls over the live replicas of a service like a load balancer."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.platform import PROCESSES, READ_MODELS, SERVICES
from tests.support.auth import staff_headers
from tests.support.card_provider import CardProvider
from tests.support.processes import ServiceProcess, free_port, service_process, wait_ready
from tests.support.stack import create_database, drop_database

PROVIDER_TIMEOUT_S = 1.5
"""payments' timeout per provider call; the slow-provider fault answers after longer."""

CHAOS_SETTINGS = {
    # Stage deadlines longer than the longest outage: a flag here would mean a stuck order.
    "FULFIL_ORDERS_DEADLINE_PLACED_S": "120",
    "FULFIL_ORDERS_DEADLINE_STOCK_LOCKED_S": "120",
    "FULFIL_CONSUMER_BACKOFF_S": "0.1",
    "FULFIL_CONSUMER_MAX_BACKOFF_S": "2",
    "FULFIL_LOG_LEVEL": "WARNING",
    "FULFIL_PAYMENTS_GATEWAY": "http",
    "FULFIL_PAYMENTS_PROVIDER_TIMEOUT_S": str(PROVIDER_TIMEOUT_S),
    "FULFIL_PAYMENTS_RECONCILE_FIRST_S": "0.5",
    "FULFIL_PAYMENTS_RECONCILE_MAX_S": "3",
}

RETRY_STATUSES = {502, 503, 504}


@dataclass
class Replica:
    service: str
    index: int
    database: str
    port: int
    process: ServiceProcess
    removed: bool = False
    """Stopped on purpose (scaled in): not expected to be ready at the end."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return f"{self.service}#{self.index}"

    @property
    def running(self) -> bool:
        return self.process.proc is not None and self.process.proc.poll() is None


@dataclass
class ChaosPlatform:
    provider: CardProvider
    replicas_per_service: int = 2
    databases: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, list[Replica]] = field(default_factory=dict)
    _turn: itertools.count[int] = field(default_factory=itertools.count)
    keys_database: str = ""
    """The key store every service shares (per-customer data keys of personal data)."""

    def __post_init__(self) -> None:
        self.keys_database = create_database("fulfil_chaos_keys")
        for name in SERVICES:
            self.databases[name] = create_database(f"fulfil_chaos_{name.replace('-', '_')}")
        # the read models write customer-service's tables (which customer-service serves)
        self.databases[READ_MODELS] = self.databases["customer-service"]
        for name in PROCESSES:
            self.replicas[name] = [self._replica(name, i) for i in range(self.replicas_per_service)]

    def _replica(self, service: str, index: int) -> Replica:
        database = self.databases[service]
        port = free_port()
        env = {
            **CHAOS_SETTINGS,
            "FULFIL_PRIVACY_KEYSTORE_DBNAME": self.keys_database,
            "FULFIL_PAYMENTS_PROVIDER_URL": self.provider.url,
            "FULFIL_PAYMENTS_PROVIDER_KEY": self.provider.key,
        }
        process = service_process(
            service, database, port, log_name=f"chaos-{service}-{index}-{database}", **env
        )
        return Replica(service, index, database, port, process)

    # --- lifecycle ---

    async def start_all(self, timeout: float = 240) -> None:
        everyone = [r for rs in self.replicas.values() for r in rs]
        for replica in everyone:
            replica.process.start()
        await asyncio.gather(*(self.ready(r, timeout) for r in everyone))

    async def ready(self, replica: Replica, timeout: float = 180) -> None:
        await wait_ready(replica.url, replica.process, timeout=timeout)

    def stop_all(self) -> None:
        for replica in (r for rs in self.replicas.values() for r in rs):
            replica.process.stop()

    def drop_databases(self) -> None:
        for name in SERVICES:
            drop_database(self.databases[name])
        drop_database(self.keys_database)

    async def add_replica(self, service: str) -> Replica:
        """Scale out: one more replica of `service` (the consumer group rebalances)."""
        replica = self._replica(service, len(self.replicas[service]))
        self.replicas[service].append(replica)
        replica.process.start()
        return replica

    def remove_replica(self, replica: Replica) -> None:
        """Scale in: a graceful stop (SIGTERM), as Kubernetes does on a scale-down."""
        replica.removed = True
        replica.process.stop()

    def live(self, service: str) -> list[Replica]:
        return [r for r in self.replicas[service] if r.running and not r.removed]

    def expected_up(self) -> list[Replica]:
        return [r for rs in self.replicas.values() for r in rs if not r.removed]

    async def not_ready(self) -> list[str]:
        """The replicas that should run and do not answer /readyz with 200."""
        down = []
        async with httpx.AsyncClient(timeout=5) as client:
            for replica in self.expected_up():
                try:
                    ok = (await client.get(f"{replica.url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    down.append(replica.name)
        return down


class Api:
    """Calls the services' public APIs through their live replicas, retrying what a client
    behind a load balancer retries (connection refused/reset, 502/503/504) with the same
    request, so the same Idempotency-Key, until a deadline."""

    def __init__(self, platform: ChaosPlatform, *, deadline_s: float = 150) -> None:
        self.platform = platform
        self.deadline_s = deadline_s
        self.client = self._new_client()
        self.staff = staff_headers()
        self.retries = 0
        self.pools_renewed = 0
        self._old_clients: list[httpx.AsyncClient] = []

    @staticmethod
    def _new_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(20, connect=3), limits=httpx.Limits(max_connections=64)
        )

    def _renew_pool(self, stuck: httpx.AsyncClient) -> None:
        """A fresh client after a PoolTimeout. httpcore 1.0.9 leaks the slot of a request
        cancelled while it waits for a connection of a full pool (encode/httpcore#1093: "only
        recreating the pool recovers"); the open-loop traffic fills the pool whenever the
        platform slows down, so the leaked slots add up until every request times out."""
        if self.client is stuck:
            self._old_clients.append(stuck)
            self.client = self._new_client()
            self.pools_renewed += 1

    async def close(self) -> None:
        for client in (*self._old_clients, self.client):
            await client.aclose()

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        retry_on: frozenset[int] = frozenset(),
        deadline_s: float | None = None,
    ) -> httpx.Response:
        """The first answer that is not a transport error, a 5xx from a dependency, or one of
        `retry_on` (e.g. 404 before an event arrived); the last one at the deadline."""
        deadline = time.monotonic() + (deadline_s or self.deadline_s)
        sent_headers = {**self.staff, **(headers or {})}
        delay = 0.2
        last: httpx.Response | None = None
        error: BaseException | None = None
        while True:
            replicas = self.platform.live(service) or self.platform.replicas[service]
            replica = replicas[next(self.platform._turn) % len(replicas)]
            client = self.client
            try:
                reply = await client.request(
                    method,
                    f"{replica.url}{path}",
                    headers=sent_headers,
                    json=json,
                    content=content,
                )
                if reply.status_code not in RETRY_STATUSES and reply.status_code not in retry_on:
                    return reply
                last = reply
            except httpx.PoolTimeout as exc:
                error = exc
                self._renew_pool(client)
            except httpx.TransportError as exc:
                error = exc
            if time.monotonic() > deadline:
                if last is not None:
                    return last
                states = ", ".join(
                    f"{r.name} {'running' if r.running else 'exited'}{' (removed)' * r.removed}"
                    for r in self.platform.replicas[service]
                )
                raise AssertionError(
                    f"{method} {service}{path}: no answer before the deadline "
                    f"(last error {error!r}; replicas: {states})"
                )
            self.retries += 1
            await asyncio.sleep(delay * (0.5 + random.random()))  # backoff inside a deadline
            delay = min(delay * 1.6, 2.0)
