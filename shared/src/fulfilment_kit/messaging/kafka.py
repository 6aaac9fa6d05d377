"""Kafka clients configured the one way the platform uses them."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner, murmur2

from fulfilment_kit.settings import KafkaSettings

log = structlog.get_logger(__name__)

AUTHORIZATION_ERRORS: tuple[type[Exception], ...] = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
    kafka_errors.ClusterAuthorizationFailedError,
)
"""The broker's ACLs refused this client: configuration, not a transient failure."""


class KafkaAccessDenied(RuntimeError):
    """The broker refused what this process's Kafka user asked for (its ACLs)."""


def access_denied(exc: BaseException, doing: str, settings: KafkaSettings | None = None) -> str:
    """A message an operator can act on: who was refused what, and where ACLs come from."""
    user = (settings or KafkaSettings()).sasl_username or "ANONYMOUS"
    return (
        f"Kafka refused user {user!r} while {doing}: {type(exc).__name__}: {exc}. The users' "
        "ACLs are derived in fulfilment_kit.contracts.access (local stack: `make stack-scram` "
        "applies them; Kubernetes: the KafkaUser manifests); check KAFKA_SASL_USERNAME and "
        "FULFIL_TOPIC_PREFIX"
    )


async def start_or_refuse(
    start: Awaitable[None], doing: str, settings: KafkaSettings | None = None
) -> None:
    """Await `start`; an authorization error becomes `KafkaAccessDenied` with a clear message
    (logged), so the process stops at once instead of retrying what cannot succeed."""
    try:
        await start
    except AUTHORIZATION_ERRORS as exc:
        message = access_denied(exc, doing, settings)
        log.error("kafka access denied", error=message)
        raise KafkaAccessDenied(message) from exc


@functools.lru_cache(maxsize=16384)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def keyed_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """The Java client's (and aiokafka's) key-to-partition mapping, its hash cached: aiokafka
    hashes in pure Python on every send, and an order's events share their key."""
    if key is None:
        return int(DefaultPartitioner()(key, all_partitions, available))
    return all_partitions[_key_hash(key) % len(all_partitions)]


def producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """Idempotent producer, acks from all in-sync replicas (aiokafka defaults differ).

    Its batches are closed by the relay's transaction commit (or after 5 ms for a DLQ
    record); records of one partition share a batch up to 256 KiB."""
    options: dict[str, Any] = {
        **settings.client_options(),
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "partitioner": keyed_partitioner,
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


def consumer(settings: KafkaSettings, group_id: str, **overrides: Any) -> AIOKafkaConsumer:
    """Group member that sees committed transactions only and never commits by itself: the
    kit commits its positions (for lag dashboards and KEDA) at an interval; the database's
    tracking records say where it resumes."""
    options: dict[str, Any] = {
        **settings.client_options(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "auto_offset_reset": "earliest",
    }
    options.update(overrides)
    return AIOKafkaConsumer(**options)


def admin(settings: KafkaSettings, **overrides: Any) -> AIOKafkaAdminClient:
    """Admin client (topics) with the same connection and security settings."""
    return AIOKafkaAdminClient(**{**settings.client_options(), **overrides})


async def reachable(client: AIOKafkaAdminClient, timeout_s: float) -> bool:
    """Whether the cluster answers within `timeout_s` (retried meanwhile).

    Asks for the metadata of no topic: its cost does not grow with the cluster's topics.
    FastStream's `broker.ping` (describe_cluster) fetches and decodes the metadata of every
    topic and partition of the cluster; every process's readiness ran it every 2 s, which
    was a large share of an idle process's CPU and grew with each replica.
    """
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    await client.describe_topics([])
                    return True
                except Exception:  # not reachable yet (or the admin client not started)
                    await asyncio.sleep(timeout_s / 10)
    except TimeoutError:
        return False
