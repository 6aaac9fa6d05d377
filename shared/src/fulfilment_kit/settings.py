"""Settings read from environment variables, with local defaults."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_ISSUER = "urn:fulfil:dev-issuer"
"""Issuer of the tokens `fulfil auth token` mints (the local, dev-only key pair)."""
DEV_AUDIENCE = "fulfilment"
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class Settings(BaseSettings):
    """Base of every settings class: environment variables (the class's `env_prefix` + the
    field's name), unknown ones ignored; each field's docstring is its line in the README's
    configuration table (`make config-table`)."""

    model_config = SettingsConfigDict(extra="ignore", use_attribute_docstrings=True)


def env_name(settings: type[BaseSettings], field: str) -> str:
    """The environment variable `settings` reads `field` from (a renamed field fails here)."""
    if field not in settings.model_fields:
        raise KeyError(f"{settings.__name__} has no field {field!r}")
    return f"{settings.model_config.get('env_prefix', '')}{field}".upper()


S = TypeVar("S", bound=BaseSettings)


def read_settings(settings: type[S], env: Mapping[str, str]) -> S:
    """`settings` read from `env` (e.g. an eventsourcing Application's env, which includes the
    process environment) over the process environment; a bad value is a ValueError naming
    its variable."""
    given: dict[str, Any] = {}
    for field in settings.model_fields:
        value = env.get(env_name(settings, field))
        if value not in (None, ""):
            given[field] = value
    try:
        return settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = env_name(settings, str(first["loc"][0])) if first["loc"] else settings.__name__
        raise ValueError(f"{name}: {first['msg']}") from exc


def state_dir() -> Path:
    """The git-ignored local state directory (FULFIL_STATE_DIR, default `.local`)."""
    return Path(os.environ.get("FULFIL_STATE_DIR") or ".local")


class KafkaSettings(Settings):
    """Where the Kafka broker is and how to authenticate to it (KAFKA_*)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_")

    bootstrap_servers: str = "127.0.0.1:19092"
    """Kafka brokers; when set, `make` starts no local broker."""
    topic_partitions: int = Field(default=6, ge=1)
    """Partitions of every topic `make stack` creates."""
    replication_factor: int = Field(default=1, ge=1)
    """Replication factor of created topics."""
    request_timeout_s: float = Field(default=30.0, gt=0)
    """Client request timeout."""
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    """`SASL_PLAINTEXT`, `SASL_SSL` or `SSL`: every client (services, relay, admin, tools)
    uses it."""
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    """With SASL; `SCRAM-SHA-256` or `PLAIN` also work."""
    sasl_username: str | None = None
    """The service's own Kafka user (required with SASL)."""
    sasl_password: SecretStr | None = None
    """Its password (required with SASL)."""
    ssl_cafile: Path | None = None
    """CA bundle for `SSL` / `SASL_SSL` (the system's when unset)."""

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


class PostgresSettings(Settings):
    """Where PostgreSQL is (POSTGRES_*); the database name defaults per service."""

    model_config = SettingsConfigDict(env_prefix="POSTGRES_")

    host: str = "127.0.0.1"
    """PostgreSQL's host; when one answers at host and port, `make` starts none."""
    port: int = 15432
    """PostgreSQL's port."""
    user: str = "fulfil"
    """Local-only default: set a real one anywhere else."""
    password: str = "fulfil"  # noqa: S105 - local-only default, override in any real deployment
    """Local-only default: set a real one anywhere else."""
    dbname: str | None = None
    """One database per service: `fulfil_<service>` when unset."""
    pool_size: int = Field(default=5, ge=1)
    """Connection pool per service."""
    max_overflow: int = Field(default=10, ge=0)
    """Connections beyond the pool under load."""
    pool_timeout_s: int = Field(default=1, ge=1, le=60)
    """Wait for a pooled connection; with the database down a request answers 503 +
    `Retry-After` within about ten times this (eventsourcing tries each statement up to 10
    times; a long wait here would keep callers waiting past their own timeouts)."""


class ServiceSettings(Settings):
    """Process-level settings of one service (FULFIL_*)."""

    model_config = SettingsConfigDict(env_prefix="FULFIL_")

    persistence: Literal["postgres", "sqlite"] = "postgres"
    """`sqlite` is the embedded fallback."""
    sqlite_dir: Path = Path(".local/sqlite")
    """Where the SQLite fallback keeps its files."""
    topic_prefix: str = ""
    """Prefix of every topic and consumer group: isolates deployments (and test runs) on one
    cluster. (Read per record by `topics.prefix()`, straight from the environment.)"""
    http_host: str = "127.0.0.1"
    """Where the service listens."""
    http_port: int | None = None
    """Its port (the service's own default port when unset)."""
    log_level: str = "INFO"
    """JSON logs on stdout."""
    http_max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    """Largest request body a service reads; a larger one is refused with 413 unread."""
    http_max_json_depth: int = Field(default=16, ge=2, le=256)
    """Deepest nesting of arrays/objects a JSON request body may have (else 400)."""
    http_group_commit_linger_s: float = Field(default=0.02, ge=0, le=0.5)
    """Longest a group commit (a busy route's batch, e.g. `POST /orders`) waits for more
    requests to join it, and only while they arrive closer together than that: fewer,
    larger transactions at moderate rates; a lone request waits for nothing."""
    relay_enabled: bool = True
    """Run the outbox relay inside the service (`fulfil-<service> relay` runs it alone)."""
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    """Events per Kafka transaction."""
    relay_poll_interval_s: float = Field(default=1.0, gt=0)
    """The relay's fallback poll: commits wake it at once (LISTEN/NOTIFY, ADR 24)."""
    relay_wake_spacing_s: float = Field(default=0.15, ge=0, le=1)
    """Least time between two reads of the log, after a batch or a wake-up: under load a burst
    of commits makes one batch and one Kafka transaction; a quiet relay reads at once. It
    bounds the batches of every consumer of the service's topic too (ADR 28)."""
    consumers_enabled: bool = True
    """Consume the other services' topics."""
    consumer_max_records: int = Field(default=500, ge=1)
    """Records per batch (one database transaction per partition)."""
    consumer_round_spacing_s: float = Field(default=0.0, ge=0, le=5)
    """Least time between the starts of two batches of a consumer on the order's path; a
    full batch goes on at once (ADR 28)."""
    consumer_background_round_spacing_s: float = Field(default=0.2, ge=0, le=5)
    """The same for consumers off the order's path (customer-service's cases and read
    models): fewer, larger batches leave the CPU to the order's path (ADR 28)."""
    background_nice: int = Field(default=10, ge=0, le=19)
    """How much lower the CPU priority (nice value) of a process off the order's path runs
    (customer-service, the read models): under CPU contention the order's path runs first,
    and they take what it leaves (ADR 29); 0: the same priority."""
    consumer_commit_interval_s: float = Field(default=5.0, ge=0)
    """How often a consumer commits its positions to Kafka (lag dashboards, KEDA); the
    database's tracking records, not these, say where it resumes."""
    consumer_max_attempts: int = Field(default=5, ge=1)
    """Tries of a failing record before the DLQ."""
    consumer_backoff_s: float = Field(default=0.2, ge=0)
    """First wait between two tries of a failing record."""
    consumer_max_backoff_s: float = Field(default=30.0, gt=0)
    """Longest wait between two tries of a partition held at its tracked offset (database
    down, conflict, stopped read model)."""
    startup_database_wait_s: float = Field(default=300.0, ge=0)
    """How long a starting process waits for PostgreSQL before it gives up (a replica
    restarted during an outage comes up when the database is back)."""
    aggregate_cache_size: int = Field(default=2000, ge=0)
    """Aggregates each process keeps loaded between batches (LRU), so a load reads only the
    events recorded since; 0 turns the cache off."""
    consumer_resume_from: Literal["database", "kafka"] = "database"
    """Where a consumer resumes on assignment; `kafka` (Kafka's committed offsets) only to
    inject redelivery in tests."""
    revision: str = ""
    """The build's commit in `fulfil_build_info` (set by the image build; else the source
    checkout's)."""
    metric_currencies: str = "EUR,USD,GBP"
    """Currencies whose money series exist from the start (others appear with their first
    order): Prometheus cannot see the first increase of a series it never saw at 0."""


class OperatorSettings(Settings):
    """Settings of the operator tools (`fulfil dlq`, `fulfil consumers`; FULFIL_*)."""

    model_config = SettingsConfigDict(env_prefix="FULFIL_")

    operator: str | None = None
    """Who an operator command's audit event names (the login name when unset)."""
    consumer_runtimes: str = ""
    """`group=module:function,...`: more consumers besides the services'
    `fulfilment.consumers` entry points."""


class AuthSettings(Settings):
    """Who may call the HTTP APIs (FULFIL_AUTH_*): OAuth2 bearer JWTs checked against a JWKS.

    With neither `jwks_url` nor `jwks_file` set, the dev issuer is used: a key pair generated
    into `<state dir>/auth` (dev only; `fulfil auth token` mints tokens with it).
    """

    model_config = SettingsConfigDict(env_prefix="FULFIL_AUTH_")

    jwks_url: str | None = None
    """The identity provider's JWKS endpoint (production; the dev issuer's generated key pair
    when neither it nor the file is set)."""
    jwks_file: Path | None = None
    """A JWKS document on disk (e.g. a mounted secret), instead of the URL."""
    issuer: str = DEV_ISSUER
    """The `iss` every token must carry (set the real issuer with a JWKS)."""
    audience: str = DEV_AUDIENCE
    """The `aud` every token must carry."""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    """JSON list of accepted algorithms; asymmetric only (`none`, `HS*` are refused)."""
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    """Clock skew allowed on `exp`/`nbf`/`iat`."""
    jwks_cache_s: float = Field(default=300.0, gt=0)
    """The JWKS is kept this long."""
    jwks_refresh_min_s: float = Field(default=30.0, ge=0)
    """An unknown `kid` re-reads the JWKS (key rotation), at most this often."""
    idempotency_secret: SecretStr | None = None
    """Server secret deriving ids from (caller, Idempotency-Key); required with a JWKS, the
    same on every replica (a dev secret in the dev directory when unset)."""
    dev_dir: Path = Field(default_factory=lambda: state_dir() / "auth")
    """Where the dev issuer keeps its key pair and dev secrets (`$FULFIL_STATE_DIR/auth`)."""
    dev_issuer: bool = True
    """`false` refuses to start without a JWKS (the Kubernetes manifests set it: no dev issuer
    in a cluster)."""

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
