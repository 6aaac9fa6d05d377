"""docker-compose.yml: valid against the Compose Specification, every reference resolves,
and every service gets the environment the code reads (from its settings classes)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.settings_env import read_names, required_names

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
APP_SERVICES = {"orders", "inventory", "payments", "shipping", "customer-service"}


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_the_compose_file_validates_against_the_compose_spec() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", COMPOSE],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_depends_on_volume_and_variable_resolves() -> None:
    data = compose()
    services = data["services"]
    volumes = set(data.get("volumes") or {})
    for name, svc in services.items():
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on undefined service {dep}"
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"
    # every ${VAR} has a default: the file works without a .env
    for ref in re.findall(r"\$\{([^}]*)\}", COMPOSE.read_text()):
        assert ":-" in ref, f"${{{ref}}} has no default"
    assert set(data["services"]) >= APP_SERVICES | {
        "kafka",
        "postgres",
        "prometheus",
        "grafana",
        "demo",
    }


def test_kafka_is_the_local_stacks_version() -> None:
    stack = (REPO / "deploy/local/stack.sh").read_text()
    [version] = re.findall(r"^KAFKA_VERSION=\$\{KAFKA_VERSION:-([0-9.]+)\}", stack, re.M)
    assert compose()["services"]["kafka"]["image"] == f"apache/kafka:{version}"


def test_every_service_gets_the_environment_the_code_reads() -> None:
    services = compose()["services"]
    known = read_names()
    for name in APP_SERVICES | {"topics"}:
        env = services[name]["environment"]
        assert isinstance(env, dict)
        if name in APP_SERVICES:
            assert required_names() <= set(env), f"{name} lacks {required_names() - set(env)}"
            assert env["POSTGRES_DBNAME"] == "fulfil_" + name.replace("-", "_")
            assert services[name]["command"] == [f"fulfil-{name}"]
        unknown = set(env) - known
        assert not unknown, f"{name} sets variables no settings class reads: {unknown}"
