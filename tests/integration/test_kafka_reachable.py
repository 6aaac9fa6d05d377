"""The readiness check's broker probe: cheap whatever the cluster's size, and honest."""

from __future__ import annotations

import time
from typing import Any

import pytest

from fulfilment_kit.messaging import kafka
from fulfilment_kit.settings import KafkaSettings
from tests.support.processes import free_port


async def test_reachable_asks_for_no_topic_metadata_on_a_cluster_with_topics(
    isolated_topics: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = kafka.admin(KafkaSettings())
    await admin.start()
    try:
        on_cluster = await admin.list_topics()
        assert set(isolated_topics) <= set(on_cluster)
        answered: list[int] = []
        real = admin._get_cluster_metadata

        async def spied(topics: list[str] | None = None) -> Any:
            response = await real(topics=topics)
            answered.append(len(response.to_object()["topics"]))
            return response

        monkeypatch.setattr(admin, "_get_cluster_metadata", spied)
        assert await kafka.reachable(admin, timeout_s=10)
        # FastStream's ping (describe_cluster) decoded every topic of the cluster each time.
        assert answered == [0]
    finally:
        await admin.close()


async def test_reachable_is_false_within_its_timeout_when_nothing_listens() -> None:
    admin = kafka.admin(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    began = time.monotonic()
    assert not await kafka.reachable(admin, timeout_s=1.5)
    assert time.monotonic() - began < 5
