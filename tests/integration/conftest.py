"""Integration fixtures: the real Kafka broker and PostgreSQL (started by `make test`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging.admin import ensure_topics
from tests.support.stack import create_database, delete_topics, drop_database


@pytest.fixture(autouse=True)
async def isolated_topics(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """Every platform topic under a prefix of this test's own (a topic belongs to one event
    store: the relay resumes from its tail); deleted afterwards."""
    monkeypatch.setenv("FULFIL_TOPIC_PREFIX", f"it-{uuid.uuid4().hex[:10]}.")
    names = topics.all_physical_topics()
    await ensure_topics(names)
    yield names
    await delete_topics(names)


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test."""
    name = create_database("fulfil_test")
    yield name
    drop_database(name)
