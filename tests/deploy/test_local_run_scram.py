"""`make run` in SCRAM mode: every process of the Procfile that talks to Kafka does so as its
own Kafka user (deploy/local/kafka-user.sh), never as the broker's admin."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from fulfilment_kit.contracts import access
from tests.deploy.test_local_run import procfile

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "deploy/local/kafka-user.sh"
WRAPPED = re.compile(r"exec deploy/local/kafka-user\.sh (\S+) \.venv/bin/fulfil-(\S+)")


def test_every_deployable_and_replica_runs_as_its_own_kafka_user() -> None:
    entries = procfile(FULFIL_REPLICAS="2")
    users = {}
    for name, command in entries.items():
        if name == "demo":  # HTTP only: no Kafka credentials at all
            assert "kafka-user.sh" not in command
            continue
        found = WRAPPED.search(command)
        assert found, f"{name} does not start through kafka-user.sh: {command}"
        users[name] = found.group(1)
        assert found.group(2) == found.group(1)
    assert users == {
        **{user: user for user in access.users()},
        **{f"{user}-2": user for user in access.users()},
    }


def wrapped(user: str, passwords: Path | None) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "KAFKA_SASL_USERNAME": "admin",
        "KAFKA_SASL_PASSWORD": "the-admins",
    }
    if passwords is not None:
        env["FULFIL_KAFKA_PASSWORDS"] = str(passwords)
    return subprocess.run(
        ["bash", str(WRAPPER), user, "env"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_wrapper_swaps_the_admins_credentials_for_the_users_own(tmp_path: Path) -> None:
    passwords = tmp_path / "users.passwords"
    passwords.write_text("# dev only\norders=o-pw\ninventory=i-pw\n")
    orders = wrapped("orders", passwords)
    assert orders.returncode == 0, orders.stderr
    assert "KAFKA_SASL_USERNAME=orders" in orders.stdout.splitlines()
    assert "KAFKA_SASL_PASSWORD=o-pw" in orders.stdout.splitlines()
    assert "the-admins" not in orders.stdout

    unknown = wrapped("payments", passwords)
    assert unknown.returncode == 1
    assert "no Kafka password for user 'payments'" in unknown.stderr

    plaintext = wrapped("orders", None)  # no SCRAM stack: no credentials, not the admin's
    assert plaintext.returncode == 0, plaintext.stderr
    assert "KAFKA_SASL" not in plaintext.stdout
