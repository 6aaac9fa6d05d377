"""Service processes started by tests, black-box, as `make run` starts them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.support import kafka_security
from tests.support.auth import staff_headers
from tests.support.polling import eventually
from tests.support.stack import shared_key_store

REPO = Path(__file__).resolve().parents[2]
LOG_DIR = REPO / ".local" / "test-logs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """One service (or relay-only) process with its own log file."""

    def __init__(self, command: list[str], env: dict[str, str], name: str) -> None:
        self.command = command
        self.env = env
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a node dying."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def service_command(entrypoint: str, *args: str) -> list[str]:
    return [str(Path(sys.executable).parent / entrypoint), *args]


async def wait_ready(base_url: str, proc: ServiceProcess, timeout: float = 60) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:

        async def ready() -> bool:
            if proc.proc is not None and proc.proc.poll() is not None:
                raise AssertionError(f"{proc.name} exited early:\n{proc.log_tail()}")
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout=timeout, what=f"{proc.name} ready")


def service_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def service_process(
    name: str, database: str, port: int, *, log_name: str | None = None, **env: str
) -> ServiceProcess:
    """The `fulfil-<name>` process (not started yet) on `database`, listening on `port`."""
    credentials = kafka_security.service_env(name)  # its own Kafka user when SASL is on
    if (
        "FULFIL_PRIVACY_KEYSTORE_DBNAME" not in env
        and env.get("FULFIL_PERSISTENCE", os.environ.get("FULFIL_PERSISTENCE")) != "sqlite"
    ):
        env = {"FULFIL_PRIVACY_KEYSTORE_DBNAME": shared_key_store(), **env}
    return ServiceProcess(
        service_command(f"fulfil-{name}"),
        service_env(POSTGRES_DBNAME=database, FULFIL_HTTP_PORT=str(port), **credentials, **env),
        name=log_name or f"{name}-{database}",
    )


@contextlib.asynccontextmanager
async def started_service(
    name: str,
    database: str,
    *,
    ready_timeout: float = 60,
    client_timeout: float = 10,
    log_name: str | None = None,
    **env: str,
) -> AsyncIterator[tuple[ServiceProcess, httpx.AsyncClient]]:
    """The `fulfil-<name>` process on `database` with `env`, once ready, and a client to its
    HTTP API calling as staff (tests.support.auth); stopped (and the client closed) afterwards."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = service_process(name, database, port, log_name=log_name, **env).start()
    try:
        await wait_ready(base_url, process, timeout=ready_timeout)
        async with httpx.AsyncClient(
            base_url=base_url, timeout=client_timeout, headers=staff_headers()
        ) as client:
            yield process, client
    finally:
        process.stop()


@contextlib.asynccontextmanager
async def running_service(
    name: str, database: str, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """`started_service` (the same arguments) for a test that only talks to it over HTTP."""
    async with started_service(name, database, **options) as (_, client):
        yield client
