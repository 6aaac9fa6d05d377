"""Issue 11: schemathesis (every check, stateful phase, bounded examples) against each
service's own OpenAPI, over HTTP to the real process on a real PostgreSQL and Kafka: zero
failures. Each run's summary (operations, requests) goes to .local/test-logs/."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.auth import staff_headers
from tests.support.processes import LOG_DIR, running_service
from tests.support.stack import create_database, drop_database

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests/support/schemathesis.toml"
SERVICES = tuple(
    os.environ.get(
        "FULFIL_SCHEMATHESIS_SERVICES", "orders,inventory,payments,shipping,customer-service"
    ).split(",")
)
MAX_EXAMPLES = int(os.environ.get("FULFIL_SCHEMATHESIS_MAX_EXAMPLES", "8"))
SEED = os.environ.get("FULFIL_SCHEMATHESIS_SEED", "20261201")
PHASES = "examples,fuzzing,stateful"
RUN_TIMEOUT_S = 240


def auth_headers(service: str) -> list[str]:
    """`-H` options of a caller of `service`: the suite's staff token (every role but
    customer). Carrier webhooks stay unsigned here, so they answer their documented 401."""
    return [f"--header=Authorization:{staff_headers()['Authorization']}"]


def schemathesis_command(base_url: str, service: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "schemathesis"),
        "--no-color",
        "--config-file",
        str(CONFIG),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        PHASES,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        SEED,
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--suppress-health-check",
        "too_slow,filter_too_much",
        *auth_headers(service),
    ]


def run_schemathesis(base_url: str, service: str) -> tuple[int, str]:
    """Exit code and output of one schemathesis run against `base_url` (the output is kept
    in .local/test-logs, also when the run is cut off)."""
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
        "PYTHONPATH": str(REPO),
    }
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"schemathesis-{service}.txt"
    with log_path.open("w") as log:
        try:
            done = subprocess.run(
                schemathesis_command(base_url, service),
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=RUN_TIMEOUT_S,
                check=False,
            )
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = -1
    output = log_path.read_text(errors="replace")
    if code == -1:
        output += f"\n(cut off after {RUN_TIMEOUT_S} s)"
    return code, output


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    names = {service: create_database("fulfil_fuzz") for service in SERVICES}
    yield names
    for name in names.values():
        drop_database(name)


async def test_schemathesis_finds_no_failure_on_any_service(databases: dict[str, str]) -> None:
    """The five services, each with its own schemathesis run (one after another: on two
    cores parallel runs only contend)."""
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(running_service(name, databases[name]))
            for name in SERVICES
        }
        runs = [
            await asyncio.to_thread(run_schemathesis, str(c.base_url).rstrip("/"), n)
            for n, c in clients.items()
        ]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    summaries: list[str] = []
    failed: list[str] = []
    for service, (code, output) in zip(SERVICES, runs, strict=True):
        tested = re.search(r"Tested: (\d+)", output)
        generated = re.search(r"(\d+) generated", output)
        summaries.append(
            f"{service}: operations tested {tested.group(1) if tested else '?'}, "
            f"test cases {generated.group(1) if generated else '?'}, exit {code}"
        )
        if code != 0 or tested is None or int(tested.group(1)) == 0:
            failed.append(f"--- {service}\n{output[-5000:]}")
    (LOG_DIR / "schemathesis-summary.txt").write_text("\n".join(summaries) + "\n")
    assert not failed, "\n".join(summaries) + "\n" + "\n".join(failed)
