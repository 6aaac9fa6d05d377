"""`make run` (deploy/local/run.sh): every deployable of the registry, with replicas on
request (FULFIL_REPLICAS), each replica on a port of its own that Prometheus scrapes."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from fulfilment_kit.contracts import access

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^([a-z0-9-]+): (.*)$")


def procfile(**env: str) -> dict[str, str]:
    out = subprocess.run(
        ["bash", "deploy/local/run.sh", "procfile"],
        cwd=REPO,
        env={**os.environ, "FULFIL_REPLICAS": "", **env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    entries = dict(m.groups() for line in out.splitlines() if (m := LINE.match(line)))
    assert len(entries) == len(out.splitlines()), out
    return entries


def port_of(command: str) -> int | None:
    """The port run.sh gives the process (None: the service's own default port)."""
    found = re.search(r"FULFIL_HTTP_PORT=(\d+)", command)
    return int(found.group(1)) if found else None


DEFAULT_PORTS = {
    "orders": 8001,
    "inventory": 8002,
    "payments": 8003,
    "shipping": 8004,
    "customer-service": 8005,
    "read-models": 8006,
}


def test_make_run_starts_every_deployable_once_by_default() -> None:
    entries = procfile()
    assert set(entries) == {*access.users(), "demo"}
    for name in access.users():
        assert f".venv/bin/fulfil-{name}" in entries[name]
        assert (REPO / ".venv/bin" / f"fulfil-{name}").exists()
        assert "FULFIL_HTTP_PORT" not in entries[name]  # its documented default port
    assert set(DEFAULT_PORTS) == set(access.users())


def test_replicas_of_every_deployable_get_ports_of_their_own() -> None:
    entries = procfile(FULFIL_REPLICAS="2", FULFIL_REPLICAS_READ_MODELS="3")
    expected = {*access.users(), *(f"{u}-2" for u in access.users()), "read-models-3", "demo"}
    assert set(entries) == expected
    assert all(port_of(entries[u]) is None for u in access.users())  # replica 1: own port
    more = [port_of(c) for n, c in entries.items() if n not in access.users() and n != "demo"]
    assert None not in more
    assert len(set(more)) == len(more)
    assert not set(more) & set(DEFAULT_PORTS.values())
    assert port_of(entries["orders-2"]) == 8101
    assert port_of(entries["read-models-3"]) == 8206
    # each replica runs the same command as replica 1 (shipping keeps its dispatch delay)
    assert entries["shipping-2"].endswith(entries["shipping"])


def test_a_bad_replica_count_starts_nothing() -> None:
    result = subprocess.run(
        ["bash", "deploy/local/run.sh", "procfile"],
        cwd=REPO,
        env={**os.environ, "FULFIL_REPLICAS": "many"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "FULFIL_REPLICAS" in result.stderr
