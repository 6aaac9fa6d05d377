"""The environment variables the code reads, derived from its pydantic settings classes."""

from __future__ import annotations

import importlib
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from fulfilment_kit.settings import AuthSettings, KafkaSettings, PostgresSettings, ServiceSettings

# Imported so that every service's own settings classes are defined.
SERVICE_MODULES = (
    "orders.settings",
    "inventory.settings",
    "payments.settings",
    "shipping.settings",
    "customer_service.settings",
)

# What a service process cannot run without being told where things are.
CONNECTION: dict[type[BaseSettings], tuple[str, ...]] = {
    KafkaSettings: ("bootstrap_servers", "security_protocol"),
    PostgresSettings: ("host", "port", "user", "password", "dbname"),
    ServiceSettings: ("http_host", "http_port"),
}

# What every deployed service process needs to check bearer tokens without the dev issuer: a
# JWKS (the URL; a mounted `jwks_file` would do too), the real issuer and audience, the
# allowed algorithms, the dev issuer refused, and the idempotency secret shared by replicas.
AUTH: tuple[str, ...] = (
    "issuer",
    "audience",
    "algorithms",
    "dev_issuer",
    "idempotency_secret",
)
JWKS: tuple[str, ...] = ("jwks_url", "jwks_file")

# A secret typed as a plain string (the local stack's dev default is a literal).
SECRET_STRINGS = {"POSTGRES_PASSWORD"}


def env_name(cls: type[BaseSettings], field: str) -> str:
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def settings_classes() -> list[type[BaseSettings]]:
    for module in SERVICE_MODULES:
        importlib.import_module(module)
    found: list[type[BaseSettings]] = []
    stack = list(BaseSettings.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] in {
            "fulfilment_kit",
            *{m.split(".")[0] for m in SERVICE_MODULES},
        }:
            found.append(cls)
    return found


# Read outside a settings class (checked to still be read there).
OTHER_READS = {"FULFIL_TOPIC_PREFIX": "shared/src/fulfilment_kit/contracts/topics.py"}


def read_names() -> set[str]:
    """Every environment variable some settings class of the code reads."""
    repo = Path(__file__).resolve().parents[2]
    for name, path in OTHER_READS.items():
        assert name in (repo / path).read_text(), f"{path} no longer reads {name}"
    names = {env_name(cls, f) for cls in settings_classes() for f in cls.model_fields}
    return names | set(OTHER_READS)


def _is_secret(annotation: object) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def secret_names() -> set[str]:
    """Every variable holding a secret: the settings typed SecretStr (also inside Optional or
    a dict of them, e.g. the carriers' webhook secrets), and the string-typed ones."""
    names = {
        env_name(cls, f)
        for cls in settings_classes()
        for f, info in cls.model_fields.items()
        if _is_secret(info.annotation)
        or any(_is_secret(a) for a in getattr(info.annotation, "__args__", ()))
    }
    return names | SECRET_STRINGS


def auth_names() -> tuple[set[str], set[str]]:
    """(what every deployment must set, the JWKS sources of which it must set one)."""
    for fields in (AUTH, JWKS):
        missing = set(fields) - set(AuthSettings.model_fields)
        assert not missing, f"AuthSettings no longer has {missing}"
    return {env_name(AuthSettings, f) for f in AUTH}, {env_name(AuthSettings, f) for f in JWKS}


def required_names() -> set[str]:
    """The connection settings every service process must be given."""
    for cls, fields in CONNECTION.items():
        missing = set(fields) - set(cls.model_fields)
        assert not missing, f"{cls.__name__} no longer has {missing}"
    return {env_name(cls, f) for cls, fields in CONNECTION.items() for f in fields}
