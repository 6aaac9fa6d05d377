"""The whole platform for end-to-end tests: five service processes, real Kafka and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging.admin import ensure_topics
from tests.e2e.platform import Platform
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
    """A real Prometheus scraping the platform's five services every second, rules loaded."""
    targets = {name: f"127.0.0.1:{service.port}" for name, service in platform.services.items()}
    server = PrometheusServer(targets, scrape_interval="1s").start()
    try:
        yield server
    finally:
        server.stop()
