"""The inbox skips, undecoded, the record types its consumer ignores, and still moves past them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from eventsourcing.persistence import Tracking

from fulfilment_kit.contracts import OrderPlaced, StockLine, StockLocked
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.messaging import cloudevents
from fulfilment_kit.messaging.inbox import InboundMessage, Inbox
from fulfilment_kit.settings import KafkaSettings
from tests.integration.tally import TallyApplication
from tests.support.messages import inbound

TOPIC = "skip-test"


class PlacedOnly(TallyApplication):
    reacts_to = (OrderPlaced,)

    def __init__(self) -> None:
        super().__init__(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.decoded: list[str] = []

    def handle(self, message: InboundMessage, processing: Any) -> None:
        self.decoded.append(message.envelope.type)
        super().handle(message, processing)


def record(event: IntegrationEvent, offset: int) -> ConsumerRecord[bytes, bytes]:
    key, value, headers = cloudevents.encode(
        event,
        ce_id=str(uuid.uuid4()),
        source="/t",
        time=datetime.now(UTC),
        correlation_id="c",
        causation_id="c",
    )
    return ConsumerRecord(TOPIC, 0, offset, 0, 0, key, value, None, len(key), len(value), headers)


def placed() -> OrderPlaced:
    return OrderPlaced.model_validate(
        {
            "order_id": str(uuid.uuid4()),
            "customer_id": str(uuid.uuid4()),
            "lines": [{"sku": "MUG", "quantity": 1, "unit_price_minor": 100}],
            "currency": "EUR",
            "total_minor": 100,
            "placed_at": "2026-01-01T00:00:00Z",
            "shipping_address": {
                "recipient_name": "A",
                "line1": "1 St",
                "city": "Berlin",
                "postal_code": "10115",
                "country_code": "DE",
            },
        }
    )


def locked(order_id: uuid.UUID) -> StockLocked:
    return StockLocked(
        order_id=order_id, lines=[StockLine(sku="MUG", quantity=1)], locked_at=datetime.now(UTC)
    )


async def test_ignored_types_are_not_decoded_but_passed() -> None:
    app = PlacedOnly()
    inbox = Inbox(app=app, group_id="g", kafka_settings=KafkaSettings())
    order = placed()
    await inbox.handle_records(
        [record(order, 0), record(locked(order.order_id), 1), record(locked(order.order_id), 2)]
    )
    assert app.decoded == ["fulfilment.order.placed.v1"]
    assert app.count(order.order_id) == 1
    name = inbox.tracking_name(TOPIC, 0)
    assert app.next_offset(name) == 1  # durable: the applied record
    assert inbox.next_offset(TopicPartition(TOPIC, 0)) == 3  # in memory: past the skipped ones
    assert app.accepts(OrderPlaced)
    assert not app.accepts(StockLocked)


class ContextRecorder(PlacedOnly):
    def __init__(self) -> None:
        super().__init__()
        self.contexts: list[dict[str, Any]] = []

    def handle(self, message: InboundMessage, processing: Any) -> None:
        self.contexts.append(structlog.contextvars.get_contextvars())
        super().handle(message, processing)


def test_log_lines_while_handling_name_the_message_and_its_causes() -> None:
    app = ContextRecorder()
    order = placed()
    ce_id = str(uuid.uuid4())
    message = inbound(order, offset=7, ce_id=ce_id, correlation_id="corr-1")
    app.process_messages([message], Tracking("g:t:0", 8))
    context = app.contexts[0]
    assert context["order_id"] == str(order.order_id)
    assert context["event_type"] == "fulfilment.order.placed.v1"
    assert (context["correlation_id"], context["causation_id"]) == ("corr-1", ce_id)
    assert (context["partition"], context["offset"]) == (0, 7)
    assert "order_id" not in structlog.contextvars.get_contextvars()  # unbound afterwards
