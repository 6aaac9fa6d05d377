"""Kit: `GET /events` serves exactly what the relay publishes; a runtime runs extra consumers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Tracking
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fulfilment_kit.contracts import OrderStockLocked, topics
from fulfilment_kit.http.auth import install_auth
from fulfilment_kit.http.events import events_router
from fulfilment_kit.messaging.inbox import InboundMessage, MessageProcessor
from fulfilment_kit.messaging.relay import EventToPublish, OutboxRelay
from fulfilment_kit.runtime import ServiceRuntime
from fulfilment_kit.settings import KafkaSettings, ServiceSettings
from tests.support.auth import as_staff


class Thing(Aggregate):
    @event("Created")
    def __init__(self, customer_id: uuid.UUID) -> None:
        self.customer_id = customer_id

    @event("Locked")
    def lock(self) -> None:
        pass

    @event("Noted")
    def note(self) -> None:
        """A private event: no public counterpart."""


def mapper(domain_event: Any) -> Sequence[EventToPublish]:
    if type(domain_event).__name__ != "Locked":
        return ()
    public = OrderStockLocked(
        order_id=domain_event.originator_id,
        customer_id=uuid.UUID(int=1),
        locked_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return (EventToPublish(public, "corr", "cause"),)


def test_events_endpoint_serves_the_relays_records_page_by_page() -> None:
    app: Application[uuid.UUID] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    things = [Thing(uuid.uuid4()) for _ in range(3)]
    for thing in things:
        thing.lock()
        thing.note()
    app.save(*things)
    relay = OutboxRelay(
        service="orders", app=app, mapper=mapper, output_topics=[], kafka_settings=KafkaSettings()
    )
    api = FastAPI()
    api.include_router(events_router(app, mapper, relay.source))
    install_auth(api)
    client = as_staff(TestClient(api))

    pages, after = [], 0
    while True:
        page = client.get("/events", params={"after": after, "limit": 4}).json()
        pages.append(page)
        if page["next_after"] == after:
            break
        after = page["next_after"]
    served = [e for page in pages for e in page["events"]]
    assert [p["next_after"] for p in pages] == [4, 8, 9, 9]
    assert pages[0]["head"] == 9

    notifications = app.recorder.select_notifications(1, 100)
    published = [(n.id, record) for n in notifications for record in relay._records_for(n)]
    assert len(served) == len(published) == 3
    for item, (sequence, (topic, key, value, headers)) in zip(served, published, strict=True):
        assert item["sequence"] == sequence
        assert topics.physical(item["topic"]) == topic
        assert item["key"].encode() == key
        assert item["headers"] == {k: v.decode() for k, v in headers}
        assert item["payload"] == OrderStockLocked.model_validate_json(value).model_dump(
            mode="json"
        )
    assert client.get("/events", params={"limit": 0}).status_code == 422


class CountingApplier:
    def __init__(self) -> None:
        self.applied: list[InboundMessage] = []

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        self.applied.extend(messages)

    def next_offset(self, tracking_name: str) -> int | None:
        return None


def test_a_runtime_runs_extra_consumer_groups() -> None:
    applier: MessageProcessor = CountingApplier()
    app: Application[uuid.UUID] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    runtime = ServiceRuntime(
        service="svc",
        app=app,
        mapper=lambda _: (),
        output_topics=[],
        settings=ServiceSettings(relay_enabled=False),
        extra_consumers=[("svc-projections", applier, topics.ALL)],
    )
    late = runtime.add_consumer("svc-more", CountingApplier(), [topics.ORDERS])
    assert runtime.inbox is None  # the service itself consumes nothing
    assert [c.inbox.group_id for c in runtime.consumers] == ["svc-projections", "svc-more"]
    assert [c.heartbeat for c in runtime.consumers] == [
        "consumer:svc-projections",
        "consumer:svc-more",
    ]
    assert late.inbox.tracking_name("t", 3) == "svc-more:t:3"
    assert all(c.subscriber is not None for c in runtime.consumers)
