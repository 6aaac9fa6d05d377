"""Start and stop the whole platform for one benchmark run, as the end-to-end tests do.

Each run gets a fresh topic prefix (FULFIL_TOPIC_PREFIX), its topics (DLQs included), a
fresh PostgreSQL database per service and the five service processes. `stop()` undoes all
of it and is safe to call after a partial start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.messaging.admin import ensure_topics
from fulfilment_kit.settings import KafkaSettings, PostgresSettings

REPO = Path(__file__).resolve().parents[1]
LOG_DIR = REPO / ".local" / "bench-logs"
SERVICES = ("orders", "inventory", "payments", "shipping", "customer-service")
READ_MODELS = "read-models"
"""The read-models process: on customer-service's database, not one of `services` (no
database or `GET /events` of its own), started and stopped with them."""

T = TypeVar("T")


class Timeout(TimeoutError):
    """A polled condition did not hold before its deadline."""


async def poll_until(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Call `probe` until `until(result)` holds; raise Timeout with the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise Timeout(f"{what} did not hold within {timeout:.0f}s; last value: {result!r}")
        await asyncio.sleep(interval)  # poll interval inside a deadline loop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database_dsn(dbname: str) -> str:
    pg = PostgresSettings()
    return f"host={pg.host} port={pg.port} user={pg.user} password={pg.password} dbname={dbname}"


def admin_dsn() -> str:
    return database_dsn("postgres")


def create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def delete_topics(names: list[str]) -> None:
    admin = kafka.admin(KafkaSettings())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def entrypoint(name: str) -> str:
    """The console script of a service (next to this interpreter, else in the repo's .venv),
    relative to the repo when inside it, e.g. `.venv/bin/fulfil-orders` (started with the
    repo as working directory).

    Relative on purpose: `deploy/local/run.sh` (`make run`, `make stop`) ends stray services
    with `pkill -f <repo>/.venv/bin/fulfil-`, which would also end a benchmark in progress.
    """
    script = Path(sys.executable).parent / f"fulfil-{name}"
    if not script.exists():
        script = REPO / ".venv" / "bin" / f"fulfil-{name}"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(REPO))
    return str(script)


@dataclass
class ServiceProcess:
    name: str
    port: int
    database: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [entrypoint(self.name)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class BenchPlatform:
    """The five services on a fresh prefix and fresh databases."""

    auto_dispatch_s: float = 0.05
    log_level: str = "WARNING"
    prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}.")
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    read_models: ServiceProcess | None = None
    topic_names: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    async def start(self, ready_timeout: float = 120) -> None:
        os.environ["FULFIL_TOPIC_PREFIX"] = self.prefix
        self.topic_names = topics.all_physical_topics()
        await ensure_topics(self.topic_names)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for name in SERVICES:
            database = await asyncio.to_thread(
                create_database, f"fulfil_bench_{name.replace('-', '_')}"
            )
            self.databases.append(database)
            port = free_port()
            env = dict(os.environ)
            env.update(
                FULFIL_TOPIC_PREFIX=self.prefix,
                FULFIL_HTTP_PORT=str(port),
                POSTGRES_DBNAME=database,
                FULFIL_SHIPPING_AUTO_DISPATCH_S=str(self.auto_dispatch_s),
                FULFIL_LOG_LEVEL=self.log_level,
            )
            log_path = LOG_DIR / f"{stamp}-{name}.log"
            self.services[name] = ServiceProcess(name, port, database, env, log_path)
        customer_service = self.services["customer-service"]
        port = free_port()
        env = dict(customer_service.env, FULFIL_HTTP_PORT=str(port))
        log_path = LOG_DIR / f"{stamp}-{READ_MODELS}.log"
        self.read_models = ServiceProcess(
            READ_MODELS, port, customer_service.database, env, log_path
        )
        for service in self.processes():
            service.start()
        await asyncio.gather(*(self._wait_ready(s, ready_timeout) for s in self.processes()))

    def processes(self) -> list[ServiceProcess]:
        """The services and the read-models process."""
        return [*self.services.values(), *([self.read_models] if self.read_models else [])]

    async def _wait_ready(self, service: ServiceProcess, timeout: float) -> None:
        async with httpx.AsyncClient(base_url=service.url, timeout=5) as client:

            async def ready() -> bool:
                if service.exited():
                    raise RuntimeError(
                        f"{service.name} exited early (log {service.log_path}):\n"
                        f"{service.log_tail()}"
                    )
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await poll_until(ready, timeout=timeout, what=f"{service.name} ready")

    def dead(self) -> list[str]:
        """Services whose process has exited, with their exit status."""
        return [
            f"{s.name} (exit status {s.proc.returncode}, log {s.log_path})"
            for s in self.processes()
            if s.proc is not None and s.proc.poll() is not None
        ]

    def stop_processes(self, timeout: float = 15) -> None:
        running = [s for s in self.processes() if s.proc and s.proc.poll() is None]
        for service in running:
            assert service.proc is not None
            service.proc.terminate()
        deadline = time.monotonic() + timeout
        for service in running:
            assert service.proc is not None
            try:
                service.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.proc.send_signal(signal.SIGKILL)
                service.proc.wait(10)

    async def stop(self) -> list[str]:
        """Stop the processes, drop the databases, delete the topics; returns the problems."""
        problems: list[str] = []
        try:
            self.stop_processes()
        except Exception as exc:
            problems.append(f"stopping services: {exc!r}")
        for database in self.databases:
            try:
                await asyncio.to_thread(drop_database, database)
            except Exception as exc:
                problems.append(f"dropping {database}: {exc!r}")
        if self.topic_names:
            try:
                await delete_topics(self.topic_names)
            except Exception as exc:
                problems.append(f"deleting topics {self.prefix}*: {exc!r}")
        with contextlib.suppress(KeyError):
            if os.environ["FULFIL_TOPIC_PREFIX"] == self.prefix:
                del os.environ["FULFIL_TOPIC_PREFIX"]
        return problems


def api_headers() -> dict[str, str]:
    """A bearer token of the dev issuer with every staff role (the services' dev default)."""
    from fulfilment_kit import devauth
    from fulfilment_kit.http.auth import ROLES, STAFF

    roles = [r for r in ROLES if r in STAFF]
    return {"Authorization": f"Bearer {devauth.mint(roles, 'bench', ttl_s=4 * 3600)}"}
