"""Kafka topic names of the public contract, in one place."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

# Consumer groups and the topics they subscribe to: generated from the services' policies.
from fulfilment_kit.contracts.consumers import CONSUMERS as CONSUMERS

ORDERS = "fulfilment.orders.v1"
INVENTORY = "fulfilment.inventory.v1"
PAYMENTS = "fulfilment.payments.v1"
SHIPPING = "fulfilment.shipping.v1"
CUSTOMER_SERVICE = "fulfilment.customer-service.v1"

ALL: tuple[str, ...] = (ORDERS, INVENTORY, PAYMENTS, SHIPPING, CUSTOMER_SERVICE)

OPERATOR_AUDIT = "fulfilment.operator-audit.v1"
"""What operators did to consumers: DLQ records replayed or discarded (with the reason),
retention gaps accepted. Written by `fulfil dlq` / `fulfil consumers`; kept forever."""

# The deployables and what each one runs: the topic its relay publishes (none for the read
# models, which only consume) and the consumer groups it runs (one Kafka user per deployable;
# fulfilment_kit.contracts.access derives its ACLs, the Kubernetes KafkaUsers and the local
# stack's SCRAM users from this).
PUBLISHES: dict[str, str] = {
    "orders": ORDERS,
    "inventory": INVENTORY,
    "payments": PAYMENTS,
    "shipping": SHIPPING,
    "customer-service": CUSTOMER_SERVICE,
}
GROUPS: dict[str, tuple[str, ...]] = {
    "orders": ("orders",),
    "inventory": ("inventory",),
    "payments": ("payments",),
    "shipping": ("shipping",),
    "customer-service": ("customer-service",),
    "read-models": ("customer-service-projections",),
}


def sources_of(event_types: Iterable[Any]) -> tuple[str, ...]:
    """The topics (in `ALL`'s order) that carry the public event types `event_types`."""
    wanted = {event_type.topic for event_type in event_types}
    return tuple(topic for topic in ALL if topic in wanted)


def prefix() -> str:
    """Optional topic prefix (FULFIL_TOPIC_PREFIX) that isolates one deployment or test run."""
    return os.environ.get("FULFIL_TOPIC_PREFIX", "")


def physical(topic: str) -> str:
    """The topic name on the broker: the logical name with the deployment prefix."""
    return f"{prefix()}{topic}"


def dlq(topic: str, consumer: str) -> str:
    """Dead-letter topic for one consumer of one source topic."""
    return f"{topic}.dlq.{consumer}"


def transactional_id(service: str, topic_prefix: str | None = None) -> str:
    """The transactional id of a service's outbox relay (one writer per service)."""
    return f"{prefix() if topic_prefix is None else topic_prefix}fulfil-relay-{service}"


def kept_forever(name: str) -> bool:
    """DLQ and audit topics: nothing on them is deleted by retention, only by an operator."""
    return ".dlq." in name or name.endswith(OPERATOR_AUDIT)


def all_physical_topics() -> list[str]:
    """Every topic the platform needs, DLQs included, as named on the broker."""
    names = [physical(t) for t in ALL]
    names.append(physical(OPERATOR_AUDIT))
    for consumer, sources in CONSUMERS.items():
        names.extend(dlq(physical(t), consumer) for t in sources)
    return names
