"""Integration fixtures: the real Kafka broker and PostgreSQL (started by `make test`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import security
from fulfilment_kit.messaging.admin import ensure_topics
from tests.support import kafka_security
from tests.support.stack import create_database, delete_topics, drop_database


@pytest.fixture(autouse=True)
async def isolated_topics(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """Every platform topic under a prefix of this test's own (a topic belongs to one event
    store: the relay resumes from its tail); deleted afterwards."""
    prefix = f"it-{uuid.uuid4().hex[:10]}."
    monkeypatch.setenv("FULFIL_TOPIC_PREFIX", prefix)
    names = topics.all_physical_topics()
    await ensure_topics(names)
    if kafka_security.sasl_enabled():  # SCRAM + ACL mode: each service's ACLs for this prefix
        await asyncio.to_thread(security.grant, prefix)
    yield names
    await delete_topics(names)
    if kafka_security.sasl_enabled():
        await asyncio.to_thread(security.revoke, prefix)


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test."""
    name = create_database("fulfil_test")
    yield name
    drop_database(name)
