"""The SCRAM + ACL mode of the test broker (`make test-scram`): who the test run is, and
the credentials of each service's own Kafka user."""

from __future__ import annotations

import os
from pathlib import Path

from fulfilment_kit.messaging import security
from fulfilment_kit.settings import KafkaSettings


def sasl_enabled() -> bool:
    """The tests talk to a broker with SASL (the test process itself is the admin)."""
    return KafkaSettings().security_protocol.startswith("SASL")


def passwords() -> dict[str, str]:
    """The dev-only passwords the local stack generated for the service users."""
    path = os.environ.get("FULFIL_KAFKA_PASSWORDS")
    if not path:
        raise AssertionError(
            "SASL is on but FULFIL_KAFKA_PASSWORDS is not set: run the SCRAM suite with "
            "`make test-scram` (it starts the broker and exports the settings)"
        )
    return security.read_passwords(Path(path))


def service_env(user: str) -> dict[str, str]:
    """Environment that makes a service process authenticate as `user` (none without SASL)."""
    if not sasl_enabled():
        return {}
    return {"KAFKA_SASL_USERNAME": user, "KAFKA_SASL_PASSWORD": passwords()[user]}


def settings_as(user: str, password: str | None = None) -> KafkaSettings:
    """Kafka settings of this broker, authenticated as `user` (its own password by default)."""
    return KafkaSettings(
        sasl_username=user,
        sasl_password=password if password is not None else passwords()[user],
    )
