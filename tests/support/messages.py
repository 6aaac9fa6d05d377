"""Inbound messages built the way the inbox builds them: encoded, then decoded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.messaging import cloudevents
from fulfilment_kit.messaging.inbox import InboundMessage


def envelope(
    event: IntegrationEvent,
    *,
    ce_id: str | None = None,
    correlation_id: str = "test-correlation",
) -> cloudevents.Envelope:
    """`event` as its producer's relay encodes it and a consumer decodes it."""
    _, value, headers = cloudevents.encode(
        event,
        ce_id=ce_id or str(uuid.uuid4()),
        source="/test",
        time=datetime.now(UTC),
        correlation_id=correlation_id,
        causation_id="test-cause",
    )
    return cloudevents.decode(value, headers)


def inbound(
    event: IntegrationEvent,
    *,
    offset: int = 0,
    partition: int = 0,
    ce_id: str | None = None,
    correlation_id: str = "test-correlation",
) -> InboundMessage:
    """`event` as a consumer receives it from its topic at `offset`."""
    decoded = envelope(event, ce_id=ce_id, correlation_id=correlation_id)
    return InboundMessage(decoded, topics.physical(event.topic), partition, offset)
