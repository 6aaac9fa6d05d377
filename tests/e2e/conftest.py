"""The whole platform for end-to-end tests: five service processes, real Kafka and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging.admin import ensure_topics
from tests.e2e.platform import PROCESSES, Platform
from tests.support.prometheus import PrometheusServer
from tests.support.stack import delete_topics


@pytest.fixture(scope="session")
async def platform() -> AsyncIterator[Platform]:
    names = topics.all_physical_topics()
    await ensure_topics(names)
    running = Platform.create()
    try:
        await running.start()
        yield running
    finally:
        running.stop()
        running.drop_databases()
        await delete_topics(names)


@pytest.fixture(scope="session")
def prometheus(platform: Platform) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping the five services and the read models every second, rules
    loaded."""
    targets = {name: f"127.0.0.1:{platform[name].port}" for name in PROCESSES}
    server = PrometheusServer(targets, scrape_interval="1s").start()
    try:
        yield server
    finally:
        server.stop()
