"""Event-store settings: PostgreSQL by default, SQLite as the embedded fallback."""

from __future__ import annotations

from typing import Any

from fulfilment_kit.settings import PostgresSettings, ServiceSettings

SESSION_CONNECTION: dict[str, Any] = {
    "autocommit": True,
    "connect_timeout": 5,
    # a session cut off without a FIN (its process killed, the network gone) is noticed
    # by both ends within ~15 s
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
"""psycopg options of a long-lived session connection (a lease's, the notification listener's)."""


def database_name(service: str) -> str:
    """Default PostgreSQL database of a service: one database per service."""
    return "fulfil_" + service.replace("-", "_")


def eventsourcing_env(
    service: str,
    service_settings: ServiceSettings | None = None,
    postgres: PostgresSettings | None = None,
) -> dict[str, str]:
    """The `env` mapping an eventsourcing Application of `service` is constructed with."""
    service_settings = service_settings or ServiceSettings()
    if service_settings.persistence == "sqlite":
        service_settings.sqlite_dir.mkdir(parents=True, exist_ok=True)
        path = service_settings.sqlite_dir / f"{database_name(service)}.sqlite"
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    postgres = postgres or PostgresSettings()
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": postgres.dbname or database_name(service),
        "POSTGRES_HOST": postgres.host,
        "POSTGRES_PORT": str(postgres.port),
        "POSTGRES_USER": postgres.user,
        "POSTGRES_PASSWORD": postgres.password,
        "POSTGRES_POOL_SIZE": str(postgres.pool_size),
        "POSTGRES_MAX_OVERFLOW": str(postgres.max_overflow),
        # eventsourcing passes this to the pool as its wait for a connection (not to connect).
        "POSTGRES_CONNECT_TIMEOUT": str(postgres.pool_timeout_s),
        # No pre-ping: it doubled the round trips of every transaction (a fifth of the
        # services' time under load); eventsourcing retries a broken connection itself.
        "POSTGRES_PRE_PING": "n",
    }
