"""Settings read from environment variables, with local defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Where the Kafka broker is (KAFKA_*)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:19092"
    topic_partitions: int = Field(default=6, ge=1)
    request_timeout_s: float = Field(default=30.0, gt=0)


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
