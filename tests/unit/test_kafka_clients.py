"""The kit's Kafka client settings: what the platform's producers and consumers agree on."""

from __future__ import annotations

import uuid

from aiokafka.partitioner import DefaultPartitioner

from fulfilment_kit.messaging import kafka
from fulfilment_kit.settings import KafkaSettings


def test_the_cached_partitioner_puts_each_key_where_the_java_client_does() -> None:
    """Consumers rely on an order's events sharing a partition, whoever produced them."""
    partitions = list(range(6))
    for _ in range(500):
        key = str(uuid.uuid4()).encode()
        expected = DefaultPartitioner()(key, partitions, partitions)
        assert kafka.keyed_partitioner(key, partitions, partitions) == expected
        assert kafka.keyed_partitioner(key, partitions, partitions) == expected  # cached
    assert kafka.keyed_partitioner(b"MUG", list(range(3)), []) == DefaultPartitioner()(
        b"MUG", list(range(3)), []
    )
    assert kafka.keyed_partitioner(None, partitions, [4]) == 4  # unkeyed: an available one


async def test_consumers_commit_nothing_by_themselves_and_read_committed_records_only() -> None:
    consumer = kafka.consumer(KafkaSettings(), "a-group")
    try:
        assert consumer._enable_auto_commit is False
        assert consumer._isolation_level == "read_committed"
        assert consumer._group_id == "a-group"
    finally:
        await consumer.stop()
