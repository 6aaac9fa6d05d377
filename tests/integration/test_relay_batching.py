"""The relay gathers notifications for `wake_spacing_s` after a transaction (fewer, larger
transactions under load) and publishes at once when idle; exactly once and in order either way."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging.relay import OutboxRelay
from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.settings import KafkaSettings, PostgresSettings, ServiceSettings
from orders.application import OrdersApplication
from orders.contracts import to_public
from tests.integration.test_relay_position import keys_on_topic, place, published, running
from tests.support.polling import eventually
from tests.support.stack import read_topic

WINDOW_S = 2.0


@pytest.fixture
def app(database: str) -> Iterator[OrdersApplication]:
    app = OrdersApplication(
        env=eventsourcing_env("orders", ServiceSettings(), PostgresSettings(dbname=database))
    )
    yield app
    app.close()


def transactions() -> float:
    value = REGISTRY.get_sample_value("fulfil_relay_batch_seconds_count", {"service": "orders"})
    return value or 0.0


async def test_a_burst_after_a_transaction_shares_the_next_one_and_idle_publishes_at_once(
    app: OrdersApplication,
) -> None:
    relay = OutboxRelay(
        service="orders",
        app=app,
        mapper=to_public,
        output_topics=[topics.ORDERS],
        kafka_settings=KafkaSettings(),
        poll_interval_s=0.05,
        wake_spacing_s=WINDOW_S,
    )
    async with running(relay):
        first = await asyncio.to_thread(place, app)
        await published([first])
        # A burst right behind a transaction: gathered into the next one.
        before = transactions()
        burst = [await asyncio.to_thread(place, app) for _ in range(4)]
        await published(burst)
        assert transactions() - before == 1
        # Idle for longer than the window: the next notification goes out at once.
        await asyncio.sleep(WINDOW_S)  # the quiet period under test, not a synchronisation
        began = time.monotonic()
        lone = await asyncio.to_thread(place, app)
        await eventually(
            keys_on_topic, until=lambda keys: str(lone) in keys, interval=0.02, what="lone"
        )
        assert time.monotonic() - began < WINDOW_S / 2

    records = await read_topic(topics.physical(topics.ORDERS))
    keys = [r.key.decode() for r in records if r.key]
    for order in [first, *burst, lone]:
        assert keys.count(str(order)) == 1, f"order {order} published {keys.count(str(order))}x"
    sequences: dict[int, list[int]] = defaultdict(list)
    for r in records:
        sequences[r.partition].append(int(r.headers["ce_sequence"]))
    for partition, seen in sequences.items():
        assert seen == sorted(seen), f"partition {partition} out of order: {seen}"
