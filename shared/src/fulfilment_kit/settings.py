"""Settings read from environment variables, with local defaults."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Literal

from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_ISSUER = "urn:fulfil:dev-issuer"
"""Issuer of the tokens `fulfil auth token` mints (the local, dev-only key pair)."""
DEV_AUDIENCE = "fulfilment"
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def state_dir() -> Path:
    """The git-ignored local state directory (FULFIL_STATE_DIR, default `.local`)."""
    return Path(os.environ.get("FULFIL_STATE_DIR") or ".local")


class KafkaSettings(BaseSettings):
    """Where the Kafka broker is and how to authenticate to it (KAFKA_*)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:19092"
    topic_partitions: int = Field(default=6, ge=1)
    request_timeout_s: float = Field(default=30.0, gt=0)
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    """CA bundle for SSL/SASL_SSL (the system's when unset)."""

    def client_options(self) -> dict[str, Any]:
        """aiokafka connection options: bootstrap servers plus security (SASL, TLS)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                    "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
                )
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.security_protocol.endswith("SSL"):
            options["ssl_context"] = ssl.create_default_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
        return options

    def faststream_security(self) -> BaseSecurity | None:
        """The same security for a FastStream KafkaBroker (None: plaintext)."""
        use_ssl = self.security_protocol.endswith("SSL")
        ssl_context = self.client_options().get("ssl_context")
        if not self.security_protocol.startswith("SASL"):
            return BaseSecurity(ssl_context=ssl_context, use_ssl=use_ssl) if use_ssl else None
        assert self.sasl_username  # client_options() checked both
        assert self.sasl_password is not None
        kind = {
            "SCRAM-SHA-512": SASLScram512,
            "SCRAM-SHA-256": SASLScram256,
            "PLAIN": SASLPlaintext,
        }[self.sasl_mechanism]
        return kind(
            self.sasl_username,
            self.sasl_password.get_secret_value(),
            ssl_context=ssl_context,
            use_ssl=use_ssl,
        )


class PostgresSettings(BaseSettings):
    """Where PostgreSQL is (POSTGRES_*); the database name defaults per service."""

    model_config = SettingsConfigDict(env_prefix="POSTGRES_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 15432
    user: str = "fulfil"
    password: str = "fulfil"  # noqa: S105 - local-only default, override in any real deployment
    dbname: str | None = None
    pool_size: int = Field(default=5, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout_s: int = Field(default=1, ge=1, le=60)
    """How long a request waits for a pooled connection. eventsourcing tries each statement
    up to 10 times, so while the database is down a request answers 503 after about ten
    times this (a long wait here would keep callers waiting past their own timeouts)."""


class ServiceSettings(BaseSettings):
    """Process-level settings of one service (FULFIL_*)."""

    model_config = SettingsConfigDict(env_prefix="FULFIL_", extra="ignore")

    persistence: Literal["postgres", "sqlite"] = "postgres"
    sqlite_dir: Path = Path(".local/sqlite")
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    log_level: str = "INFO"
    http_max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest request body a service reads; a larger one is refused with 413 unread."""
    http_max_json_depth: int = Field(default=16, ge=2, le=256)
    """Deepest nesting of arrays/objects a JSON request body may have (else 400)."""
    relay_enabled: bool = True
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_poll_interval_s: float = Field(default=0.05, gt=0)
    consumers_enabled: bool = True
    consumer_max_records: int = Field(default=500, ge=1)
    consumer_max_attempts: int = Field(default=5, ge=1)
    consumer_backoff_s: float = Field(default=0.2, ge=0)
    consumer_max_backoff_s: float = Field(default=30.0, gt=0)
    """Longest wait between two tries of a partition held at its tracked offset."""
    # Where a consumer resumes on partition assignment. "kafka" (trust Kafka's committed
    # offsets, like a plain consumer) exists only to inject redelivery in tests.
    consumer_resume_from: Literal["database", "kafka"] = "database"


class AuthSettings(BaseSettings):
    """Who may call the HTTP APIs (FULFIL_AUTH_*): OAuth2 bearer JWTs checked against a JWKS.

    With neither `jwks_url` nor `jwks_file` set, the dev issuer is used: a key pair generated
    into `<state dir>/auth` (dev only; `fulfil auth token` mints tokens with it).
    """

    model_config = SettingsConfigDict(env_prefix="FULFIL_AUTH_", extra="ignore")

    jwks_url: str | None = None
    """The identity provider's JWKS endpoint (production)."""
    jwks_file: Path | None = None
    """A JWKS document on disk (e.g. a mounted secret), instead of `jwks_url`."""
    issuer: str = DEV_ISSUER
    audience: str = DEV_AUDIENCE
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    jwks_cache_s: float = Field(default=300.0, gt=0)
    jwks_refresh_min_s: float = Field(default=30.0, ge=0)
    """An unknown `kid` re-reads the JWKS (key rotation), at most this often."""
    idempotency_secret: SecretStr | None = None
    """Server secret that derives ids from (caller, Idempotency-Key); the same on every replica."""
    dev_dir: Path = Field(default_factory=lambda: state_dir() / "auth")
    dev_issuer: bool = True
    """False refuses to start on the dev issuer: a JWKS must be configured (deployments)."""

    @property
    def dev(self) -> bool:
        """True when tokens come from the local dev issuer (no JWKS configured)."""
        return self.jwks_url is None and self.jwks_file is None

    @model_validator(mode="after")
    def _safe(self) -> AuthSettings:
        if not self.algorithms:
            raise ValueError("FULFIL_AUTH_ALGORITHMS must allow at least one algorithm")
        refused = sorted(set(self.algorithms) - ASYMMETRIC_ALGORITHMS)
        if refused:
            raise ValueError(
                f"FULFIL_AUTH_ALGORITHMS may list asymmetric algorithms only, not {refused}"
            )
        if self.jwks_url and self.jwks_file:
            raise ValueError("set FULFIL_AUTH_JWKS_URL or FULFIL_AUTH_JWKS_FILE, not both")
        if self.dev and not self.dev_issuer:
            raise ValueError(
                "FULFIL_AUTH_DEV_ISSUER=false forbids the dev issuer: set FULFIL_AUTH_JWKS_URL "
                "or FULFIL_AUTH_JWKS_FILE"
            )
        if not self.dev:
            if self.issuer == DEV_ISSUER:
                raise ValueError("a configured JWKS needs FULFIL_AUTH_ISSUER (the real issuer)")
            secret = self.idempotency_secret
            if secret is None or len(secret.get_secret_value()) < 32:
                raise ValueError(
                    "a configured JWKS needs FULFIL_AUTH_IDEMPOTENCY_SECRET (32+ characters, "
                    "the same on every replica)"
                )
        return self
