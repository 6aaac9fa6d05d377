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


def test_the_read_models_run_on_customer_services_database() -> None:
    read_models = compose()["services"]["read-models"]
    assert read_models["command"] == ["fulfil-read-models"]
    env = read_models["environment"]
    assert required_names() <= set(env), required_names() - set(env)
    assert not set(env) - read_names()
    assert env["POSTGRES_DBNAME"] == "fulfil_customer_service"
    assert "ports" not in read_models  # replicas (--scale) must not collide on a host port


def test_the_dev_issuer_keeps_one_key_pair_in_a_volume_every_service_shares() -> None:
    """No JWKS is configured, so the services use the dev issuer: its key directory must be
    one writable named volume mounted by every service and the demo (which mints tokens),
    or each container would generate its own key pair on a read-only root filesystem."""
    data = compose()
    services = data["services"]
    mounts = set()
    for name in sorted(APP_SERVICES | {"demo"}):
        svc = services[name]
        env = svc["environment"]
        assert "FULFIL_AUTH_JWKS_URL" not in env
        assert "FULFIL_AUTH_JWKS_FILE" not in env
        assert str(env.get("FULFIL_AUTH_DEV_ISSUER", "true")).lower() == "true"
        assert svc["read_only"] is True
        directory = env.get("FULFIL_AUTH_DEV_DIR")
        assert directory, f"{name}: FULFIL_AUTH_DEV_DIR not set"
        at = [m for m in svc.get("volumes") or [] if (m + ":").split(":")[1] == directory]
        assert len(at) == 1, f"{name}: no volume mounted at {directory}"
        [mount] = at
        source, _, mode = (mount + ":rw").split(":")[:3]
        assert mode != "ro", f"{name}: the dev issuer's directory is read-only"
        assert not source.startswith((".", "/")), f"{name}: {source} is not a named volume"
        mounts.add((source, directory))
    assert len(mounts) == 1, f"the services do not share one key directory: {mounts}"
    [(volume, directory)] = mounts
    assert volume in data["volumes"]
    # the image creates the directory owned by its user, so the new volume is writable by it
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(rf"install -d -o 10001 -g 10001 .*{re.escape(directory)}\b", dockerfile)
