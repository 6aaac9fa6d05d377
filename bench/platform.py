"""Start and stop the whole platform for one benchmark run, as the end-to-end tests do.

Each run gets a fresh topic prefix (FULFIL_TOPIC_PREFIX), its topics (DLQs included), a
fresh PostgreSQL database per service and the service processes (the five services, and the
read models' process where the platform has one; `replicas` of each). `stop()` undoes all
of it and is safe to call after a partial start.

The processes may come from another checkout of the repository (`root`, e.g. the temporary
worktree of `python -m bench.compare`): its own `.venv/bin/fulfil-*` are started in it, its
own topic registry creates the topics, and this checkout's bench code drives and measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
# Processes that are no service of their own but work on a service's database.
SHARES_DATABASE = {READ_MODELS: "customer-service"}

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


def bench_state_dir() -> Path:
    """This checkout's state dir (FULFIL_STATE_DIR, else `.local`), absolute."""
    return Path(os.environ.get("FULFIL_STATE_DIR") or REPO / ".local").resolve()


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


def script(name: str, root: Path = REPO) -> Path:
    """The console script `fulfil-<name>` of the checkout at `root` (for this checkout: next
    to this interpreter first, else in its .venv)."""
    if root == REPO:
        beside = Path(sys.executable).parent / f"fulfil-{name}"
        if beside.exists():
            return beside
    return root / ".venv" / "bin" / f"fulfil-{name}"


def entrypoint(name: str, root: Path = REPO) -> str:
    """The console script of a process, relative to `root` when inside it, e.g.
    `.venv/bin/fulfil-orders` (started with `root` as working directory).

    Relative on purpose: `deploy/local/run.sh` (`make run`, `make stop`) ends stray services
    with `pkill -f <repo>/.venv/bin/fulfil-`, which would also end a benchmark in progress.
    """
    path = script(name, root)
    with contextlib.suppress(ValueError):
        return str(path.relative_to(root))
    return str(path)


def processes_of(root: Path = REPO) -> tuple[str, ...]:
    """The processes a platform checkout runs: the five services, and the read models' own
    process where that checkout has one (`fulfil-read-models`)."""
    extra = (READ_MODELS,) if script(READ_MODELS, root).exists() else ()
    return (*SERVICES, *extra)


def instance_name(process: str, replica: int) -> str:
    """Replica 1 is named as its process, replica i as `<process>-<i>` (as `make run` does)."""
    return process if replica == 1 else f"{process}-{replica}"


