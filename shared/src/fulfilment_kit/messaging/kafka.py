"""Kafka clients configured the one way the platform uses them."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from fulfilment_kit.settings import KafkaSettings


def producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """Idempotent producer, acks from all in-sync replicas (aiokafka defaults differ)."""
    options: dict[str, Any] = {
        **settings.client_options(),
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "request_timeout_ms": int(settings.request_timeout_s * 1000),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def reader(settings: KafkaSettings, **overrides: Any) -> AIOKafkaConsumer:
    """Group-less consumer that sees committed transactions only (for tails and tools)."""
    options: dict[str, Any] = {
        **settings.client_options(),
        "group_id": None,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "auto_offset_reset": "earliest",
    }
    options.update(overrides)
    return AIOKafkaConsumer(**options)


def admin(settings: KafkaSettings, **overrides: Any) -> AIOKafkaAdminClient:
    """Admin client (topics) with the same connection and security settings."""
    return AIOKafkaAdminClient(**{**settings.client_options(), **overrides})
