"""The kit's consume-only runtime (the read-models process): its consumer groups, its
readiness checks and an HTTP app with nothing but the probes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from eventsourcing.persistence import Tracking
from fastapi import APIRouter
from fastapi.testclient import TestClient

from fulfilment_kit.consumer_runtime import ConsumerRuntime, create_consumer_app
from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging.inbox import InboundMessage
from fulfilment_kit.settings import ServiceSettings


class Closing:
    def __init__(self) -> None:
        self.closed = False

    def process_messages(self, messages: Sequence[InboundMessage], tracking: Tracking) -> None:
        return None

    def next_offset(self, tracking_name: str) -> int | None:
        return None

    def close(self) -> None:
        self.closed = True


async def database_up() -> str | None:
    return None


def runtime() -> ConsumerRuntime:
    return ConsumerRuntime(
        service="read-models-under-test",
        database=database_up,
        settings=ServiceSettings(relay_enabled=False),
    )


def test_it_runs_its_groups_and_checks_database_kafka_and_consumers() -> None:
    consumer = runtime()
    applier = Closing()
    group = consumer.add_consumer("rm", applier, topics.ALL, on_failure="stop")
    assert consumer.consumers == [group]
    assert group.inbox.on_failure == "stop"
    assert group.heartbeat == "consumer:rm"
    assert sorted(t.name for t in group.subscriber.topics) == sorted(
        topics.physical(t) for t in topics.ALL
    )
    assert set(consumer.health.readiness_checks) == {"database", "kafka", "consumers"}
    consumer.close()
    assert applier.closed


def test_its_app_serves_the_probes_and_documents_nothing() -> None:
    consumer = runtime()
    consumer.add_consumer("rm", Closing(), [topics.ORDERS])
    client = TestClient(create_consumer_app(consumer, title="t"))  # no lifespan: no Kafka
    assert client.get("/livez").json() == {"status": "ok", "problems": {}}
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 404
    assert client.get("/docs").status_code == 404


def test_routes_it_is_given_must_declare_their_roles() -> None:
    bare = APIRouter()

    @bare.get("/open")
    async def open_route() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="declares no roles"):
        create_consumer_app(runtime(), title="t", routers=[bare])