def physical_topics(root: Path, prefix: str) -> list[str]:
    """Every topic (DLQs included) of the checkout at `root`, from its own registry."""
    if root == REPO:
        return topics.all_physical_topics()
    code = "import json; from fulfilment_kit.contracts import topics; "
    code += "print(json.dumps(topics.all_physical_topics()))"
    out = subprocess.run(
        [str(root / ".venv" / "bin" / "python"), "-c", code],
        cwd=root,
        env={**os.environ, "FULFIL_TOPIC_PREFIX": prefix},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = json.loads(out)
    assert isinstance(names, list)
    return [str(n) for n in names]


@dataclass
class ServiceProcess:
    name: str  # the instance: `orders`, `orders-2`, ...
    port: int
    database: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    process: str = ""  # what it runs: `orders` (default: the name)
    root: Path = REPO  # the checkout it runs from

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
                [entrypoint(self.process or self.name, self.root)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class BenchPlatform:
    """The platform's processes (`replicas` of each) on a fresh prefix and fresh databases."""

    auto_dispatch_s: float = 0.05
    log_level: str = "WARNING"
    prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}.")
    root: Path = REPO  # the checkout whose services run
    replicas: int = 1
    processes: tuple[str, ...] | None = None  # default: processes_of(root)
    services: dict[str, ServiceProcess] = field(default_factory=dict)  # instance -> process
    topic_names: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    def replicas_of(self, process: str) -> list[ServiceProcess]:
        return [s for s in self.services.values() if s.process == process]

    async def start(self, ready_timeout: float = 300) -> None:
        # 300 s: twelve processes (2 replicas) starting at once on the shared 2-core machine
        # took 115 s to be ready; a run that times out is lost to the comparison.
        os.environ["FULFIL_TOPIC_PREFIX"] = self.prefix
        if self.processes is None:
            self.processes = processes_of(self.root)
        self.topic_names = await asyncio.to_thread(physical_topics, self.root, self.prefix)
        await ensure_topics(self.topic_names)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        # One key store for every process: a value sealed by one service (the card token,
        # sealed by orders) is opened by another (payments) with the same data key.
        keys = await asyncio.to_thread(create_database, "fulfil_bench_keys")
        self.databases.append(keys)
        databases: dict[str, str] = {}
        for process in self.processes:
            owner = SHARES_DATABASE.get(process, process)
            if owner not in databases:
                databases[owner] = await asyncio.to_thread(
                    create_database, f"fulfil_bench_{owner.replace('-', '_')}"
                )
                self.databases.append(databases[owner])
            for replica in range(1, self.replicas + 1):
                name = instance_name(process, replica)
                port = free_port()
                env = self.environment(port, databases[owner], keys)
                log_path = LOG_DIR / f"{stamp}-{name}.log"
                self.services[name] = ServiceProcess(
                    name,
                    port,
                    databases[owner],
                    env,
                    log_path,
                    process=process,
                    root=self.root,
                )
        for service in self.services.values():
            service.start()
        await asyncio.gather(*(self._wait_ready(s, ready_timeout) for s in self.services.values()))

    def environment(self, port: int, database: str, keys: str) -> dict[str, str]:
        """The environment of one process: its port and database, the run's topic prefix
        and shared key store."""
        env = dict(os.environ)
        env.update(
            FULFIL_TOPIC_PREFIX=self.prefix,
            FULFIL_HTTP_PORT=str(port),
            POSTGRES_DBNAME=database,
            FULFIL_PRIVACY_KEYSTORE_DBNAME=keys,
            FULFIL_SHIPPING_AUTO_DISPATCH_S=str(self.auto_dispatch_s),
            FULFIL_LOG_LEVEL=self.log_level,
            # One dev issuer (its keys live in the state dir) for every checkout.
            FULFIL_STATE_DIR=str(bench_state_dir()),
        )
        return env

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

    async def not_ready(self) -> list[str]:
        """The replicas whose `/readyz` does not answer 200 now, with its reason. A consumer
        in the middle of a rebalance has no partitions assigned, and says so there."""
        async with httpx.AsyncClient(timeout=5) as client:

            async def probe(service: ServiceProcess) -> str | None:
                try:
                    reply = await client.get(service.url + "/readyz")
                except httpx.TransportError as exc:
                    return f"{service.name}: {type(exc).__name__}"
                return None if reply.status_code == 200 else f"{service.name}: {reply.text[:200]}"

            found = await asyncio.gather(*(probe(s) for s in self.services.values()))
        return [reason for reason in found if reason]

    async def wait_settled(self, timeout: float = 120, quiet_s: float = 3.0) -> float:
        """Wait until every replica of every process has been ready without a break for
        `quiet_s` (two heartbeats of the consumer groups: a member that must rejoin notices at
        its next heartbeat, and is not ready while its group rebalances). Returns the seconds
        waited. Called before the clock starts, so no rebalance of the replicas' consumer
        groups falls inside the measured window (each relay took or missed its lease at
        start, long before: one publishes, the other stands by)."""
        began = time.monotonic()
        since: float | None = None
        while True:
            problems = await self.not_ready()
            now = time.monotonic()
            if problems:
                since = None
                if now - began > timeout:
                    raise Timeout(f"replicas not settled within {timeout:.0f}s: {problems}")
            elif since is None:
                since = now
            elif now - since >= quiet_s:
                return now - began
            await asyncio.sleep(0.5)  # poll interval inside a deadline loop

    def dead(self) -> list[str]:
        """Services whose process has exited, with their exit status."""
        return [
            f"{s.name} (exit status {s.proc.returncode}, log {s.log_path})"
            for s in self.services.values()
            if s.proc is not None and s.proc.poll() is not None
        ]

    def stop_processes(self, timeout: float = 15) -> None:
        running = [s for s in self.services.values() if s.proc and s.proc.poll() is None]
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
