"""Topic administration: create every platform topic explicitly (auto-creation is off)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Sequence

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.settings import KafkaSettings


async def ensure_topics(
    names: Sequence[str],
    settings: KafkaSettings | None = None,
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
    timeout_s: float = 60.0,
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    settings = settings or KafkaSettings()
    partitions = partitions or settings.topic_partitions
    replication_factor = replication_factor or settings.replication_factor
    admin = kafka.admin(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            # TopicAlreadyExists: created concurrently by another process.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(n, partitions, replication_factor, topic_configs=_configs(n))
                        for n in missing
                    ]
                )
        await _wait_until_listed(admin, names, deadline)
        return missing
    finally:
        await admin.close()


KEPT_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}


def _configs(name: str) -> dict[str, str]:
    """A DLQ record is never deleted unless replayed or discarded: no retention there."""
    return dict(KEPT_FOREVER) if topics.kept_forever(name) else {}


async def keep_forever(names: Sequence[str], settings: KafkaSettings | None = None) -> None:
    """Turn retention off on existing DLQ and audit topics (created before it was the rule)."""
    settings = settings or KafkaSettings()
    kept = [n for n in names if topics.kept_forever(n)]
    if not kept:
        return
    admin = kafka.admin(settings)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n, configs=KEPT_FOREVER) for n in kept]
        )
    finally:
        await admin.close()


async def _wait_until_listed(
    admin: AIOKafkaAdminClient, names: Sequence[str], deadline: float
) -> None:
    while not set(names) <= set(await admin.list_topics()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible: {sorted(set(names))}")
        await asyncio.sleep(0.2)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fulfilment_kit.messaging.admin")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ensure-topics", help="create every platform topic (and DLQ) that is missing")
    sub.add_parser("list-topics", help="print the platform's topic names")
    args = parser.parse_args(argv)
    names = topics.all_physical_topics()
    if args.command == "list-topics":
        print("\n".join(names))
        return
    created = asyncio.run(ensure_topics(names))
    asyncio.run(keep_forever(names))
    print(f"topics: {len(names)} present, {len(created)} created")


if __name__ == "__main__":
    main()
