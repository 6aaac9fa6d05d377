"""The relay's stored position, quarantine and lease, on the real broker and PostgreSQL.

Issue 7 defect 4: "resume from the topic tail" read 0 once retention had emptied a topic and
republished the whole store; an unmappable notification wedged the relay in a restart loop;
several replicas of a service each ran a relay.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import RecordsToDelete

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.messaging import relay as relay_module
from fulfilment_kit.messaging.relay import RELAY_QUARANTINED, EventToPublish, OutboxRelay
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.settings import KafkaSettings, PostgresSettings, ServiceSettings
from fulfilment_kit.tracing import Trace
from orders.application import OrdersApplication, PlaceOrder
from orders.contracts import to_public
from orders.domain import Address, Order, OrderLine
from tests.support.logs import captured_logs
from tests.support.polling import eventually
from tests.support.processes import ServiceProcess, service_command, service_env
from tests.support.stack import end_offsets, read_topic

SAMPLE = json.loads((Path(__file__).parents[2] / "deploy/local/sample-order.json").read_text())


@pytest.fixture
def app(database: str) -> Iterator[OrdersApplication]:
    app = OrdersApplication(
        env=eventsourcing_env("orders", ServiceSettings(), PostgresSettings(dbname=database))
    )
    yield app
    app.close()


def place(app: OrdersApplication, name: str = "A") -> uuid.UUID:
    return app.place_order(
        PlaceOrder(
            customer_id=uuid.uuid4(),
            lines=[OrderLine("MUG", 1, 500)],
            currency="EUR",
            shipping_address=Address(name, "1 St", None, "Berlin", "10115", "DE"),
            payment_token="tok_visa",
            idempotency_key=None,
            fingerprint="f",
            trace=Trace("c", "c"),
        )
    ).order.id


def relay_of(app: OrdersApplication, mapper: Any = to_public) -> OutboxRelay:
    return OutboxRelay(
        service="orders",
        app=app,
        mapper=mapper,
        output_topics=[topics.ORDERS],
        kafka_settings=KafkaSettings(),
        poll_interval_s=0.05,
    )


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[OutboxRelay]:
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        await asyncio.wait_for(task, 30)


async def keys_on_topic() -> list[str]:
    records = await read_topic(topics.physical(topics.ORDERS))
    return [r.key.decode() for r in records if r.key]


async def published(wanted: Sequence[uuid.UUID]) -> None:
    ids = {str(w) for w in wanted}
    await eventually(
        keys_on_topic,
        until=lambda keys: ids <= set(keys),
        timeout=30,
        what=f"{len(ids)} orders on the topic",
    )


async def delete_every_record(topic: str) -> None:
    """What retention does to a quiet topic: every segment gone, the log start at its end."""
    ends = await end_offsets([topic])
    admin = kafka.admin(KafkaSettings())  # the broker's admin in SCRAM mode
    await admin.start()
    try:
        await admin.delete_records(
            {TopicPartition(t, p): RecordsToDelete(end) for (t, p), end in ends.items() if end}
        )
    finally:
        await admin.close()


async def test_relay_after_retention_emptied_the_topic_republishes_nothing(
    app: OrdersApplication,
) -> None:
    old = [place(app) for _ in range(5)]
    async with running(relay_of(app)):
        await published(old)
    await delete_every_record(topics.physical(topics.ORDERS))
    assert await keys_on_topic() == []

    newer = place(app)
    async with running(relay_of(app)) as restarted:
        await published([newer])
        # Let it run past the new order: an old one would come before it in the log anyway.
        await eventually(
            lambda: asyncio.sleep(0, restarted.position),
            until=lambda p: p is not None and p >= (app.recorder.max_notification_id() or 0),
            what="relay caught up",
        )
    assert await keys_on_topic() == [str(newer)]


async def test_the_published_position_is_stored_now_and_then_and_when_the_relay_stops(
    app: OrdersApplication,
) -> None:
    first = place(app)
    relay = relay_of(app)
    relay.position_store_s = 3600  # only the first batch and the stop write it
    async with running(relay):
        await published([first])
        await eventually(
            lambda: asyncio.to_thread(relay._stored_position),
            until=lambda p: p > 0,
            what="the first position stored",
        )
        stored_first = await asyncio.to_thread(relay._stored_position)
        more = [place(app) for _ in range(3)]
        await published(more)
        await eventually(
            lambda: asyncio.sleep(0, relay.position),
            until=lambda p: p is not None and p >= (app.recorder.max_notification_id() or 0),
            what="relay caught up",
        )
        assert await asyncio.to_thread(relay._stored_position) == stored_first
    newest = app.recorder.max_notification_id()
    assert await asyncio.to_thread(relay._stored_position) == newest > stored_first


async def test_an_unmappable_notification_is_quarantined_and_the_relay_moves_on(
    app: OrdersApplication,
) -> None:
    poison = place(app, "poison")
    after = [place(app) for _ in range(3)]

    def mapper(event: Any) -> Sequence[EventToPublish]:
        if isinstance(event, Order.Placed) and event.originator_id == poison:
            raise ValueError(f"cannot map the order of {event.shipping_address.recipient_name}")
        return to_public(event)

    before = RELAY_QUARANTINED.labels("orders")._value.get()
    relay = relay_of(app, mapper)
    with captured_logs(relay_module) as logs:
        async with running(relay):
            await published(after)
    assert str(poison) not in await keys_on_topic()
    quarantined = await asyncio.to_thread(relay.quarantined)
    assert [(q.originator_id, q.originator_version) for q in quarantined] == [(str(poison), 1)]
    assert "ValueError" in quarantined[0].error
    assert RELAY_QUARANTINED.labels("orders")._value.get() == before + 1
    assert not [e for e in logs if e["event"] == "relay restarting"]
    flagged = [e for e in logs if "quarantined" in e["event"]]
    assert len(flagged) == 1
    assert flagged[0]["originator_id"] == str(poison)
    assert "poison" not in repr(logs)  # no payload (nor its error text) in the log


async def test_one_of_two_relay_replicas_publishes_and_the_other_takes_over_a_kill(
    app: OrdersApplication, database: str
) -> None:
    env = service_env(POSTGRES_DBNAME=database)
    replicas = [
        ServiceProcess(service_command("fulfil-orders", "relay"), env, f"relay-{database}-{n}")
        for n in (1, 2)
    ]
    try:
        for replica in replicas:
            replica.start()

        async def states() -> list[tuple[bool, bool]]:
            return [
                ("relay active" in r.log_text(), "standing by" in r.log_text()) for r in replicas
            ]

        await eventually(
            states,
            until=lambda s: sorted(s) == [(False, True), (True, False)],
            timeout=60,
            what="one relay active, the other standing by",
        )
        first = [place(app) for _ in range(20)]
        await published(first)
        active = next(r for r in replicas if "relay active" in r.log_text())
        standby = next(r for r in replicas if r is not active)
        assert "relay resuming" not in standby.log_text()

        active.kill()
        killed_at = time.monotonic()
        second = [place(app) for _ in range(20)]
        await published(second)
        handover_s = time.monotonic() - killed_at
        assert "relay active" in standby.log_text()
        print(f"\nrelay hand-over after SIGKILL: {handover_s:.1f} s")
        assert handover_s < 10

        records = await read_topic(topics.physical(topics.ORDERS))
        counts = collections.Counter(r.headers["ce_id"] for r in records)
        assert {k for k, n in counts.items() if n > 1} == set()
        assert {r.key.decode() for r in records if r.key} == {str(o) for o in first + second}
    finally:
        for replica in replicas:
            replica.stop()
