"""Service processes started by tests, black-box, as `make run` starts them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.polling import eventually

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
