"""What the infrastructure alone can do on this machine: raw Kafka and raw event-store writes."""

from __future__ import annotations

import asyncio
import random
import string
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from aiokafka import TopicPartition
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from fulfilment_kit.messaging import kafka
from fulfilment_kit.messaging.admin import ensure_topics
from fulfilment_kit.persistence import eventsourcing_env
from fulfilment_kit.settings import KafkaSettings, PostgresSettings, ServiceSettings

from .platform import create_database, delete_topics, drop_database


@dataclass
class KafkaCeiling:
    records: int
    value_size: int
    header_size: int
    inflight: int
    partitions: int
    produce_s: float
    consume_s: float

    @property
    def produce_per_s(self) -> float:
        return self.records / self.produce_s

    @property
    def consume_per_s(self) -> float:
        return self.records / self.consume_s

    @property
    def records_per_s(self) -> float:
        """Produce then consume: records over the two phases' summed time."""
        return self.records / (self.produce_s + self.consume_s)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "produce_per_s": self.produce_per_s,
            "consume_per_s": self.consume_per_s,
            "records_per_s": self.records_per_s,
        }


async def kafka_ceiling(
    records: int,
    value_size: int,
    headers: list[tuple[str, bytes]],
    *,
    inflight: int = 1000,
    timeout_s: float = 300,
) -> KafkaCeiling:
    """Send `records` records (platform producer settings), then read them read_committed."""
    settings = KafkaSettings()
    topic = f"bench-ceiling-{uuid.uuid4().hex[:8]}.records"
    await ensure_topics([topic], settings)
    try:
        rng = random.Random(7)
        alphabet = (string.ascii_letters + string.digits).encode()
        value = bytes(rng.choice(alphabet) for _ in range(value_size))
        keys = [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(records)]

        producer = kafka.producer(settings)
        await producer.start()
        try:
            window: deque[asyncio.Future[Any]] = deque()
            began = time.perf_counter()
            for key in keys:
                window.append(await producer.send(topic, value=value, key=key, headers=headers))
                if len(window) >= inflight:
                    await window.popleft()
            await asyncio.gather(*window)
            produce_s = time.perf_counter() - began
        finally:
            await producer.stop()

        consumer = kafka.reader(settings, max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            seen = 0
            began = time.perf_counter()
            deadline = time.monotonic() + timeout_s
            while seen < records:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"read {seen} of {records} records in {timeout_s}s")
                batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
                seen += sum(len(rs) for rs in batch.values())
            consume_s = time.perf_counter() - began
        finally:
            await consumer.stop()
    finally:
        await delete_topics([topic])
    header_size = sum(len(k) + len(v) for k, v in headers)
    return KafkaCeiling(records, value_size, header_size, inflight, len(tps), produce_s, consume_s)


class Thing(Aggregate):
    """A trivial aggregate: one small Created event each."""

    @event("Created")
    def __init__(self, n: int) -> None:
        self.n = n


class ThingStore(Application[uuid.UUID]):
    name = "BenchStore"


@dataclass
class PostgresCeiling:
    single_events: int
    single_s: float
    batch_size: int
    batched_events: int
    batched_s: float

    @property
    def single_per_s(self) -> float:
        return self.single_events / self.single_s

    @property
    def batched_per_s(self) -> float:
        return self.batched_events / self.batched_s

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "single_per_s": self.single_per_s,
            "batched_per_s": self.batched_per_s,
        }


def postgres_ceiling(single: int, batched: int, batch_size: int = 100) -> PostgresCeiling:
    """Save Things one per transaction, then `batch_size` per transaction, on a fresh database."""
    database = create_database("fulfil_bench_store")
    try:
        env = eventsourcing_env(
            "bench",
            ServiceSettings(persistence="postgres"),
            PostgresSettings(dbname=database),
        )
        app = ThingStore(env=env)
        try:
            for n in range(20):  # warm-up: connections, prepared statements
                app.save(Thing(n))
            began = time.perf_counter()
            for n in range(single):
                app.save(Thing(n))
            single_s = time.perf_counter() - began
            rounds = max(1, batched // batch_size)
            began = time.perf_counter()
            for r in range(rounds):
                app.save(*(Thing(r * batch_size + n) for n in range(batch_size)))
            batched_s = time.perf_counter() - began
        finally:
            app.close()
    finally:
        drop_database(database)
    return PostgresCeiling(single, single_s, batch_size, rounds * batch_size, batched_s)
